"""A streaming WAV writer that survives crashes and appends across reconnects.

``--out DIR`` keeps one ``NAME.wav`` per stream: a reconnecting publisher or a resumed
link continues the same file. The RIFF and data sizes in the header are patched every
``patch_seconds`` of audio (and on :meth:`WavWriter.flush` / :meth:`WavWriter.close`),
after the audio itself reached the OS, so a killed process leaves a file any reader
opens, holding everything up to the last patch. Reopening such a file to append also
recovers the audio written after that patch.

Layout, always with the data chunk last (which is what makes appending possible)::

    RIFF <size> WAVE | fmt  <16|18> ... | [fact <4> <frames>] | data <size> <PCM...>

s16 and s32 are WAVE_FORMAT_PCM (readable by Python's ``wave``); flt and dbl are
WAVE_FORMAT_IEEE_FLOAT with the ``fact`` chunk the spec asks for.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple

from .safeio import open_nofollow

__all__ = ["WavFormatMismatch", "WavWriter"]

log = logging.getLogger("relay_client.wav")

_PCM, _IEEE_FLOAT = 1, 3
# sample format -> (WAVE format tag, bits per sample)
_FORMATS = {"s16": (_PCM, 16), "s32": (_PCM, 32), "flt": (_IEEE_FLOAT, 32), "dbl": (_IEEE_FLOAT, 64)}
# RIFF sizes are 32-bit: no WAV file can hold more than this after the "RIFF" + size words.
_RIFF_MAX = 0xFFFFFFFF


class WavFormatMismatch(ValueError):
    """An existing file to append to holds audio in another format, or isn't ours to extend."""


class _Layout(NamedTuple):
    """Where the header fields to patch live, and where the audio starts."""

    data_start: int
    data_size_at: int
    fact_at: int | None  # offset of the fact chunk's frame count, if there is one


class WavWriter:
    """Writes interleaved PCM to ``path``, appending to a matching existing file by default.

    ``write()`` takes whole frames of ``sample_format`` samples (native little-endian,
    as PyAV gives them). ``frames_written`` counts this writer's frames; ``total_frames``
    counts the file's, earlier sessions included. Not thread-safe: one writer per file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        channels: int,
        sample_format: str = "s16",
        append: bool = True,
        *,
        patch_seconds: float = 1.0,
    ) -> None:
        if sample_format not in _FORMATS:
            raise ValueError(f"sample format {sample_format!r} is not one of {sorted(_FORMATS)}")
        if not 1 <= channels <= 0xFFFF or not 1 <= sample_rate <= 0xFFFFFFFF:
            raise ValueError(f"unsupported WAV shape: {sample_rate} Hz, {channels} channels")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.sample_format = sample_format
        self.frames_written = 0
        self.total_frames = 0
        self.frames_dropped = 0  # beyond the 4 GiB RIFF limit
        self._tag, bits = _FORMATS[sample_format]
        self._block_align = channels * bits // 8
        self._patch_every = max(1, round(patch_seconds * sample_rate))
        self._unpatched = 0
        self._file: BinaryIO | None = None
        self._file, self._layout = self._open(append)

    # -- public API -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, pcm: bytes | bytearray | memoryview) -> None:
        """Append whole frames of PCM; patches the header once ``patch_seconds`` have gathered."""
        if self._file is None:
            raise ValueError(f"write to closed WavWriter for {self.path}")
        size = memoryview(pcm).nbytes
        if size % self._block_align:
            raise ValueError(f"{size} bytes is not a whole number of {self._block_align}-byte frames")
        frames = size // self._block_align
        room = (self._max_data_bytes() - self.total_frames * self._block_align) // self._block_align
        if frames > room:
            self._drop(frames - room)
            pcm, frames = memoryview(pcm)[: room * self._block_align], room
        if not frames:
            return
        self._file.write(pcm)
        self.frames_written += frames
        self.total_frames += frames
        self._unpatched += frames
        if self._unpatched >= self._patch_every:
            self._patch()

    def flush(self) -> None:
        """Patch the header and hand everything to the OS."""
        if self._file is not None:
            self._patch()

    def close(self) -> None:
        """Patch the header and close the file. Idempotent."""
        if self._file is None:
            return
        try:
            self._patch()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"WavWriter({str(self.path)!r}, {self.sample_rate} Hz, {self.channels} ch, "
            f"{self.sample_format}, total_frames={self.total_frames})"
        )

    # -- internals --------------------------------------------------------------------

    def _open(self, append: bool) -> tuple[BinaryIO, _Layout]:
        # Files shorter than a header hold no audio (a crash while creating one).
        if append and self.path.exists() and self.path.stat().st_size >= 44:
            file = open_nofollow(self.path, "r+b")  # owned by the writer until close()
            try:
                return file, self._resume(file)
            except BaseException:
                file.close()
                raise
        file = open_nofollow(self.path, "w+b")  # owned by the writer until close()
        header, layout = self._header()
        file.write(header)
        file.flush()
        return file, layout

    def _header(self) -> tuple[bytes, _Layout]:
        rate, channels, align = self.sample_rate, self.channels, self._block_align
        bits = align * 8 // channels
        fmt = struct.pack("<HHIIHH", self._tag, channels, rate, rate * align, align, bits)
        if self._tag == _PCM:
            head = b"fmt " + struct.pack("<I", 16) + fmt
            fact = b""
        else:  # non-PCM: cbSize, and a fact chunk with the frame count
            head = b"fmt " + struct.pack("<I", 18) + fmt + struct.pack("<H", 0)
            fact = b"fact" + struct.pack("<II", 4, 0)
        body = b"WAVE" + head + fact + b"data" + struct.pack("<I", 0)
        header = b"RIFF" + struct.pack("<I", len(body)) + body
        fact_at = 12 + len(head) + 8 if fact else None
        return header, _Layout(len(header), len(header) - 4, fact_at)

    def _resume(self, file: BinaryIO) -> _Layout:
        """Check an existing file matches, recover unpatched audio, and position at its end."""
        layout, fmt = _read_layout(file, self.path)
        expected = (self._tag, self.channels, self.sample_rate, self._block_align * 8 // self.channels)
        if fmt != expected:
            raise WavFormatMismatch(
                f"{self.path} holds {_describe(fmt)}; refusing to append {_describe(expected)} "
                f"(move the file away or pass append=False)"
            )
        file_size = file.seek(0, os.SEEK_END)
        audio = file_size - layout.data_start
        audio -= audio % self._block_align  # a crash may have torn the last frame
        file.truncate(layout.data_start + audio)
        file.seek(0, os.SEEK_END)
        self.total_frames = audio // self._block_align
        self._layout = layout
        self._patch_to(file, layout)
        return layout

    def _max_data_bytes(self) -> int:
        limit = _RIFF_MAX - (self._layout.data_start - 8)
        return limit - limit % self._block_align

    def _drop(self, frames: int) -> None:
        if not self.frames_dropped:
            log.warning("%s reached the 4 GiB WAV size limit; dropping further audio", self.path)
        self.frames_dropped += frames

    def _patch(self) -> None:
        assert self._file is not None
        self._patch_to(self._file, self._layout)

    def _patch_to(self, file: BinaryIO, layout: _Layout) -> None:
        # Seeking flushes the buffered audio first, so the new sizes never claim bytes
        # the OS hasn't got.
        data_bytes = self.total_frames * self._block_align
        file.seek(4)
        file.write(struct.pack("<I", layout.data_start - 8 + data_bytes))
        if layout.fact_at is not None:
            file.seek(layout.fact_at)
            file.write(struct.pack("<I", self.total_frames))
        file.seek(layout.data_size_at)
        file.write(struct.pack("<I", data_bytes))
        file.seek(0, os.SEEK_END)
        file.flush()
        self._unpatched = 0


def _describe(fmt: tuple[int, int, int, int]) -> str:
    tag, channels, rate, bits = fmt
    kind = {_PCM: "PCM", _IEEE_FLOAT: "float"}.get(tag, f"format {tag:#x}")
    return f"{rate} Hz {channels} ch {bits}-bit {kind}"


def _read_layout(file: BinaryIO, path: Path) -> tuple[_Layout, tuple[int, int, int, int]]:
    """Walk the chunks of an existing WAV up to ``data``; returns the layout and its format."""
    file.seek(0)
    riff = file.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
        raise WavFormatMismatch(f"{path} is not a RIFF/WAVE file; refusing to append to it")
    fmt: tuple[int, int, int, int] | None = None
    fact_at = None
    offset = 12
    while True:
        head = file.read(8)
        if len(head) < 8:
            raise WavFormatMismatch(f"{path} has no data chunk; refusing to append to it")
        chunk_id, size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk_id == b"data":
            if fmt is None:
                raise WavFormatMismatch(f"{path} has data before its fmt chunk")
            layout = _Layout(offset + 8, offset + 4, fact_at)
            _check_data_is_last(file, path, layout.data_start, size)
            return layout, fmt
        body = file.read(size + (size & 1))  # chunks are padded to even sizes
        if chunk_id == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"fact" and size >= 4:
            fact_at = offset + 8
        offset += 8 + size + (size & 1)


def _check_data_is_last(file: BinaryIO, path: Path, data_start: int, declared: int) -> None:
    """Refuse files with chunks after the audio (a LIST from another tool, say).

    Bytes past the declared data size are normally audio written after the last header
    patch; they count as a chunk only if they look like one: a printable four-letter id
    and a size that fits the file.
    """
    end = data_start + declared
    file_size = file.seek(0, os.SEEK_END)
    if end + 8 <= file_size:
        file.seek(end)
        head = file.read(8)
        size = struct.unpack("<I", head[4:])[0]
        if all(0x20 <= byte < 0x7F for byte in head[:4]) and end + 8 + size <= file_size:
            raise WavFormatMismatch(f"{path} has a {head[:4]!r} chunk after its audio; refusing to append")
