"""A sans-I/O RTMP client, publisher or player: what ``ffmpeg -f flv rtmp://...`` (or
``ffmpeg -i rtmp://...``) does, minus the sockets.

Used by tests to drive :class:`~relay_edge.rtmp.session.ServerSession` without
a network, by the benchmark's lightweight publishers and players, and for remote
diagnosis. The command sequences are FFmpeg's. Publishing: connect, then
releaseStream + FCPublish + createStream, then publish on the new stream; media
flows after NetStream.Publish.Start. Playing (``play=True``): connect, then
createStream, then play on the new stream and a Set Buffer Length; media
arrives after NetStream.Play.Start.
"""

from __future__ import annotations

import os
from typing import Any

from .. import flv
from ..errors import LocalProtocolError, MessageError
from ..limits import DEFAULT_LIMITS, Limits
from . import amf0
from . import messages as m
from .chunk import ChunkReader, ChunkWriter, Message
from .events import (
    AcknowledgementReceived,
    ClientEvent,
    Connected,
    Media,
    PingResponse,
    PlayStarted,
    PublishRejected,
    PublishStarted,
    Status,
)
from .handshake import ClientHandshake, RandomBytes

DEFAULT_FLASH_VER = "FMLE/3.0 (compatible; rtmp-relay)"
_ON_METADATA = amf0.encode("onMetaData")
_MEDIA_ROUTE = {  # FLV tag type -> (chunk stream, RTMP message type)
    flv.AUDIO: (m.CSID_AUDIO, m.AUDIO),
    flv.VIDEO: (m.CSID_VIDEO, m.VIDEO),
    flv.SCRIPT: (m.CSID_DATA, m.DATA_AMF0),
}
_PLAY_START = -2000.0  # FFmpeg's default (``-rtmp_live any``: live, else recorded), in ms
DEFAULT_BUFFER_MS = 3000  # FFmpeg's ``-rtmp_buffer`` default, sent as Set Buffer Length
_PLAYED_TYPES = frozenset((m.AUDIO, m.VIDEO, m.DATA_AMF0, m.DATA_AMF3, m.AGGREGATE))


class ClientSession:
    """One publishing (or, with ``play=True``, playing) connection: :meth:`initiate`, then pump bytes.

    Events: :class:`Connected`, :class:`PublishStarted` (publish mode) or
    :class:`PlayStarted` and :class:`Media` (play mode), :class:`PublishRejected`
    (in play mode: the server refused connect, createStream or play),
    :class:`Status` for every onStatus, :class:`AcknowledgementReceived`,
    :class:`PingResponse`.
    """

    def __init__(
        self,
        app: str,
        stream_name: str,
        tc_url: str,
        chunk_size: int = 4096,
        *,
        limits: Limits = DEFAULT_LIMITS,
        flash_ver: str = DEFAULT_FLASH_VER,
        digest_handshake: bool = False,
        random_bytes: RandomBytes = os.urandom,
        play: bool = False,
        buffer_ms: int = DEFAULT_BUFFER_MS,
    ) -> None:
        self.app = app
        self.stream_name = stream_name
        self.tc_url = tc_url
        self.chunk_size = chunk_size
        self.flash_ver = flash_ver
        self.play = play
        self.buffer_ms = buffer_ms
        self.publishing = False
        self.playing = False
        self.stream_id: int | None = None
        self.bytes_received = 0
        self.acks_received = 0
        self._handshake: ClientHandshake | None = ClientHandshake(digest_handshake, random_bytes)
        self._reader = ChunkReader(limits)
        self._writer = ChunkWriter()
        self._limits = limits
        self._out: list[bytes] = []
        self._txn = 0
        self._calls: dict[float, str] = {}  # transaction id -> command awaiting _result
        self._ack_window = 0  # the server's Window Ack Size; 0 = never ack
        self._last_ack = 0

    # --- pump API -----------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue C0+C1."""
        if self._handshake is None:
            raise LocalProtocolError("initiate() after the handshake")
        self._handshake.initiate()
        self._out.append(self._handshake.data_to_send())

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientEvent]:
        """Consume server bytes; return what they meant. Raises ProtocolError on bad input."""
        self.bytes_received += len(data)
        events: list[ClientEvent] = []
        if self._handshake is not None:
            rest = self._handshake.receive_data(data)
            self._out.append(self._handshake.data_to_send())
            if rest is None:
                return events
            self._handshake = None
            self._after_handshake()
            data = rest
        for msg in self._reader.messages(data):
            self._dispatch(msg, events)
        if self._ack_window and self.bytes_received - self._last_ack >= self._ack_window:
            self._send(m.CSID_PROTOCOL, m.ACKNOWLEDGEMENT, 0, m.u32(self.bytes_received))
            self._last_ack = self.bytes_received
        return events

    def data_to_send(self) -> bytes:
        """Every byte due to the server since the last call (``b""`` if none)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_media(self, type: int, timestamp: int, data: bytes) -> None:
        """Send one FLV tag body (``flv.AUDIO``/``VIDEO``/``SCRIPT``) at ``timestamp`` ms.

        Metadata starting with ``onMetaData`` goes out behind ``@setDataFrame``,
        as publishers send it; the server strips it again.
        """
        if self.play:
            raise LocalProtocolError("send_media() on a playing session")
        if not self.publishing or self.stream_id is None:
            raise LocalProtocolError("send_media() before NetStream.Publish.Start")
        route = _MEDIA_ROUTE.get(type)
        if route is None:
            raise ValueError(f"FLV tag type {type} is not audio (8), video (9) or script (18)")
        csid, msg_type = route
        if type == flv.SCRIPT and data.startswith(_ON_METADATA):
            data = amf0.encode(m.SET_DATA_FRAME) + data
        self._out.append(self._writer.write(csid, msg_type, self.stream_id, timestamp, data))

    def unpublish(self) -> None:
        """Send FCUnpublish and deleteStream, as FFmpeg does when it closes (a player: deleteStream only)."""
        if self.stream_id is None:
            return
        if not self.play:
            self._call("FCUnpublish", None, self.stream_name, answer=False)
        self._call("deleteStream", None, float(self.stream_id), answer=False)
        self.publishing = self.playing = False
        self.stream_id = None

    def ping(self, timestamp: int) -> None:
        """Send a User Control Ping Request; the answer comes back as :class:`PingResponse`."""
        self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control(m.PING_REQUEST, timestamp))

    # --- internals ----------------------------------------------------------------------

    def _send(self, csid: int, msg_type: int, stream_id: int, body: bytes) -> None:
        self._out.append(self._writer.write(csid, msg_type, stream_id, 0, body))

    def _call(self, name: str, *args: Any, stream_id: int = 0, answer: bool = True) -> None:
        self._txn += 1
        if answer:
            self._calls[float(self._txn)] = name
        csid = m.CSID_STREAM_COMMAND if stream_id else m.CSID_COMMAND
        self._send(csid, m.COMMAND_AMF0, stream_id, m.encode_command(name, float(self._txn), *args))

    def _after_handshake(self) -> None:
        self._send(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0, m.u32(self.chunk_size))
        self._writer.chunk_size = self.chunk_size
        props = {"app": self.app, "type": "nonprivate", "flashVer": self.flash_ver, "tcUrl": self.tc_url}
        self._call("connect", props)

    def _dispatch(self, msg: Message, events: list[ClientEvent]) -> None:
        t = msg.type
        if self.play and t in _PLAYED_TYPES:  # the hot path first
            self._media(msg, events)
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            self._command(msg, m.decode_command(msg.body, t == m.COMMAND_AMF3, self._limits), events)
        elif t == m.USER_CONTROL:
            event, data = m.parse_user_control(msg.body)
            if event == m.PING_REQUEST:
                ts = m.read_u32(data, "Ping Request")
                self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control(m.PING_RESPONSE, ts))
            elif event == m.PING_RESPONSE:
                events.append(PingResponse(m.read_u32(data, "Ping Response")))
            # Stream Begin / EOF / Dry / Is Recorded need nothing: onStatus says as much.
        elif t == m.ACKNOWLEDGEMENT:
            self.acks_received += 1
            events.append(AcknowledgementReceived(m.read_u32(msg.body, "Acknowledgement")))
        elif t == m.WINDOW_ACK_SIZE:
            self._ack_window = m.read_u32(msg.body, "Window Acknowledgement Size")
        # Media sent to a publisher is ignored (servers send none).

    def _media(self, msg: Message, events: list[ClientEvent]) -> None:
        """A played message as :class:`Media` (FLV tag bodies), as the server reports published ones."""
        if msg.type == m.AUDIO or msg.type == m.VIDEO:  # RTMP's types are FLV's tag types
            events.append(Media(msg.stream_id, msg.type, msg.timestamp, msg.body))
        else:
            tags = m.data_tags(msg.type, msg.body, msg.timestamp)
            events.extend(Media(msg.stream_id, *tag) for tag in tags)

    def _command(self, msg: Message, cmd: m.Command, events: list[ClientEvent]) -> None:
        if cmd.name in ("_result", "_error"):
            call = self._calls.pop(cmd.transaction_id, None)
            if call is not None:
                self._answer(call, cmd, events)
        elif cmd.name == "onStatus":
            self._status(msg.stream_id, cmd, events)

    def _answer(self, call: str, cmd: m.Command, events: list[ClientEvent]) -> None:
        info = cmd.args[0] if cmd.args else None
        ok = cmd.name == "_result"
        if call == "connect":
            code = info.get("code", "") if isinstance(info, dict) else ""
            if ok and code == "NetConnection.Connect.Success" and isinstance(info, dict):
                props = cmd.command_object if isinstance(cmd.command_object, dict) else {}
                events.append(Connected(props, info))
                if not self.play:
                    self._call("releaseStream", None, self.stream_name)
                    self._call("FCPublish", None, self.stream_name)
                self._call("createStream", None)
            else:
                events.append(PublishRejected(code or "NetConnection.Connect.Rejected", _description(info)))
        elif call == "createStream":
            valid = isinstance(info, float) and not isinstance(info, bool) and info.is_integer() and info >= 1
            if not ok or not valid:
                events.append(PublishRejected("NetStream.CreateStream.Failed", _description(info)))
                return
            self.stream_id = int(info)  # type: ignore[arg-type]
            if self.play:
                self._start_play(self.stream_id)
            else:
                self._call("publish", None, self.stream_name, "live", stream_id=self.stream_id, answer=False)
        # releaseStream / FCPublish answers carry nothing we need (FFmpeg ignores them too).

    def _start_play(self, stream_id: int) -> None:
        """FFmpeg's gen_play (``play``, null, name, start -2000), then its Set Buffer Length."""
        self._call("play", None, self.stream_name, _PLAY_START, stream_id=stream_id, answer=False)
        body = m.user_control(m.SET_BUFFER_LENGTH, stream_id, self.buffer_ms)
        self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, body)

    def _status(self, stream_id: int, cmd: m.Command, events: list[ClientEvent]) -> None:
        info = cmd.args[0] if cmd.args else None
        if not isinstance(info, dict):
            raise MessageError(f"onStatus without an info object (got {type(info).__name__})")
        level, code = str(info.get("level", "")), str(info.get("code", ""))
        events.append(Status(stream_id, level, code, _description(info), info))
        if code == "NetStream.Publish.Start" and stream_id == self.stream_id:
            self.publishing = True
            events.append(PublishStarted(stream_id))
        elif code == "NetStream.Play.Start" and stream_id == self.stream_id and self.play:
            self.playing = True
            events.append(PlayStarted(stream_id))
        elif level == "error":  # in play mode: the play was refused, or the server ended it
            self.publishing = self.playing = False
            events.append(PublishRejected(code, _description(info)))


def _description(info: object) -> str:
    if isinstance(info, dict):
        return str(info.get("description", ""))
    return ""
