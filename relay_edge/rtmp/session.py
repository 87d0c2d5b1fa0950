"""The server side of one RTMP connection, sans-I/O: bytes in, events and bytes out.

The I/O layer is a thin pump::

    session = ServerSession(limits)
    while data := await read():
        for event in session.receive_data(data):   # ProtocolError -> close with reason
            if isinstance(event, PublishRequested):
                session.accept_publish(event.stream_id)  # or reject_publish(...)
            ...
        write(session.data_to_send())
        if session.closing:
            break                                     # after flushing

Command flow (what nginx-rtmp and MediaMTX answer, which every publisher we
know accepts): ``connect`` gets Window Ack Size, Set Peer Bandwidth, Set Chunk
Size and ``_result``; ``releaseStream``/``FCPublish`` are answered so neither
FFmpeg nor GStreamer waits; ``createStream`` gets a stream id; ``publish``
becomes :class:`PublishRequested` and waits for the I/O layer's verdict.
Unknown commands are ignored, as nginx-rtmp and MediaMTX do: FFmpeg treats an
``_error`` answer to most of its calls as fatal.

Per message stream: created -> pending (publish) -> publishing (accepted) ->
ended. Audio, video and data on a stream that is not publishing are a
:class:`MessageError` as soon as their header arrives; FFmpeg, GStreamer and
librtmp all wait for NetStream.Publish.Start before sending any.

Until a publish is accepted the connection is unauthenticated and gets a
small budget (``preauth_max_message``, ``preauth_partial_bytes``), checked on
declared lengths at the header; commands are capped at ``max_command_message``
always, and only the commands we act on have their arguments decoded. FCUnpublish, deleteStream and
closeStream each end a publish; whichever comes first is reported, once.
"""

from __future__ import annotations

import enum
import os

from ..errors import LimitExceeded, LocalProtocolError, MessageError, ProtocolError
from ..limits import DEFAULT_LIMITS, Limits
from . import messages as m
from .chunk import ChunkReader, ChunkWriter, Message
from .events import Connect, Event, HandshakeComplete, Media, PublishRequested, TagSink, Unpublished
from .handshake import RandomBytes, ServerHandshake

# Commands whose arguments we read; any other command's body is never decoded.
HANDLED_COMMANDS = frozenset(
    {"connect", "releaseStream", "FCPublish", "createStream", "publish", "FCUnpublish", "deleteStream",
     "closeStream"}
)  # fmt: skip
_COMMAND_TYPES = frozenset({m.COMMAND_AMF0, m.COMMAND_AMF3})
_MEDIA_TYPES = frozenset({m.AUDIO, m.VIDEO, m.DATA_AMF0, m.DATA_AMF3, m.AGGREGATE})


class StreamState(enum.Enum):
    CREATED = "created"  # createStream answered
    PENDING = "pending"  # publish received, waiting for accept/reject
    PUBLISHING = "publishing"
    ENDED = "ended"  # unpublished or rejected; media is refused


class _Stream:
    __slots__ = ("csid", "name", "state")

    def __init__(self) -> None:
        self.state = StreamState.CREATED
        self.name = ""
        self.csid = m.CSID_COMMAND  # chunk stream the publish came on; onStatus answers there


class ServerSession:
    """One publisher connection. See the module docstring for the pump loop.

    ``receive_data`` raises a :class:`~relay_edge.errors.ProtocolError`
    subclass on bad input; the session is dead afterwards. The exception's
    ``events`` attribute holds the events the same call completed before the
    error, in order.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, random_bytes: RandomBytes = os.urandom) -> None:
        self.limits = limits
        self.bytes_received = 0
        self.closing = False
        self.acks_sent = 0
        self.app = ""
        self.connected = False
        self._handshake: ServerHandshake | None = ServerHandshake(random_bytes)
        self.authorized = False  # a publish was accepted: the pre-auth budget no longer applies
        self._reader = ChunkReader(limits, on_message_start=self._message_start)
        self._reader.set_partial_limit("preauth_partial_bytes", limits.preauth_partial_bytes)
        self._writer = ChunkWriter()
        self._out: list[bytes] = []
        # The peer's Window Acknowledgement Size sets our ack interval; until it
        # sends one we use the window we announce (spec 5.4.4).
        self._ack_window = limits.ack_window
        self._last_ack = 0
        # Acknowledge the read that brings the first media after a publish, then by the window:
        # LiveKit's egress retries a dropped output only if the server acknowledged something
        # (rtmp2sink out-bytes-acked > 0), and a 2.5 MB window is ~150 s of its audio. Tested
        # once per read that completed events, never per message; no timer needed.
        self._ack_on_media = False
        self._streams: dict[int, _Stream] = {}
        self._publishing: set[int] = set()
        self._next_stream_id = 1
        self._tags: TagSink | None = None  # receive_data's ``tags``, for the read it is in
        self._tagged = False  # the read handed a tag to it
        self._failed: str | None = None  # the error's text: the exception's traceback would pin this session

    # --- the pump API ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, tags: TagSink | None = None) -> list[Event]:
        """Consume bytes from the peer; return the events they complete.

        ``tags``, if given, is called as ``tags(stream_id, type, timestamp, body)`` for each
        audio/video message that no other event of this read precedes, instead of returning
        it as a :class:`Media` (the pump's per-tag path, without an event object). Order is
        kept: from the first other event of the read on, media come back as Media events.
        """
        if self._failed is not None:
            raise LocalProtocolError(f"receive_data() on a failed session ({self._failed})")
        self.bytes_received += len(data)
        if self.closing:
            return []  # we are flushing a refusal; whatever else comes is moot
        events: list[Event] = []
        self._tags = tags
        self._tagged = False
        try:
            self._receive(data, events)
        except ProtocolError as exc:
            # Keep what the bytes before the error completed (e.g. the last
            # audio frames before a malformed command): the I/O layer may
            # deliver them before it closes.
            self._failed = str(exc)
            raise exc.with_events(events) from None
        finally:
            self._tags = None
        if self._handshake is None and (
            self.bytes_received - self._last_ack >= self._ack_window
            or (self._ack_on_media and (events or self._tagged))
        ):
            self._send_ack()
        return events

    def data_to_send(self) -> bytes:
        """Every byte due to the peer since the last call (``b""`` if none)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def accept_publish(self, stream_id: int) -> None:
        """Queue Stream Begin and onStatus NetStream.Publish.Start; media is accepted from now on.

        A no-op if the publisher already ended that stream (the events raced);
        :class:`LocalProtocolError` for a stream id we never handed out.
        """
        stream = self._pending_stream(stream_id, "accept_publish")
        if stream is None:
            return
        stream.state = StreamState.PUBLISHING
        self._publishing.add(stream_id)
        self._ack_on_media = True
        if not self.authorized:
            self.authorized = True
            self._reader.set_partial_limit("max_partial_bytes", self.limits.max_partial_bytes)
        self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control(m.STREAM_BEGIN, stream_id))
        info = m.status_info("status", "NetStream.Publish.Start", "Start publishing.")
        self._send(stream.csid, m.COMMAND_AMF0, stream_id, m.encode_command("onStatus", 0, None, info))

    def reject_publish(self, stream_id: int, code: str, description: str) -> None:
        """Queue onStatus level "error" with ``code`` and set :attr:`closing`.

        ``code`` is e.g. NetStream.Publish.BadName or NetStream.Publish.Unauthorized.
        Also valid on a stream already publishing, to end it with a reason.
        """
        stream = self._pending_stream(stream_id, "reject_publish", allow_publishing=True)
        if stream is None:
            return
        stream.state = StreamState.ENDED
        self._publishing.discard(stream_id)
        info = m.status_info("error", code, description)
        self._send(stream.csid, m.COMMAND_AMF0, stream_id, m.encode_command("onStatus", 0, None, info))
        self.closing = True

    # --- internals --------------------------------------------------------------------

    def _pending_stream(self, stream_id: int, caller: str, allow_publishing: bool = False) -> _Stream | None:
        if not 1 <= stream_id < self._next_stream_id:
            raise LocalProtocolError(f"{caller}({stream_id}): createStream never returned that stream id")
        stream = self._streams.get(stream_id)
        if stream is None:
            return None  # deleted meanwhile
        if stream.state is StreamState.PENDING:
            return stream
        if allow_publishing and stream.state is StreamState.PUBLISHING:
            return stream
        return None  # ended or restarted meanwhile: the verdict has nothing left to act on

    def _send(self, csid: int, msg_type: int, stream_id: int, body: bytes) -> None:
        self._out.append(self._writer.write(csid, msg_type, stream_id, 0, body))

    def _send_ack(self) -> None:
        self._send(m.CSID_PROTOCOL, m.ACKNOWLEDGEMENT, 0, m.u32(self.bytes_received))
        self._last_ack = self.bytes_received
        self._ack_on_media = False
        self.acks_sent += 1

    def _receive(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        if self._handshake is not None:
            rest = self._handshake.receive_data(data)
            self._out.append(self._handshake.data_to_send())
            if rest is None:
                return
            events.append(HandshakeComplete(self._handshake.digest))
            self._handshake = None
            if not rest:
                return
            data = rest
        for msg in self._reader.messages(data):
            self._dispatch(msg, events)

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        t = msg.type
        if t == m.AUDIO or t == m.VIDEO:  # the hot path first
            if msg.stream_id not in self._publishing:
                self._check_publishing(msg.stream_id, t)
            if self._tags is not None and not events:
                self._tagged = True
                self._tags(msg.stream_id, t, msg.timestamp, msg.body)
            else:
                events.append(Media(msg.stream_id, t, msg.timestamp, msg.body))
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3 or t == m.AGGREGATE:
            self._check_publishing(msg.stream_id, t)
            events.extend(Media(msg.stream_id, *tag) for tag in m.data_tags(t, msg.body, msg.timestamp))
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            cmd = m.decode_command(msg.body, t == m.COMMAND_AMF3, self.limits, HANDLED_COMMANDS)
            self._command(msg, cmd, events)
        elif t == m.WINDOW_ACK_SIZE:
            window = m.read_u32(msg.body, "Window Acknowledgement Size")
            if window == 0:
                raise MessageError("Window Acknowledgement Size 0 is invalid")
            self._ack_window = window
        elif t == m.USER_CONTROL:
            self._user_control(msg.body)
        # Set Chunk Size and Abort were applied by the reader. Acknowledgement,
        # Set Peer Bandwidth, shared objects and unknown types need nothing from us.

    def _message_start(self, msg_type: int, stream_id: int, length: int) -> None:
        """Refuse a message at its first header, before its payload is buffered (ChunkReader hook)."""
        if msg_type in _COMMAND_TYPES:
            limit = self.limits.max_command_message
            if length > limit:
                raise LimitExceeded("max_command_message", length, limit)
        elif msg_type in _MEDIA_TYPES and stream_id not in self._publishing:
            self._check_publishing(stream_id, msg_type)
        if not self.authorized and length > self.limits.preauth_max_message:
            raise LimitExceeded("preauth_max_message", length, self.limits.preauth_max_message)

    def _check_publishing(self, stream_id: int, msg_type: int) -> None:
        if stream_id not in self._publishing:
            stream = self._streams.get(stream_id)
            state = stream.state.value if stream is not None else "not created"
            raise MessageError(
                f"media message (type {msg_type}) on message stream {stream_id}, "
                f"which is {state}, not publishing"
            )

    def _user_control(self, body: bytes) -> None:
        event, data = m.parse_user_control(body)
        if event == m.PING_REQUEST:
            timestamp = m.read_u32(data, "Ping Request")
            self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control(m.PING_RESPONSE, timestamp))

    # --- commands ---------------------------------------------------------------------

    def _command(self, msg: Message, cmd: m.Command, events: list[Event]) -> None:
        name = cmd.name
        if name == "connect":
            self._connect(cmd, events)
            return
        if name in ("_result", "_error", "onStatus"):
            return  # answers to calls we never make
        if not self.connected:
            raise MessageError(f"command {name!r} before connect")
        if name == "releaseStream":
            self._answer(cmd)
        elif name == "FCPublish":
            publish_name = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
            info = m.status_info("status", "NetStream.Publish.Start", publish_name)
            self._send(m.CSID_COMMAND, m.COMMAND_AMF0, 0, m.encode_command("onFCPublish", 0, None, info))
            self._answer(cmd)
        elif name == "createStream":
            self._create_stream(cmd)
        elif name == "publish":
            self._publish(msg, cmd, events)
        elif name == "FCUnpublish":
            self._fc_unpublish(cmd, events)
        elif name == "deleteStream":
            self._delete_stream(cmd, events)
        elif name == "closeStream":
            self._end_stream(msg.stream_id, "closeStream", events)

    def _answer(self, cmd: m.Command, *values: object) -> None:
        """``_result`` when the caller asked for one (transaction id > 0)."""
        if cmd.transaction_id > 0:
            body = m.encode_command("_result", cmd.transaction_id, None, *values)
            self._send(m.CSID_COMMAND, m.COMMAND_AMF0, 0, body)

    def _connect(self, cmd: m.Command, events: list[Event]) -> None:
        if self.connected:
            raise MessageError("second connect on one connection")
        props = cmd.command_object
        if not isinstance(props, dict):
            raise MessageError(f"connect: command object is {type(props).__name__}, not an object")
        app = props.get("app", "")
        if not isinstance(app, str):
            raise MessageError(f"connect: app is {type(app).__name__}, not a string")
        tc_url = props.get("tcUrl")
        flash_ver = props.get("flashVer")
        encoding = props.get("objectEncoding", 0.0)
        if isinstance(encoding, bool) or not isinstance(encoding, float):
            encoding = 0.0
        self.app = app
        self.connected = True
        window = self.limits.ack_window
        self._send(m.CSID_PROTOCOL, m.WINDOW_ACK_SIZE, 0, m.u32(window))
        self._send(m.CSID_PROTOCOL, m.SET_PEER_BANDWIDTH, 0, m.set_peer_bandwidth(window, m.LIMIT_DYNAMIC))
        self._send(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0, m.u32(m.OUT_CHUNK_SIZE))
        self._writer.chunk_size = m.OUT_CHUNK_SIZE  # applies from the next message on
        properties = {"fmsVer": m.FMS_VERSION, "capabilities": float(m.CAPABILITIES)}
        properties |= m.enhanced_rtmp_answer(props)
        info = m.status_info(
            "status", "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=encoding
        )
        body = m.encode_command("_result", cmd.transaction_id, properties, info)
        self._send(m.CSID_COMMAND, m.COMMAND_AMF0, 0, body)
        events.append(
            Connect(
                app,
                tc_url if isinstance(tc_url, str) else "",
                flash_ver if isinstance(flash_ver, str) else "",
                dict(props),
            )
        )

    def _create_stream(self, cmd: m.Command) -> None:
        limit = self.limits.max_message_streams
        if len(self._streams) >= limit:
            raise LimitExceeded("max_message_streams", len(self._streams) + 1, limit, "streams")
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams[stream_id] = _Stream()
        # Always answered: a createStream without a transaction id is useless otherwise.
        body = m.encode_command("_result", cmd.transaction_id, None, float(stream_id))
        self._send(m.CSID_COMMAND, m.COMMAND_AMF0, 0, body)

    def _publish(self, msg: Message, cmd: m.Command, events: list[Event]) -> None:
        stream_id = msg.stream_id
        stream = self._streams.get(stream_id)
        if stream is None:
            raise MessageError(f"publish on message stream {stream_id}, which createStream did not return")
        if stream.state is not StreamState.CREATED:
            state = stream.state.value
            raise MessageError(f"publish on message stream {stream_id}, which is already {state}")
        name = cmd.args[0] if cmd.args else None
        if not isinstance(name, str):
            raise MessageError(f"publish: stream name is {type(name).__name__}, not a string")
        publish_type = cmd.args[1] if len(cmd.args) > 1 and isinstance(cmd.args[1], str) else "live"
        stream.state = StreamState.PENDING
        stream.name = name
        stream.csid = msg.csid
        events.append(PublishRequested(stream_id, name, self.app, publish_type))

    def _by_name(self, name: object) -> int | None:
        """The live stream published as ``name``, else the only live stream, else None."""
        active = (StreamState.PENDING, StreamState.PUBLISHING)
        live = [sid for sid, s in self._streams.items() if s.state in active]
        named = [sid for sid in live if self._streams[sid].name == name]
        if named:
            return named[0]
        return live[0] if len(live) == 1 else None

    def _fc_unpublish(self, cmd: m.Command, events: list[Event]) -> None:
        # FCUnpublish names the stream rather than using its message stream id.
        stream_id = self._by_name(cmd.args[0] if cmd.args else None)
        if stream_id is not None:
            self._end_stream(stream_id, "FCUnpublish", events)

    def _delete_stream(self, cmd: m.Command, events: list[Event]) -> None:
        # The spec's argument is the stream id; GStreamer's rtmp2sink (so LiveKit
        # egress) sends the stream *name* instead. Accept both; ignore the rest.
        raw = cmd.args[0] if cmd.args else None
        if isinstance(raw, float) and not isinstance(raw, bool) and raw.is_integer():
            stream_id: int | None = int(raw)
        elif isinstance(raw, str):
            stream_id = self._by_name(raw)
        else:
            return
        if stream_id is not None:
            self._end_stream(stream_id, "deleteStream", events)
            self._streams.pop(stream_id, None)

    def _end_stream(self, stream_id: int, reason: str, events: list[Event]) -> None:
        """Emit Unpublished once per publish, whichever of the three commands comes first."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state not in (StreamState.PENDING, StreamState.PUBLISHING):
            return
        stream.state = StreamState.ENDED if reason != "closeStream" else StreamState.CREATED
        self._publishing.discard(stream_id)
        events.append(Unpublished(stream_id, reason))
