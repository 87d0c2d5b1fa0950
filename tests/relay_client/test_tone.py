"""relay_client.tone: the yardsticks the other tests and `relay-client test` measure with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_client.tone import count_silent_gaps, dominant_frequency, rms_dbfs, silent_gaps, sine_pcm, to_mono


def with_hole(pcm: bytes, sample_rate: int, start_s: float, length_s: float, channels: int = 1) -> bytes:
    """``pcm`` with ``length_s`` of digital silence from ``start_s``."""
    frame = 2 * channels
    start = round(start_s * sample_rate) * frame
    end = start + round(length_s * sample_rate) * frame
    return pcm[:start] + bytes(end - start) + pcm[end:]


def test_sine_pcm_shape_and_level():
    stereo = sine_pcm(440, 0.25, 16000, 2)
    assert len(stereo) == 4000 * 2 * 2
    samples = np.frombuffer(stereo, "<i2").reshape(-1, 2)
    assert np.array_equal(samples[:, 0], samples[:, 1])
    assert samples[0, 0] == 0
    assert abs(int(samples.max()) - 16384) <= 1
    with pytest.raises(ValueError):
        sine_pcm(440, 1, 16000, 1, amplitude=1.5)


def test_440_hz_at_16k_is_within_a_tenth_of_a_hertz():
    assert dominant_frequency(sine_pcm(440, 1.0, 16000, 1), 16000, 1) == pytest.approx(440, abs=0.1)


@pytest.mark.parametrize(
    ("freq", "rate", "channels", "seconds"),
    [(1000, 8000, 1, 0.5), (97.3, 44100, 2, 1.0), (3150.7, 48000, 2, 0.3), (7900, 16000, 1, 1.0)],
)
def test_frequency_accuracy(freq, rate, channels, seconds):
    assert dominant_frequency(sine_pcm(freq, seconds, rate, channels), rate, channels) == pytest.approx(
        freq, abs=1
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(freq=st.floats(50, 7500), amplitude=st.floats(0.01, 1.0))
def test_frequency_accuracy_property(freq, amplitude):
    pcm = sine_pcm(freq, 1.0, 16000, 1, amplitude)
    assert dominant_frequency(pcm, 16000, 1) == pytest.approx(freq, abs=1)


def test_other_sample_formats_read_the_same():
    tone = np.sin(2 * np.pi * 523.25 * np.arange(16000) / 16000) * 0.5
    for fmt, data in [
        ("flt", tone.astype(np.float32).tobytes()),
        ("dbl", tone.tobytes()),
        ("s32", (tone * 2**31).astype(np.int32).tobytes()),
    ]:
        assert dominant_frequency(data, 16000, 1, fmt) == pytest.approx(523.25, abs=0.2)
        assert rms_dbfs(data, 1, fmt) == pytest.approx(-9.03, abs=0.05)
    with pytest.raises(ValueError):
        to_mono(b"", 1, "u8")


def test_silence_and_empty_input():
    assert dominant_frequency(bytes(3200), 16000, 1) == 0.0
    assert dominant_frequency(b"", 16000, 1) == 0.0
    assert rms_dbfs(bytes(3200), 1) == -math.inf
    assert rms_dbfs(b"", 2) == -math.inf
    assert silent_gaps(bytes(32000), 16000, 1) == []


def test_rms_of_a_half_scale_sine():
    # 0.5 peak: 0.5 / sqrt(2) RMS = -9.03 dBFS
    assert rms_dbfs(sine_pcm(440, 1.0, 16000, 2), 2) == pytest.approx(-9.03, abs=0.02)


def test_a_50_ms_hole_is_one_gap():
    pcm = with_hole(sine_pcm(440, 1.0, 16000, 1), 16000, 0.5, 0.05)
    gaps = silent_gaps(pcm, 16000, 1)
    assert len(gaps) == 1
    start, length = gaps[0]
    assert start == pytest.approx(0.5, abs=0.011)
    assert 0.04 <= length <= 0.05
    assert count_silent_gaps(pcm, 16000, 1) == 1


def test_gaps_in_stereo_and_several_holes():
    pcm = sine_pcm(440, 2.0, 48000, 2)
    pcm = with_hole(pcm, 48000, 0.3, 0.03, channels=2)
    pcm = with_hole(pcm, 48000, 1.2, 0.2, channels=2)
    assert [round(start, 2) for start, _ in silent_gaps(pcm, 48000, 2)] == [0.3, 1.2]


def test_clean_tone_and_silence_at_the_ends_are_not_gaps():
    tone = sine_pcm(440, 1.0, 16000, 1)
    assert count_silent_gaps(tone, 16000, 1) == 0
    padded = bytes(3200) + tone + bytes(3200)  # e.g. encoder priming and the stream's end
    assert count_silent_gaps(padded, 16000, 1) == 0


def test_a_quieter_stretch_is_not_a_gap():
    loud = sine_pcm(440, 0.5, 16000, 1, 0.5)
    softer = sine_pcm(440, 0.2, 16000, 1, 0.1)  # -14 dB, above the -20 dB threshold
    assert count_silent_gaps(loud + softer + loud, 16000, 1) == 0
