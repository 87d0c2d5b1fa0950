"""Re-publish each received stream to the app's own RTMP server (``--republish rtmp://127.0.0.1:1935/live``).

For an app that already runs an RTMP server (node-media-server, nginx-rtmp) and an ingest that pulls
from it with FFmpeg: every stream becomes an RTMP publish to ``rtmp://HOST:PORT/APP/NAME``, its FLV
tags sent untouched through the sans-I/O :class:`~relay_edge.rtmp.client.ClientSession`.

The local publish lives as long as the stream, not the link. A link drop, a resume or a publisher
reconnecting at the edge continue the same publish; timestamps stay monotonic (the edge already
shifts a new publisher's clock to follow the old one; :class:`Timeline` guards against any clock
that still goes back). The local server going away is
retried with backoff while the stream lives; :meth:`LocalPublish.write` returns only once the tags
are written to the local connection, and the stream acks only after it returns, so the edge keeps
everything the local server has not taken (replayed from the last ack, sequence headers first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay_edge import flv
from relay_edge.errors import ProtocolError, RelayError
from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import PublishRejected

log = logging.getLogger("relay_client.republish")

NAME_FIELD = "{name}"
DEFAULT_PORT = 1935


@dataclass(frozen=True, slots=True)
class RepublishLimits:
    """Bounds on the local publish. Every time here is per attempt; retries go on while the stream lives."""

    # TCP connect + handshake + connect/createStream/publish. nginx-rtmp needs ~175 ms on loopback
    # (delayed ACKs); 10 s covers a server still starting up without hiding a dead one for long.
    connect_timeout: float = 10.0
    # One batch written and drained. A local server that takes nothing for this long is treated as
    # gone: we reconnect, and the stream (not acking meanwhile) lets the edge buffer.
    write_timeout: float = 10.0
    # First retry delay after a failed connect or a lost connection, doubled up to backoff_max.
    # Short first: a restarting local server is typically back within a second.
    backoff_first: float = 0.25
    # Longest wait between retries: how late a recovered server is noticed at worst.
    backoff_max: float = 5.0
    # Our outgoing RTMP chunk size; FFmpeg's default is 4096 too.
    chunk_size: int = 4096
    # A timestamp more than this far behind the latest one sent means a clock that started over
    # (the edge rebases publisher takeovers itself; this is the guard if anything else does):
    # rebase instead of sending time backwards. Audio and video interleave a few tens of ms out
    # of order, which passes untouched; 1 s is far beyond that.
    backward_tolerance_ms: int = 1000


DEFAULT_REPUBLISH_LIMITS = RepublishLimits()


class RepublishError(RelayError):
    """A ``--republish`` URL we cannot publish to, or a local connection that failed."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to publish: ``rtmp://HOST:PORT/APP/STREAM`` with ``{name}`` somewhere in APP/STREAM."""

    host: str
    port: int
    path: str  # "/live/{name}": the app, then the stream name, with the placeholder
    query: str = ""  # e.g. a node-media-server "sign=...": sent with the stream name, never logged

    @classmethod
    def parse(cls, url: str) -> Target:
        """Check a ``--republish`` URL; without ``{name}`` the stream name is appended as the last part."""
        parts = urlsplit(url)
        if parts.scheme != "rtmp":
            raise RepublishError(f"--republish needs an rtmp:// URL (a local server), got {parts.scheme!r}")
        if not parts.hostname:
            raise RepublishError(f"--republish URL {url!r} has no host")
        path = parts.path.rstrip("/")
        if NAME_FIELD not in path:
            path += "/" + NAME_FIELD
        if path.count("/") < 2 or path.startswith("//"):
            raise RepublishError(f"--republish URL {url!r} needs an application: rtmp://HOST:PORT/APP")
        return cls(parts.hostname, parts.port or DEFAULT_PORT, path, parts.query)

    def app_and_stream(self, name: str) -> tuple[str, str]:
        """RTMP's split, as FFmpeg makes it: the first path part is the app, the rest the stream."""
        app, _, stream = self.path.replace(NAME_FIELD, name)[1:].partition("/")
        return app, f"{stream}?{self.query}" if self.query else stream

    def url(self, name: str) -> str:
        """The publish URL for logs and status: without the query, which may hold a password."""
        return f"rtmp://{self.host}:{self.port}{self.path.replace(NAME_FIELD, name)}"


class Timeline:
    """The stream's tag timestamps -> the local publish's: untouched, unless time would go back.

    Sans-I/O: the clock is passed in. A link drop or a resume changes nothing (the tags carry the
    stream's clock, and a gap's time is in them too); the edge already shifts a publisher takeover.
    A timestamp far behind the latest (a clock that started over anyway) is moved to follow it by
    the wall time in between, and everything after it by the same offset.
    """

    def __init__(self, backward_tolerance_ms: int) -> None:
        self.offset = 0
        self.last: int | None = None  # latest timestamp given out
        self.last_at = 0.0  # when (clock seconds)
        self.rebases = 0
        self._tolerance = backward_tolerance_ms

    def map(self, timestamp: int, now: float) -> int:
        """The local timestamp for a tag stamped ``timestamp`` arriving at ``now``."""
        out = timestamp + self.offset
        if self.last is not None and self.last - out > self._tolerance:
            elapsed = max(1, round((now - self.last_at) * 1000))
            self.offset = self.last + elapsed - timestamp
            self.rebases += 1
            out = timestamp + self.offset
        if self.last is None or out >= self.last:
            self.last, self.last_at = out, now
        return out


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session: ClientSession
    pump: asyncio.Task[None]


class LocalPublish:
    """One stream's RTMP publish to the local server, kept up while the stream lives.

    :meth:`write` sends tags (connecting first, and retrying with backoff while the server is down
    or refuses); :meth:`stop_retrying` lets a write give up once the stream has ended;
    :meth:`close` unpublishes. :meth:`status` is the part of ``/api/rtmp/status`` about it.
    """

    def __init__(self, target: Target, name: str, limits: RepublishLimits = DEFAULT_REPUBLISH_LIMITS) -> None:
        self.target = target
        self.name = name
        self.limits = limits
        self.url = target.url(name)
        self.state = "idle"  # idle, connecting, publishing, retrying, closed
        self.error = ""
        self.connects = 0  # publishes opened (1 + reconnects)
        self.failures = 0  # failed attempts and lost connections
        self.tags = 0
        self.bytes = 0
        self.timeline = Timeline(limits.backward_tolerance_ms)
        self._conn: _Conn | None = None
        self._config: dict[Any, tuple[int, bytes]] = {}  # metadata and sequence headers, for a reconnect
        self._giving_up = asyncio.Event()
        self._gap_ms = 0

    # --- the stream's side -----------------------------------------------------------------

    def note_gap(self, ms: int) -> None:
        """The edge dropped ``ms`` of media before the next tag: logged when the publish goes on."""
        self._gap_ms += ms

    def stop_retrying(self) -> None:
        """The stream has ended: a write waiting for the local server may give up."""
        self._giving_up.set()

    async def write(self, tags: Sequence[bytes]) -> bool:
        """Send encoded FLV tags (header + body, as on the link), in order.

        Returns once the local connection took them: True, or False if the stream ended while the
        local server was unreachable (the tags are dropped then, and that is logged).
        """
        batch = self._prepare(tags)
        if not batch:
            return True
        delay = self.limits.backoff_first
        while True:
            try:
                if self._conn is None:
                    await self._open()
                    delay = self.limits.backoff_first
                await self._send(batch)
                return True
            except (OSError, TimeoutError, ProtocolError, RepublishError) as exc:
                await self._lost(exc)
            if self._giving_up.is_set():
                log.warning("republish %s: stream ended while %s is unreachable; %d tags not sent",
                            self.name, self.url, len(batch))  # fmt: skip
                return False
            self.state = "retrying"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._giving_up.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.limits.backoff_max)

    async def close(self) -> None:
        """Unpublish (FCUnpublish, deleteStream) and close the connection, as FFmpeg does at the end."""
        self._giving_up.set()
        conn, self._conn = self._conn, None
        self.state = "closed"
        if conn is None:
            return
        conn.session.unpublish()
        with contextlib.suppress(OSError, TimeoutError):
            conn.writer.write(conn.session.data_to_send())
            await asyncio.wait_for(conn.writer.drain(), self.limits.write_timeout)
            if conn.writer.can_write_eof():
                conn.writer.write_eof()  # half-close: the server reads the tail, then closes too
            await asyncio.wait_for(asyncio.shield(conn.pump), self.limits.write_timeout)
        await self._drop(conn)
        log.info("republish %s: unpublished from %s after %d tags", self.name, self.url, self.tags)

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "error": self.error,
            "connects": self.connects,
            "failures": self.failures,
            "tags": self.tags,
            "bytes": self.bytes,
            "rebases": self.timeline.rebases,
        }

    # --- internals ---------------------------------------------------------------------------

    def _prepare(self, tags: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """(type, local timestamp, body) per tag, remembering the config a reconnect must send first."""
        now = time.monotonic()
        batch = []
        for encoded in tags:
            tag = flv.decode_tag(encoded)
            ts = self.timeline.map(tag.timestamp, now)
            if self._gap_ms and tag.type != flv.SCRIPT:
                gap, self._gap_ms = self._gap_ms, 0
                log.warning("republish %s: continuing after a gap of %d ms at %d ms", self.name, gap, ts)
            if tag.type == flv.SCRIPT:
                self._config[flv.SCRIPT] = (tag.type, tag.data)
            elif flv.is_sequence_header(tag.type, tag.data):
                self._config[tag.type] = (tag.type, tag.data)
            batch.append((tag.type, ts, tag.data))
        return batch

    async def _open(self) -> None:
        self.state = "connecting"
        limits = self.limits
        app, stream = self.target.app_and_stream(self.name)
        tc_url = f"rtmp://{self.target.host}:{self.target.port}/{app}"
        session = ClientSession(app, stream, tc_url, limits.chunk_size)
        late = f"connect_timeout: no publish on {self.url} within {limits.connect_timeout:g} s"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port), limits.connect_timeout
            )
        except TimeoutError:
            raise RepublishError(late) from None
        try:
            await asyncio.wait_for(self._handshake(session, reader, writer), limits.connect_timeout)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, TimeoutError):
                raise RepublishError(late) from None
            raise
        pump = asyncio.create_task(self._pump(session, reader, writer), name=f"republish {self.name}")
        self._conn = _Conn(reader, writer, session, pump)
        self.connects += 1
        self.state, self.error = "publishing", ""  # the failures count keeps the history
        again = f" (again, publish {self.connects})" if self.connects > 1 else ""
        log.info("republish %s: publishing to %s%s", self.name, self.url, again)
        if self.tags:  # a new publish mid-stream: metadata and sequence headers first, as at the start
            ts = self.timeline.last or 0
            await self._send([(kind, ts, body) for kind, body in self._config.values()], count=False)

    async def _handshake(
        self, session: ClientSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session.initiate()
        writer.write(session.data_to_send())
        while not session.publishing:
            data = await reader.read(65536)
            if not data:
                raise RepublishError(f"{self.url} closed the connection before the publish started")
            for event in session.receive_data(data):
                if isinstance(event, PublishRejected):
                    raise RepublishError(f"{self.url} refused the publish: {event.code} {event.description}")
            writer.write(session.data_to_send())

    async def _pump(
        self, session: ClientSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read what the server sends (acks, pings, onStatus) so its window never stalls our writes."""
        with contextlib.suppress(OSError, ProtocolError, RelayError):
            while data := await reader.read(65536):
                for event in session.receive_data(data):
                    if isinstance(event, PublishRejected):  # e.g. the server ended our publish
                        log.warning("republish %s: %s: %s", self.name, event.code, event.description)
                        return
                out = session.data_to_send()
                if out:
                    writer.write(out)

    async def _send(self, batch: list[tuple[int, int, bytes]], *, count: bool = True) -> None:
        conn = self._conn
        if conn is None or conn.pump.done():
            raise RepublishError(f"{self.url} closed the connection")
        for kind, ts, body in batch:
            conn.session.send_media(kind, ts, body)
        conn.writer.write(conn.session.data_to_send())
        try:
            await asyncio.wait_for(conn.writer.drain(), self.limits.write_timeout)
        except TimeoutError:
            raise RepublishError(
                f"write_timeout: {self.url} took nothing for {self.limits.write_timeout:g} s"
            ) from None
        if conn.pump.done():  # the server went away while we wrote: it may not have read this
            raise RepublishError(f"{self.url} closed the connection")
        if count:
            self.tags += len(batch)
            self.bytes += sum(len(body) for _, _, body in batch)

    async def _lost(self, exc: BaseException) -> None:
        self.failures += 1
        if isinstance(exc, RepublishError):  # ours name the URL and the limit already
            self.error = str(exc)
        else:
            self.error = f"{self.url}: {type(exc).__name__}: {exc}" if str(exc) else f"{self.url}: {exc!r}"
        log.warning("republish %s: %s; retrying while the stream lives", self.name, self.error)
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)

    async def _drop(self, conn: _Conn) -> None:
        conn.pump.cancel()
        conn.writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await conn.pump
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
