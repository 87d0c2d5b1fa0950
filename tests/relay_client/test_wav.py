"""relay_client.wav: files that stdlib ``wave`` reads, append across sessions, and survive a crash."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from relay_client import wav as wav_module
from relay_client.tone import dominant_frequency, sine_pcm
from relay_client.wav import WavFormatMismatch, WavWriter


def read_wav(path: Path) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(str(path)) as reader:
        params = (reader.getframerate(), reader.getnchannels(), reader.getsampwidth())
        return params, reader.readframes(reader.getnframes())


def test_write_and_read_back(tmp_path):
    path = tmp_path / "a.wav"
    tone = sine_pcm(440, 1.5, 16000, 1)
    with WavWriter(path, 16000, 1) as writer:
        writer.write(tone[:10000])
        writer.write(memoryview(tone)[10000:])
    assert writer.closed and writer.frames_written == writer.total_frames == 24000
    params, data = read_wav(path)
    assert params == (16000, 1, 2) and data == tone
    assert path.stat().st_size == 44 + len(tone)


def test_reopen_appends(tmp_path):
    path = tmp_path / "a.wav"
    first, second = sine_pcm(440, 1.0, 16000, 1), sine_pcm(880, 0.5, 16000, 1)
    with WavWriter(path, 16000, 1) as writer:
        writer.write(first)
    with WavWriter(path, 16000, 1) as writer:
        assert writer.total_frames == 16000
        writer.write(second)
        assert (writer.frames_written, writer.total_frames) == (8000, 24000)
    _, data = read_wav(path)
    assert data == first + second
    assert dominant_frequency(data[len(first) :], 16000, 1) == pytest.approx(880, abs=1)


def test_append_false_starts_over(tmp_path):
    path = tmp_path / "a.wav"
    with WavWriter(path, 16000, 1) as writer:
        writer.write(sine_pcm(440, 1.0, 16000, 1))
    with WavWriter(path, 16000, 1, append=False) as writer:
        writer.write(bytes(200))
    assert read_wav(path)[1] == bytes(200)


def test_append_to_another_format_is_refused_and_leaves_the_file(tmp_path):
    path = tmp_path / "a.wav"
    with WavWriter(path, 16000, 1) as writer:
        writer.write(sine_pcm(440, 0.1, 16000, 1))
    before = path.read_bytes()
    with pytest.raises(WavFormatMismatch, match=r"16000 Hz 1 ch 16-bit PCM.*48000 Hz 2 ch 16-bit PCM"):
        WavWriter(path, 48000, 2)
    with pytest.raises(WavFormatMismatch):
        WavWriter(path, 16000, 1, "flt")
    assert path.read_bytes() == before


def test_refuses_non_wav_and_files_with_chunks_after_the_audio(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all, but long enough to look like one....")
    with pytest.raises(WavFormatMismatch, match="not a RIFF/WAVE"):
        WavWriter(junk, 16000, 1)

    listed = tmp_path / "listed.wav"
    with WavWriter(listed, 16000, 1) as writer:
        writer.write(bytes(320))
    info = b"INFOISFT" + struct.pack("<I", 6) + b"tool\x00\x00"
    listed.write_bytes(listed.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info)
    with pytest.raises(WavFormatMismatch, match="LIST"):
        WavWriter(listed, 16000, 1)


def test_a_truncated_header_is_replaced(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF\x00\x00")  # a crash while creating the file
    with WavWriter(path, 16000, 1) as writer:
        writer.write(bytes(64))
    assert read_wav(path)[1] == bytes(64)


CRASHER = textwrap.dedent(
    """
    import os, sys
    from relay_client.tone import sine_pcm
    from relay_client.wav import WavWriter
    writer = WavWriter(sys.argv[1], 16000, 1, patch_seconds=1.0)
    tone = sine_pcm(440, 2.5, 16000, 1)
    for start in range(0, len(tone), 640):  # 20 ms chunks, as the decoder hands them out
        writer.write(tone[start : start + 640])
    os._exit(1)  # no close, no flush: what a SIGKILL or an OOM kill leaves
    """
)


def test_a_crash_leaves_a_readable_file_that_append_recovers(tmp_path):
    path = tmp_path / "crash.wav"
    subprocess.run([sys.executable, "-c", CRASHER, str(path)], check=False, timeout=30)
    tone = sine_pcm(440, 2.5, 16000, 1)

    params, data = read_wav(path)
    assert params == (16000, 1, 2)
    assert len(data) == 2 * 16000 * 2  # the header was last patched at 2 s
    assert data == tone[: len(data)]

    on_disk = path.stat().st_size - 44
    with WavWriter(path, 16000, 1) as writer:
        # Audio that reached the disk after the last patch is recovered, not lost.
        assert writer.total_frames == on_disk // 2 >= 32000
    _, data = read_wav(path)
    assert data == tone[: len(data)]


def test_a_torn_last_frame_is_dropped_on_append(tmp_path):
    path = tmp_path / "a.wav"
    with WavWriter(path, 16000, 2) as writer:
        writer.write(bytes(400))
    path.write_bytes(path.read_bytes() + b"\x01\x02\x03")  # 3 of a frame's 4 bytes
    with WavWriter(path, 16000, 2) as writer:
        assert writer.total_frames == 100
        writer.write(b"\x05" * 4)
    _, data = read_wav(path)
    assert data == bytes(400) + b"\x05" * 4


def test_header_is_patched_every_patch_seconds(tmp_path):
    path = tmp_path / "a.wav"
    writer = WavWriter(path, 16000, 1, patch_seconds=0.5)

    def data_size() -> int:
        return struct.unpack("<I", path.read_bytes()[40:44])[0]

    writer.write(bytes(2 * 4000))  # 0.25 s: not yet
    assert data_size() == 0
    writer.write(bytes(2 * 4000))  # 0.5 s: patched
    assert data_size() == 16000
    writer.write(bytes(2 * 100))
    writer.flush()
    assert data_size() == 16200
    writer.close()
    writer.close()  # idempotent


def test_s32_stereo_reads_with_stdlib_wave(tmp_path):
    path = tmp_path / "a.wav"
    samples = (np.arange(2000, dtype=np.int32) * 1000003).reshape(-1, 2)
    with WavWriter(path, 48000, 2, "s32") as writer:
        writer.write(samples.tobytes())
    params, data = read_wav(path)
    assert params == (48000, 2, 4) and data == samples.tobytes()


@pytest.mark.parametrize(("fmt", "dtype"), [("flt", np.float32), ("dbl", np.float64)])
def test_float_files_have_fact_chunks_and_append(tmp_path, fmt, dtype):
    path = tmp_path / "a.wav"
    first = np.linspace(-1, 1, 960, dtype=dtype)
    with WavWriter(path, 48000, 2, fmt) as writer:
        writer.write(first.tobytes())
    with WavWriter(path, 48000, 2, fmt) as writer:
        writer.write(first[::-1].tobytes())
    raw = path.read_bytes()
    bits = 8 * np.dtype(dtype).itemsize
    assert raw[:4] == b"RIFF" and struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    assert raw[12:16] == b"fmt " and struct.unpack("<I", raw[16:20])[0] == 18
    tag, channels, rate, byte_rate, align, bits_read, extra = struct.unpack("<HHIIHHH", raw[20:38])
    assert (tag, channels, rate, align, bits_read, extra) == (3, 2, 48000, 2 * bits // 8, bits, 0)
    assert byte_rate == rate * align
    assert raw[38:42] == b"fact" and struct.unpack("<II", raw[42:50]) == (4, 960)  # frames = 1920 / 2 ch
    assert raw[50:54] == b"data" and struct.unpack("<I", raw[54:58])[0] == len(raw) - 58
    assert np.array_equal(np.frombuffer(raw[58:], dtype), np.concatenate([first, first[::-1]]))


def test_misuse(tmp_path):
    with pytest.raises(ValueError, match="sample format"):
        WavWriter(tmp_path / "a.wav", 16000, 1, "u8")
    writer = WavWriter(tmp_path / "b.wav", 16000, 2)
    with pytest.raises(ValueError, match="whole number of 4-byte frames"):
        writer.write(b"\x00" * 6)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"\x00" * 4)
    assert "total_frames=0" in repr(writer)


def test_size_limit_drops_instead_of_corrupting(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(wav_module, "_RIFF_MAX", 36 + 1000)  # room for 500 mono s16 frames
    path = tmp_path / "a.wav"
    with WavWriter(path, 16000, 1) as writer:
        writer.write(bytes(800))
        writer.write(bytes(800))
        writer.write(bytes(800))
    assert (writer.total_frames, writer.frames_dropped) == (500, 700)
    assert "4 GiB" in caplog.text
    assert len(read_wav(path)[1]) == 1000
