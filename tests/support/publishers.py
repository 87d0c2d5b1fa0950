"""Real RTMP publishers for end-to-end tests: the ffmpeg CLI, a LiveKit-shaped GStreamer chain, and PyAV.

Each factory is awaited inside a running loop and returns a handle with one interface
(:class:`Publisher` for ffmpeg/gst-launch, :class:`PyAvPublisher` for :func:`publish_tone`, itself a
child process): ``wait(timeout)`` returns the exit code, ``wait_ok(timeout)`` asserts it is 0 and shows
the output if not, ``stop()`` ends it early, ``output`` holds what it printed, ``started`` is the
monotonic time of the spawn. Use them as ``async with`` blocks so a failing test never leaves a
publisher running.

Measured on this machine against nginx-rtmp (Debian ffmpeg 5.1, GStreamer 1.22, PyAV 18.1; medians of 3):

- Spawn to TCP connect: gst-launch 43 ms, ffmpeg 67 ms (72 ms with x264), PyAV 167 ms (a Python child
  importing av). Then ~175 ms more to ``publish`` accepted (nginx's delayed-ACK stalls). A 2 s stream
  ends 2.00 s after spawn for gst-launch (live source, connects on the first buffer), 2.26 s for
  ffmpeg, 2.40 s for PyAV.
- A complete stream exits 0 for all three. ffmpeg warns "Failed to update header with correct
  duration/filesize": an RTMP output can't seek back. That is normal.
- Connection refused: exit 1 after 63 ms (ffmpeg), 42 ms (gst: "Could not connect to 127.0.0.1"),
  181 ms (PyAV: PublishError "[Errno 111] Connection refused").
- Publish refused by the server (NetStream.Publish.BadName): exit 1; ffmpeg prints "Server error:
  <description>", rtmp2sink "Failed to connect: publish denied; stream already exists: {<the whole
  onStatus info object>}", PyAV "[Errno 1] Operation not permitted" (the description is lost). An unknown app
  (connection closed at ``connect``): ffmpeg "Input/output error", rtmp2sink "'connect' cmd failed".
- Link reset mid-stream: each notices within ~5-10 ms and exits 1 (ffmpeg "Connection reset by peer",
  rtmp2sink "Connection reset by peer", or "connection closed remotely" when a write took the reset
  first, both GIO code 44; PyAV "lost after N packets"). A clean server close (FIN) gives "Broken
  pipe" / "connection closed remotely", also exit 1. None of them reconnects.
- ``stop()``: ffmpeg gets SIGINT, finishes the stream cleanly (FCUnpublish, deleteStream) and still
  exits 255; ``gst-launch-1.0 -e`` turns SIGINT into EOS, flushes flvmux and exits 0; PyAV finishes
  the current packet, unpublishes and reports ``stopped=True`` (exit code 0).
- rtmp2sink's ``async-connect=false`` means "connect on the first buffer, not on READY";
  ``chunk-size`` defaults to 128, set explicitly so the chunking we test against is pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from relay_client.publish import PublishError, PublishResult, publish_tone

FFMPEG = "ffmpeg"
GST_LAUNCH = "gst-launch-1.0"
GST_INSPECT = "gst-inspect-1.0"
# -nostdin: never read the terminal ('q' quits ffmpeg); warnings only, no progress lines.
FFMPEG_BASE = (FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning")

# GStreamer's LiveKit-like chain ends 20 ms buffers: 882 samples at 44.1 kHz.
GST_SAMPLES_PER_BUFFER = 882
GST_BUFFERS_PER_SECOND = 50


def require(tool: str) -> str:
    """Path of ``tool``; skip the test (with the install hint) if it is not installed."""
    path = shutil.which(tool)
    if path is None:
        hint = {FFMPEG: "apt-get install ffmpeg", GST_LAUNCH: "apt-get install gstreamer1.0-tools"}
        pytest.skip(f"{tool} is not installed ({hint.get(tool, 'see scripts/setup --test')})")
    return path


@functools.cache
def _gst_has(element: str) -> bool:
    return subprocess.run([GST_INSPECT, "--exists", element], capture_output=True).returncode == 0


def require_gst_elements(*elements: str) -> None:
    """Skip the test if gst-launch-1.0 or any of the GStreamer ``elements`` is missing."""
    require(GST_LAUNCH)
    require(GST_INSPECT)
    missing = [e for e in elements if not _gst_has(e)]
    if missing:
        pytest.skip(f"GStreamer elements missing: {', '.join(missing)} (scripts/setup --test installs them)")


class _Waitable:
    """What every publisher handle offers on top of ``wait``."""

    name: str
    output: str

    async def wait(self, timeout: float) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    async def wait_ok(self, timeout: float) -> None:
        """Wait for the publisher to end and assert it exited 0, showing its output if not."""
        code = await self.wait(timeout)
        assert code == 0, f"{self.name} exited with {code}:\n{self.output[-3000:]}"


class Publisher(_Waitable):
    """A publisher subprocess. stdout and stderr are merged and drained into :attr:`output`."""

    def __init__(
        self, name: str, argv: Sequence[str], proc: asyncio.subprocess.Process, started: float
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.proc = proc
        self.started = started  # time.monotonic() just before spawning
        self._out = bytearray()
        self._drain = asyncio.ensure_future(self._read_output())

    @classmethod
    async def spawn(cls, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Publisher:
        """Start ``argv``; stdin is /dev/null so nothing waits on a terminal. ``env`` adds variables."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env} if env else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(name, argv, proc, started)

    @property
    def output(self) -> str:
        return self._out.decode(errors="replace")

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self, timeout: float) -> int:
        """The exit code. After ``timeout`` seconds the process is killed and TimeoutError raised."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise TimeoutError(
                f"{self.name} still running after {timeout} s:\n{self.output[-3000:]}"
            ) from None
        await self._drain  # pipe closes when the process exits
        return code

    async def stop(self, timeout: float = 5.0) -> int:
        """End it early with SIGINT (a clean unpublish; see the module notes for exit codes)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
        return await self.wait(timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await self._drain

    async def _read_output(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self._out += chunk

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):  # wait() has killed it then
                await self.stop(timeout=3.0)


class PyAvPublisher(_Waitable):
    """:func:`relay_client.publish.publish_tone` running as a task, with the subprocess interface.

    Exit codes: 0 when it published everything (or was stopped), 1 when it raised
    :class:`PublishError` (then :attr:`output` holds the message). :attr:`result` has the
    :class:`PublishResult`, including the per-packet write times.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.name = "pyav"
        self.started = time.monotonic()
        self.stop_event = asyncio.Event()
        self.result: PublishResult | None = None
        self.error: PublishError | None = None
        self.output = ""
        self.task = asyncio.ensure_future(publish_tone(url, stop=self.stop_event, **kwargs))

    @property
    def returncode(self) -> int | None:
        if not self.task.done():
            return None
        return 1 if self.task.cancelled() or self.task.exception() else 0

    async def wait(self, timeout: float) -> int:
        """0 on success, 1 on :class:`PublishError`; TimeoutError (after cancelling it) past ``timeout``."""
        done, _ = await asyncio.wait({self.task}, timeout=timeout)
        if not done:
            self.task.cancel()  # terminates the child, killing it if it is stuck in a connect
            await asyncio.wait({self.task})
            raise TimeoutError(f"pyav publisher still running after {timeout} s")
        try:
            self.result = self.task.result()
        except PublishError as exc:
            self.error, self.output = exc, str(exc)
            return 1
        return 0

    async def stop(self, timeout: float = 5.0) -> int:
        """End the stream cleanly after the current packet; return :meth:`wait`'s code."""
        self.stop_event.set()
        return await self.wait(timeout)

    async def __aenter__(self) -> PyAvPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done():
            await self.stop()


# --- factories -----------------------------------------------------------------------------------


async def ffmpeg_copy(
    url: str, flv_path: Path, realtime: bool = True, extra: Sequence[str] = ()
) -> Publisher:
    """``ffmpeg -re -i FILE -c copy -f flv URL``: the file's audio/video payloads, byte for byte."""
    require(FFMPEG)
    pace = ["-re"] if realtime else []
    argv = [*FFMPEG_BASE, *pace, "-i", str(flv_path), "-c", "copy", *extra, "-f", "flv", url]
    return await Publisher.spawn("ffmpeg_copy", argv)


async def ffmpeg_tone(
    url: str,
    seconds: float,
    frequency: float = 440,
    ts_offset_s: float | None = None,
    sample_rate: int = 44100,
    bitrate: int = 128000,
) -> Publisher:
    """A lavfi sine encoded to AAC-LC stereo, paced in real time.

    ``ts_offset_s`` (``-output_ts_offset``) shifts the media timestamps: 16777 s puts them past the 24-bit
    0xFFFFFF ms boundary, into RTMP's extended timestamps. Quirk: ffmpeg still sends the AAC sequence
    header at timestamp 0, then jumps to the offset (minus the 23 ms encoder priming).
    """
    require(FFMPEG)
    source = f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={seconds}"
    offset = ["-output_ts_offset", str(ts_offset_s)] if ts_offset_s is not None else []
    argv = [*FFMPEG_BASE, "-re", "-f", "lavfi", "-i", source, "-ac", "2", "-c:a", "aac", "-b:a", str(bitrate),
            *offset, "-f", "flv", url]  # fmt: skip
    return await Publisher.spawn("ffmpeg_tone", argv)


async def ffmpeg_av(
    url: str, seconds: float, size: tuple[int, int] = (320, 240), fps: int = 25, frequency: float = 440
) -> Publisher:
    """testsrc + sine -> libx264 (keyframe every second, no B-frames) + AAC, paced in real time."""
    require(FFMPEG)
    video = f"testsrc=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}"
    audio = f"sine=frequency={frequency}:sample_rate=44100:duration={seconds}"
    argv = [*FFMPEG_BASE, "-re", "-f", "lavfi", "-i", video, "-re", "-f", "lavfi", "-i", audio,
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps),
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv", url]  # fmt: skip
    return await Publisher.spawn("ffmpeg_av", argv)


async def gst_livekit(
    url: str,
    seconds: float,
    frequency: float = 440,
    encoder: str = "voaacenc",
    env: dict[str, str] | None = None,
    video_kbit: int = 0,
) -> Publisher:
    """A GStreamer chain shaped like LiveKit egress's RTMP output (audio only, or with video).

    LiveKit's own AAC encoder (faac/fdkaacenc) is not in Debian; ``voaacenc`` (or ``avenc_aac``) stands
    in. The source is live, so the stream runs in real time; ``num-buffers`` ends it with EOS and
    ``-e`` makes gst-launch wait for that EOS to reach the sink, so a complete stream exits 0.
    ``video_kbit``: add H.264 as a Room Composite does (x264 veryfast, main, keyframe every 4 s, 30 fps;
    LiveKit sends 3000 kbit/s of 1280x720): the bitrate is LiveKit's, the picture 320x240 noise, which
    costs the machine a fraction of the encoding and still fills the bitrate.
    """
    require_gst_elements("audiotestsrc", encoder, "aacparse", "flvmux", "rtmp2sink")
    buffers = max(1, round(seconds * GST_BUFFERS_PER_SECOND))
    # One argv word per token; gst-launch joins and re-parses them, and the quotes keep a key's
    # query string or punctuation inside the location value.
    pipeline = [
        "flvmux", "name=mux", "streamable=true", "skip-backwards-streams=true",
        "!", "rtmp2sink", f'location="{url}"', "sync=false", "async=false", "async-connect=false",
        "chunk-size=128",
        "audiotestsrc", f"freq={frequency}", "is-live=true", f"num-buffers={buffers}",
        f"samplesperbuffer={GST_SAMPLES_PER_BUFFER}",
        "!", "audio/x-raw,rate=44100,channels=2",
        "!", encoder, "bitrate=128000", "!", "aacparse", "!", "mux.",
    ]  # fmt: skip
    if video_kbit:
        require_gst_elements("videotestsrc", "x264enc", "h264parse")
        pipeline += [
            "videotestsrc", "pattern=snow", "is-live=true", f"num-buffers={round(seconds * 30)}",
            "!", "video/x-raw,width=320,height=240,framerate=30/1",
            "!", "x264enc", f"bitrate={video_kbit}", "speed-preset=veryfast", "key-int-max=120",
            "!", "video/x-h264,profile=main", "!", "h264parse", "!", "mux.",
        ]  # fmt: skip
    return await Publisher.spawn("gst_livekit", [GST_LAUNCH, "-e", *pipeline], env)


async def pyav_tone(
    url: str, seconds: float, frequency: float = 440, ts_offset_ms: int = 0, **kwargs: Any
) -> PyAvPublisher:
    """The PyAV publisher ``relay-client test`` uses (:func:`publish_tone`), started as a task.

    Extra keyword arguments go to :func:`publish_tone` (``sample_rate``, ``realtime``, ``on_packet``...).
    """
    return PyAvPublisher(url, seconds=seconds, frequency=frequency, ts_offset_ms=ts_offset_ms, **kwargs)
