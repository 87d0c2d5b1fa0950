"""``--out DIR``: per stream, NAME.flv (every tag, in order), NAME.wav (decoded audio), NAME.json (stats).

A reconnecting publisher or a resumed link appends to the same files. NAME is
the key's name part made safe as a file name; no key or secret reaches a path.

Exactly once across a crash: after every batch the stream writes a checkpoint,
``.NAME.resume.json`` (the stream's uid, the last sequence number in the files,
the files' sizes and the stats so far), and only then acks. A new process that
gets the same stream (a resumed Open after a SIGKILL or a deploy) truncates both
files back to the checkpoint and skips what it covers, so a tag written but not
acked before the crash is neither lost nor written twice. ``NAME.json`` is written
when the stream ends and adds up every stream appended to the same files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from relay_edge import flv
from relay_edge.keys import safe_filename

from .decode import AudioFormat
from .safeio import open_nofollow, write_json_atomic
from .wav import WavWriter

log = logging.getLogger("relay_client.output")


class StreamFiles:
    """The three files of one stream. Blocking I/O: call from the decode thread."""

    def __init__(self, out_dir: str | os.PathLike[str], name: str, audio: AudioFormat) -> None:
        base = Path(out_dir) / safe_filename(name)
        # Append, never with_suffix: a safe name may hold a dot ("cam.main"), which
        # with_suffix would replace, giving two streams the same files.
        self.flv_path = base.parent / f"{base.name}.flv"
        self.wav_path = base.parent / f"{base.name}.wav"
        self.json_path = base.parent / f"{base.name}.json"
        # Hidden (safe names never start with a dot), so it can't collide with a stream's files.
        self.resume_path = base.parent / f".{base.name}.resume.json"
        self._audio = audio
        self._flv: Any = None
        self._wav: WavWriter | None = None

    def restore(self, uid: str) -> dict[str, Any] | None:
        """The checkpoint of stream ``uid`` left by an earlier process, with the files cut back to it.

        Returns None when there is none for ``uid``. Bytes written after the checkpoint
        were never acked, so the edge sends them again: cutting them keeps the files
        exactly-once.
        """
        state = self._read_json(self.resume_path)
        if state is None or state.get("uid") != uid:
            return None
        for path, size in (
            (self.flv_path, state.get("flv_bytes", 0)),
            (self.wav_path, state.get("wav_bytes", 0)),
        ):
            if path.exists() and path.stat().st_size > size:
                with open_nofollow(path, "r+b") as f:
                    f.truncate(size)
        return state

    def previous(self) -> dict[str, Any]:
        """Totals of earlier streams in these files: NAME.json, or a crashed stream's checkpoint."""
        orphan = self._read_json(self.resume_path)
        if orphan is not None:
            # A process died mid-stream and the stream never came back. Its base already
            # holds the NAME.json of the streams before it (a later end would have removed it).
            return merge_stats(orphan.get("base", {}), orphan.get("stats", {}))
        return self._read_json(self.json_path) or {}

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Record ``state`` with the files' current sizes; call after :meth:`flush`, before acking."""
        state = {
            **state,
            "flv_bytes": self.flv_path.stat().st_size if self.flv_path.exists() else 0,
            "wav_bytes": self.wav_path.stat().st_size if self.wav_path.exists() else 0,
        }
        try:
            self._write_json(self.resume_path, state)
        except OSError as exc:
            # Without it a crash could repeat a few tags in the files; the stream itself goes on.
            log.warning("%s: checkpoint not written: %s", self.resume_path, exc)

    def open_flv(self, header: bytes, init: list[bytes]) -> None:
        """Open NAME.flv for appending; a new file starts with ``header`` and ``init``.

        ``init`` is the metadata and codec configuration a resumed stream replays:
        an existing file already has them, a fresh one (new disk) needs them.
        """
        self.flv_path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.flv_path.exists() or self.flv_path.stat().st_size == 0
        self._flv = open_nofollow(self.flv_path, "ab")  # lives as long as the stream
        if fresh:
            self._flv.write(header)
            self._write(init)

    def write_tags(self, tags: list[bytes]) -> None:
        """Append encoded tags (header + body each), with their PreviousTagSize."""
        self._write(tags)

    def _write(self, tags: list[bytes]) -> None:
        parts: list[bytes] = []
        for tag in tags:
            parts.append(tag)
            parts.append(flv.previous_tag_size(tag))
        self._flv.write(b"".join(parts))

    def write_audio(self, pcm: bytes) -> None:
        if self._wav is None:
            a = self._audio
            self._wav = WavWriter(self.wav_path, a.sample_rate, a.channels, a.format, append=True)
        self._wav.write(pcm)

    def flush(self) -> None:
        if self._flv is not None:
            self._flv.flush()
        if self._wav is not None:
            self._wav.flush()

    def close(self, stats: dict[str, Any]) -> None:
        if self._flv is not None:
            self._flv.close()
            self._flv = None
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        self._write_json(self.json_path, stats)
        self.resume_path.unlink(missing_ok=True)

    @staticmethod
    def _write_json(path: Path, doc: dict[str, Any]) -> None:
        # Two streams of one name (from two edges) may write at once: unique temporaries.
        write_json_atomic(path, doc)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


# Counters that add up when several streams (or processes) append to the same files.
SUMMED = (
    "tags", "bytes", "audio_tags", "video_tags", "gaps", "gap_tags", "gap_bytes", "gap_ms",
    "audio_samples", "audio_frames", "video_frames", "decode_errors", "publisher_reconnects",
    "resumes", "streams",
)  # fmt: skip


def merge_stats(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Stats of the same files over time: counters add up, the first timestamp stays, the rest is latest."""
    merged = {**earlier, **{k: v for k, v in later.items() if v is not None}}
    for key in SUMMED:
        if key in earlier or key in later:
            merged[key] = (earlier.get(key) or 0) + (later.get(key) or 0)
    if earlier.get("first_timestamp") is not None:
        merged["first_timestamp"] = earlier["first_timestamp"]
    if earlier.get("started") is not None:
        merged["started"] = earlier["started"]
    return merged
