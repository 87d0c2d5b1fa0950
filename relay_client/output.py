"""``--out DIR``: per stream, NAME.flv (every tag, in order), NAME.wav (decoded audio), NAME.json (stats).

A reconnecting publisher or a resumed link appends to the same files. NAME is
the key's name part made safe as a file name; no key or secret reaches a path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from relay_edge import flv
from relay_edge.keys import safe_filename

from .decode import AudioFormat
from .wav import WavWriter


class StreamFiles:
    """The three files of one stream. Blocking I/O: call from the decode thread."""

    def __init__(self, out_dir: str | os.PathLike[str], name: str, audio: AudioFormat) -> None:
        base = Path(out_dir) / safe_filename(name)
        self.flv_path = base.with_suffix(".flv")
        self.wav_path = base.with_suffix(".wav")
        self.json_path = base.with_suffix(".json")
        self._audio = audio
        self._flv: Any = None
        self._wav: WavWriter | None = None

    def open_flv(self, header: bytes, init: list[bytes]) -> None:
        """Open NAME.flv for appending; a new file starts with ``header`` and ``init``.

        ``init`` is the metadata and codec configuration a resumed stream replays:
        an existing file already has them, a fresh one (new disk) needs them.
        """
        self.flv_path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.flv_path.exists() or self.flv_path.stat().st_size == 0
        self._flv = open(self.flv_path, "ab")  # noqa: SIM115 - lives as long as the stream
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
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.json_path)
