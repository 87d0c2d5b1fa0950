"""Test tones and the checks that tell whether one came through intact.

``relay-client test`` publishes :func:`sine_pcm` and checks what the app decoded with
:func:`dominant_frequency`, :func:`rms_dbfs` and :func:`silent_gaps`; the test suite
uses them the same way. Everything here is numpy and pure: PCM bytes in, numbers out.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["count_silent_gaps", "dominant_frequency", "rms_dbfs", "silent_gaps", "sine_pcm", "to_mono"]

# Full scale of each packed sample format, so levels read the same in every format.
_FORMATS: dict[str, tuple[type[np.generic], float]] = {
    "s16": (np.int16, 32768.0),
    "s32": (np.int32, 2147483648.0),
    "flt": (np.float32, 1.0),
    "dbl": (np.float64, 1.0),
}


def sine_pcm(freq: float, seconds: float, sample_rate: int, channels: int, amplitude: float = 0.5) -> bytes:
    """A sine of ``freq`` Hz as interleaved s16 PCM, the same signal on every channel.

    ``amplitude`` is relative to full scale (0.5 = -6 dBFS peak, leaving codecs headroom).
    """
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude}")
    n = round(seconds * sample_rate)
    wave = amplitude * 32767 * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)
    samples = np.round(wave).astype("<i2")
    return np.repeat(samples[:, None], channels, axis=1).tobytes()


def to_mono(pcm: bytes, channels: int, sample_format: str = "s16") -> np.ndarray:
    """Interleaved PCM as float64 mono in -1..1 (channels averaged)."""
    if sample_format not in _FORMATS:
        raise ValueError(f"sample format {sample_format!r} is not one of {sorted(_FORMATS)}")
    dtype, full_scale = _FORMATS[sample_format]
    samples = np.frombuffer(pcm, dtype=dtype)
    usable = len(samples) - len(samples) % channels  # ignore a torn last frame
    frames = samples[:usable].reshape(-1, channels).astype(np.float64)
    return frames.mean(axis=1) / full_scale


def dominant_frequency(pcm: bytes, sample_rate: int, channels: int, sample_format: str = "s16") -> float:
    """The frequency (Hz) of the strongest spectral peak; 0.0 for silence or no samples.

    Hann window, zero-padded FFT, then a parabola through the log magnitudes of the
    peak bin and its neighbours: a pure tone lands within a few hundredths of a bin,
    so a 1 s tone is accurate to well under 1 Hz.
    """
    mono = to_mono(pcm, channels, sample_format)
    if len(mono) < 4 or not np.any(mono):
        return 0.0
    mono = mono - mono.mean()  # DC would otherwise win against a quiet tone
    size = 1 << max(len(mono) * 4 - 1, 1).bit_length()  # >= 4x zero padding: finer bins
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono)), size))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if peak == 0 or spectrum[peak] == 0.0:
        return 0.0
    offset = 0.0
    if 0 < peak < len(spectrum) - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-300)
        denominator = left - 2 * centre + right
        if denominator < 0:
            offset = 0.5 * (left - right) / denominator
    return float((peak + offset) * sample_rate / size)


def rms_dbfs(pcm: bytes, channels: int, sample_format: str = "s16") -> float:
    """RMS level in dBFS (a full-scale sine reads -3 dB); ``-inf`` for silence."""
    mono = to_mono(pcm, channels, sample_format)
    if not len(mono):
        return -math.inf
    rms = float(np.sqrt(np.mean(mono * mono)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def silent_gaps(
    pcm: bytes,
    sample_rate: int,
    channels: int,
    sample_format: str = "s16",
    window_ms: float = 10.0,
    drop_db: float = 20.0,
) -> list[tuple[float, float]]:
    """Dropouts in a steady tone, as ``(start_s, duration_s)``.

    The signal is cut into ``window_ms`` windows; a window is silent when its RMS lies
    more than ``drop_db`` below the median window's. A gap is a run of silent windows
    with sound on both sides: silence before the tone starts (e.g. encoder priming) or
    after it ends is not a dropout.
    """
    mono = to_mono(pcm, channels, sample_format)
    window = max(1, round(sample_rate * window_ms / 1000))
    count = len(mono) // window
    if count < 3:
        return []
    windows = mono[: count * window].reshape(count, window)
    rms = np.sqrt(np.mean(windows * windows, axis=1))
    reference = float(np.median(rms))
    if reference == 0.0:
        return []
    silent = rms < reference * 10 ** (-drop_db / 20)
    gaps: list[tuple[float, float]] = []
    start: int | None = None
    seen_sound = False
    for index, quiet in enumerate(silent):
        if quiet and seen_sound and start is None:
            start = index
        elif not quiet:
            if start is not None:
                gaps.append((start * window / sample_rate, (index - start) * window / sample_rate))
                start = None
            seen_sound = True
    return gaps


def count_silent_gaps(
    pcm: bytes,
    sample_rate: int,
    channels: int,
    sample_format: str = "s16",
    window_ms: float = 10.0,
    drop_db: float = 20.0,
) -> int:
    """How many dropouts :func:`silent_gaps` finds."""
    return len(silent_gaps(pcm, sample_rate, channels, sample_format, window_ms, drop_db))
