"""ServerSession, driven by ClientSession and by hand-built wire bytes: no sockets."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmp_support import SPLIT_MODES, Wire, client_handshake, connected_pair, feed_all, pump

from relay_edge import flv
from relay_edge.errors import LimitExceeded, LocalProtocolError, MessageError, ProtocolError
from relay_edge.limits import Limits
from relay_edge.rtmp import (
    AcknowledgementReceived,
    ClientSession,
    Connect,
    Connected,
    HandshakeComplete,
    Media,
    PingResponse,
    PublishRejected,
    PublishRequested,
    PublishStarted,
    ServerSession,
    Status,
    Unpublished,
    amf0,
)
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkReader, Message
from relay_edge.rtmp.handshake import PACKET_SIZE
from tests.support.rtmpbytes import publish_setup

AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"
METADATA = amf0.encode("onMetaData", amf0.ECMAArray(duration=0.0, audiocodecid=10.0))


class Tap:
    """Decodes everything one side sends, across calls (headers are compressed against earlier ones)."""

    def __init__(self, skip: int = 1 + 2 * PACKET_SIZE) -> None:
        self.skip = skip  # S0+S1+S2 (server) or C0+C1+C2 (client) come first
        self.reader = ChunkReader()

    def __call__(self, data: bytes) -> list[Message]:
        cut = min(self.skip, len(data))
        self.skip -= cut
        return self.reader.feed(data[cut:])


def commands(msgs: list[Message]) -> list[m.Command]:
    return [m.decode_command(msg.body) for msg in msgs if msg.type == m.COMMAND_AMF0]


def types(events: list[Any]) -> list[type]:
    return [type(event) for event in events]


# --- the publish flow ---------------------------------------------------------------------


def test_full_publish_flow() -> None:
    client, server, server_events, client_events = connected_pair()
    assert types(server_events) == [HandshakeComplete, Connect, PublishRequested]
    connect, publish = server_events[1], server_events[2]
    assert (connect.app, connect.tc_url) == ("live", "rtmp://host/live")
    assert connect.flash_ver.startswith("FMLE/3.0")
    assert connect.properties["type"] == "nonprivate"
    assert publish == PublishRequested(stream_id=1, name="key", app="live", publish_type="live")
    assert types(client_events) == [Connected, Status, PublishStarted]
    assert client.publishing and client.stream_id == 1
    assert server.connected and server.app == "live"


def test_connect_answer_is_what_ffmpeg_and_gstreamer_expect() -> None:
    server = ServerSession(Limits(ack_window=2_500_000))
    wire = Wire()
    connect = wire.command("connect", 1.0, {"app": "live", "objectEncoding": 3.0})
    server.receive_data(client_handshake() + connect)
    msgs = Tap()(server.data_to_send())
    assert [(msg.csid, msg.type, msg.stream_id) for msg in msgs] == [
        (2, m.WINDOW_ACK_SIZE, 0),
        (2, m.SET_PEER_BANDWIDTH, 0),
        (2, m.SET_CHUNK_SIZE, 0),
        (3, m.COMMAND_AMF0, 0),
    ]
    assert msgs[0].body == struct.pack(">I", 2_500_000)
    assert msgs[1].body == struct.pack(">IB", 2_500_000, 2)  # limit type 2: dynamic
    assert msgs[2].body == struct.pack(">I", 4096)
    result = commands(msgs)[0]
    assert (result.name, result.transaction_id) == ("_result", 1.0)
    assert result.command_object == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    assert result.args[0] == {
        "level": "status",
        "code": "NetConnection.Connect.Success",
        "description": "Connection succeeded.",
        "objectEncoding": 3.0,  # echoed
    }


@pytest.mark.parametrize(
    ("declared", "answer"),
    [
        ({}, {}),  # legacy publishers get the legacy answer
        (
            {"fourCcList": ["av01", "hvc1", "Opus"]},
            {
                "fourCcList": ["*"],
                "videoFourCcInfoMap": {"*": 4.0},
                "audioFourCcInfoMap": {"*": 4.0},
                "capsEx": 6.0,
            },
        ),
        (
            {"videoFourCcInfoMap": {"hvc1": 1.0}, "capsEx": 2.0},
            {"videoFourCcInfoMap": {"*": 4.0}, "audioFourCcInfoMap": {"*": 4.0}, "capsEx": 6.0},
        ),
    ],
)
def test_connect_answers_enhanced_rtmp_with_forward_everything(
    declared: dict[str, Any], answer: dict[str, Any]
) -> None:
    """Enhanced RTMP v2: the edge can forward any FourCC, passes multitrack and parses ModEx."""
    server = ServerSession()
    connect = Wire().command("connect", 1.0, {"app": "live", **declared})
    server.receive_data(client_handshake() + connect)
    result = commands(Tap()(server.data_to_send()))[0]
    assert result.command_object == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0, **answer}


def test_release_fcpublish_create_and_publish_answers() -> None:
    server = ServerSession()
    wire = Wire()
    tap = Tap()
    server.receive_data(client_handshake() + wire.connect())
    tap(server.data_to_send())
    data = (
        wire.command("releaseStream", 2.0, None, "key")
        + wire.command("FCPublish", 3.0, None, "key")
        + wire.command("releaseStream", 0.0, None, "key")  # GStreamer: no answer wanted
        + wire.command("FCPublish", 0.0, None, "key")
        + wire.command("createStream", 4.0, None)
        + wire.command("publish", 0.0, None, "key?token=abc", "live", stream_id=1)
    )
    events = server.receive_data(data)
    assert events == [PublishRequested(1, "key?token=abc", "live", "live")]
    server.accept_publish(1)
    msgs = tap(server.data_to_send())
    answers = [(c.name, c.transaction_id, c.args) for c in commands(msgs)]
    assert answers[:5] == [
        ("_result", 2.0, []),
        ("onFCPublish", 0.0, [{"level": "status", "code": "NetStream.Publish.Start", "description": "key"}]),
        ("_result", 3.0, []),
        ("onFCPublish", 0.0, [{"level": "status", "code": "NetStream.Publish.Start", "description": "key"}]),
        ("_result", 4.0, [1.0]),
    ]
    # Stream Begin for stream 1, then onStatus on the publish's message stream and chunk stream.
    begin = [msg for msg in msgs if msg.type == m.USER_CONTROL]
    assert begin[0].body == m.user_control(m.STREAM_BEGIN, 1)
    status = msgs[-1]
    assert (status.csid, status.stream_id) == (m.CSID_STREAM_COMMAND, 1)
    assert commands([status])[0].args[0]["code"] == "NetStream.Publish.Start"


def test_unknown_commands_are_ignored() -> None:
    server = ServerSession()
    wire = Wire()
    server.receive_data(client_handshake() + wire.connect())
    server.data_to_send()
    assert server.receive_data(wire.command("_checkbw", 5.0, None) + wire.command("whatever", 0.0)) == []
    assert server.data_to_send() == b""


def test_amf3_command_and_data_messages_are_tolerated() -> None:
    server = ServerSession()
    wire = Wire()
    body = b"\x00" + m.encode_command("connect", 1.0, {"app": "live"})
    events = server.receive_data(client_handshake() + wire.msg(3, m.COMMAND_AMF3, 0, 0, body))
    assert types(events) == [HandshakeComplete, Connect]
    server.receive_data(
        wire.command("createStream", 2.0, None) + wire.command("publish", 0.0, None, "k", stream_id=1)
    )
    server.accept_publish(1)
    data = b"\x00" + amf0.encode("@setDataFrame") + METADATA
    assert server.receive_data(wire.msg(5, m.DATA_AMF3, 1, 0, data)) == [Media(1, flv.SCRIPT, 0, METADATA)]


# --- media ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [128, 4096, 65536])
def test_media_round_trip(chunk_size: int) -> None:
    client, server, _, _ = connected_pair(chunk_size=chunk_size)
    big_keyframe = b"\x17\x01" + bytes(range(256)) * 400
    sent = [
        (flv.SCRIPT, 0, METADATA),
        (flv.AUDIO, 0, AAC_SEQUENCE_HEADER),
        (flv.VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x64"),
        (flv.AUDIO, 23, b"\xaf\x01" + bytes(300)),
        (flv.VIDEO, 40, big_keyframe),
        (flv.AUDIO, 0xFFFFF0, b"\xaf\x01abc"),  # extended timestamps from here on
        (flv.AUDIO, 0x1000010, b"\xaf\x01def"),
        (flv.AUDIO, 0xFFFFFFF0, b"\xaf\x01ghi"),
        (flv.AUDIO, 0x00000007, b"\xaf\x01jkl"),  # wrapped around
        (flv.SCRIPT, 50, amf0.encode("onCuePoint", {"name": "x"})),  # not metadata: as is
    ]
    for tag in sent:
        client.send_media(*tag)
    events, _ = pump(client, server)
    assert [(e.type, e.timestamp, e.data) for e in events] == sent
    assert all(isinstance(e, Media) and e.stream_id == 1 for e in events)


def test_set_data_frame_is_stripped_byte_for_byte() -> None:
    client, server, _, _ = connected_pair()
    client.send_media(flv.SCRIPT, 0, METADATA)
    raw = client.data_to_send()
    assert amf0.encode("@setDataFrame") in raw  # on the wire, as publishers send it
    (event,) = server.receive_data(raw)
    assert event.data == METADATA and event.data.startswith(b"\x02\x00\x0aonMetaData")


def test_media_repr_hides_bytes() -> None:
    assert repr(Media(1, 8, 5, b"\x01\x02")) == "Media(stream_id=1, type=8, timestamp=5, len=2)"


def flv_tag(tag_type: int, timestamp: int, data: bytes) -> bytes:
    tag = flv.tag_header(tag_type, timestamp, len(data)) + data
    return tag + flv.previous_tag_size(tag)


def test_aggregate_messages_are_split_and_rebased() -> None:
    _client, server, _, _ = connected_pair()
    body = (
        flv_tag(flv.AUDIO, 5000, b"\xaf\x01a")
        + flv_tag(flv.VIDEO, 5040, b"\x27\x01b")
        + flv_tag(flv.SCRIPT, 5040, amf0.encode("@setDataFrame") + METADATA)
        + flv_tag(7, 5050, b"ignored")
        + flv_tag(flv.AUDIO, 5060, b"\xaf\x01c")[:-4]  # a missing last back pointer is tolerated
    )
    wire = Wire(4096)
    events = server.receive_data(wire.msg(4, m.AGGREGATE, 1, 100, body))
    assert [(e.type, e.timestamp, e.data) for e in events] == [
        (flv.AUDIO, 100, b"\xaf\x01a"),
        (flv.VIDEO, 140, b"\x27\x01b"),
        (flv.SCRIPT, 140, METADATA),
        (flv.AUDIO, 160, b"\xaf\x01c"),
    ]


def test_aggregate_overrun_is_a_message_error() -> None:
    _, server, _, _ = connected_pair()
    body = flv_tag(flv.AUDIO, 0, b"abc")[:12]
    with pytest.raises(MessageError, match="sub-tag at offset 0 declares 3 bytes, 1 left"):
        server.receive_data(Wire(4096).msg(4, m.AGGREGATE, 1, 0, body))


def test_media_while_publish_is_pending_is_refused() -> None:
    server = ServerSession()
    wire = Wire()
    events = server.receive_data(client_handshake() + wire.publish_flow())
    assert isinstance(events[-1], PublishRequested)
    with pytest.raises(MessageError, match="message stream 1, which is pending, not publishing"):
        server.receive_data(wire.msg(4, m.AUDIO, 1, 0, AAC_SEQUENCE_HEADER))


def test_error_keeps_the_events_completed_before_it() -> None:
    _, server, _, _ = connected_pair()
    wire = Wire(4096)
    data = wire.msg(4, m.AUDIO, 1, 0, b"\xaf\x01last") + wire.command("publish", 0.0, None, "x", stream_id=9)
    with pytest.raises(MessageError) as info:
        server.receive_data(data)
    assert info.value.events == [Media(1, flv.AUDIO, 0, b"\xaf\x01last")]


def test_limit_breach_keeps_its_fields_and_the_events_before_it() -> None:
    _, server, _, _ = connected_pair()
    wire = Wire(4096)
    command = wire.command("publish", 0.0, None, "x" * (server.limits.max_command_message + 1), stream_id=1)
    with pytest.raises(LimitExceeded) as info:
        server.receive_data(wire.msg(4, m.AUDIO, 1, 0, b"\xaf\x01last") + command)
    assert info.value.what == "max_command_message"
    assert info.value.limit == server.limits.max_command_message
    assert info.value.events == [Media(1, flv.AUDIO, 0, b"\xaf\x01last")]


# --- acknowledgements, ping, window ---------------------------------------------------------


def test_first_media_after_publish_is_acknowledged_at_once() -> None:
    """LiveKit's egress retries a dropped RTMP output only if the server acknowledged bytes."""
    client, server, _, _ = connected_pair(ServerSession(Limits(ack_window=2_500_000)))
    assert server.acks_sent == 0  # nothing before media: the publish alone is not progress
    server.receive_data(Wire().msg(2, m.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096)))  # as rtmp2sink does
    assert server.data_to_send() == b""
    client.send_media(flv.AUDIO, 0, AAC_SEQUENCE_HEADER)
    server.receive_data(client.data_to_send())
    acks = [e for e in client.receive_data(server.data_to_send()) if isinstance(e, AcknowledgementReceived)]
    assert acks == [AcknowledgementReceived(server.bytes_received)] and server.acks_sent == 1
    client.send_media(flv.AUDIO, 23, b"\xaf\x01" + bytes(400))
    server.receive_data(client.data_to_send())
    assert server.data_to_send() == b"" and server.acks_sent == 1  # then by the window again


def test_acknowledgements_every_window() -> None:
    window = 5000
    client, server, _, _ = connected_pair(ServerSession(Limits(ack_window=window)))
    acks: list[int] = []
    expected: list[int] = []
    last = 0  # acks count every byte since the connection opened, handshake included
    assert server.acks_sent == 0 and server.bytes_received < window
    for i in range(40):
        client.send_media(flv.AUDIO, i * 23, b"\xaf\x01" + bytes(400))
        server.receive_data(client.data_to_send())
        if i == 0 or server.bytes_received - last >= window:  # the first media at once, then by window
            expected.append(server.bytes_received)
            last = server.bytes_received
        acks += [
            e.sequence
            for e in client.receive_data(server.data_to_send())
            if isinstance(e, AcknowledgementReceived)
        ]
    assert acks == expected
    assert len(acks) == server.acks_sent >= 3


def test_peer_window_ack_size_sets_our_interval() -> None:
    client, server, _, _ = connected_pair(ServerSession(Limits(ack_window=1_000_000)))
    server.receive_data(Wire().msg(2, m.WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 500)))
    first = server.bytes_received  # over 500 already: acknowledged at once
    client.send_media(flv.AUDIO, 0, bytes(600))
    server.receive_data(client.data_to_send())
    events = client.receive_data(server.data_to_send())
    assert [e for e in events if isinstance(e, AcknowledgementReceived)] == [
        AcknowledgementReceived(first),
        AcknowledgementReceived(server.bytes_received),
    ]


def test_acknowledgement_sequence_wraps_at_32_bits() -> None:
    server = ServerSession(Limits(ack_window=100))
    tap = Tap()
    server.receive_data(client_handshake())
    tap(server.data_to_send())
    server.bytes_received = 2**32 - 10  # as if 4 GiB had gone by
    server.receive_data(Wire().msg(2, m.ACKNOWLEDGEMENT, 0, 0, bytes(4)))
    (ack,) = tap(server.data_to_send())
    assert ack.type == m.ACKNOWLEDGEMENT
    assert struct.unpack(">I", ack.body)[0] == (2**32 - 10 + 16) % 2**32


def test_ping_is_answered() -> None:
    client, server, _, _ = connected_pair()
    client.ping(123456)
    _, client_events = pump(client, server)
    assert client_events == [PingResponse(123456)]


def test_client_answers_server_pings() -> None:
    server = ServerSession()
    client = ClientSession("live", "key", "rtmp://host/live")
    tap = Tap()
    client.initiate()
    for _ in range(5):
        server.receive_data(tap_bytes := client.data_to_send())
        tap(tap_bytes)
        client.receive_data(server.data_to_send())
    server._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control(m.PING_REQUEST, 99))
    client.receive_data(server.data_to_send())
    (pong,) = tap(client.data_to_send())
    assert m.parse_user_control(pong.body) == (m.PING_RESPONSE, struct.pack(">I", 99))


# --- reject, unpublish, races ---------------------------------------------------------------


def test_reject_path() -> None:
    server = ServerSession()
    client = ClientSession("live", "bad", "rtmp://host/live")
    client.initiate()
    server_events, client_events = pump(client, server, accept=False)
    assert isinstance(server_events[-1], PublishRequested)
    server.reject_publish(1, "NetStream.Publish.BadName", "unknown or expired stream key")
    assert server.closing
    client_events = client.receive_data(server.data_to_send())
    assert client_events[-1] == PublishRejected("NetStream.Publish.BadName", "unknown or expired stream key")
    assert isinstance(client_events[0], Status) and client_events[0].level == "error"
    assert not client.publishing
    assert server.receive_data(b"anything after the refusal is ignored") == []


def test_reject_a_live_stream_later() -> None:
    client, server, _, _ = connected_pair()
    server.reject_publish(1, "NetStream.Publish.Unauthorized", "the app refused this key")
    events = client.receive_data(server.data_to_send())
    assert PublishRejected("NetStream.Publish.Unauthorized", "the app refused this key") in events


def test_unpublish_is_reported_once() -> None:
    client, server, _, _ = connected_pair()
    client.unpublish()  # FCUnpublish + deleteStream, like FFmpeg
    events, _ = pump(client, server)
    assert events == [Unpublished(1, "FCUnpublish")]


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (("deleteStream", 0.0, None, 1.0), "deleteStream"),
        (("deleteStream", 0.0, None, "key"), "deleteStream"),  # GStreamer sends the name
        (("FCUnpublish", 0.0, None, "other"), "FCUnpublish"),  # the only live stream
    ],
)
def test_unpublish_variants(command: tuple, reason: str) -> None:
    _, server, _, _ = connected_pair()
    assert server.receive_data(Wire().command(*command)) == [Unpublished(1, reason)]


def test_close_stream_allows_publishing_again() -> None:
    _, server, _, _ = connected_pair()
    wire = Wire()
    assert server.receive_data(wire.command("closeStream", 0.0, None, stream_id=1)) == [
        Unpublished(1, "closeStream")
    ]
    with pytest.raises(MessageError, match="message stream 1, which is created, not publishing"):
        server.receive_data(wire.msg(4, m.AUDIO, 1, 0, b"x"))


def test_accept_after_the_publisher_left_is_a_no_op() -> None:
    server = ServerSession()
    wire = Wire()
    server.receive_data(client_handshake() + wire.publish_flow())
    assert server.receive_data(wire.command("deleteStream", 0.0, None, 1.0)) == [
        Unpublished(1, "deleteStream")
    ]
    server.data_to_send()
    server.accept_publish(1)
    server.reject_publish(1, "NetStream.Publish.BadName", "late")
    assert server.data_to_send() == b"" and not server.closing
    with pytest.raises(LocalProtocolError):
        server.accept_publish(7)


def test_client_refuses_media_before_publish() -> None:
    client = ClientSession("live", "key", "rtmp://host/live")
    with pytest.raises(LocalProtocolError):
        client.send_media(flv.AUDIO, 0, b"x")


@pytest.mark.parametrize("digest", [False, True])
def test_digest_handshake_end_to_end(digest: bool) -> None:
    _, _, server_events, client_events = connected_pair(digest_handshake=digest)
    assert server_events[0] == HandshakeComplete(digest=digest)
    assert PublishStarted(1) in client_events


# --- splits and fuzzing ---------------------------------------------------------------------


def recorded_publisher() -> tuple[bytes, bytes]:
    """Client bytes of a whole session: (up to publish, media + unpublish)."""
    client = ClientSession("live", "key", "rtmp://host/live", 128, random_bytes=bytes)
    client.initiate()
    phase1 = publish_setup(client, ServerSession())
    phase2 = b""
    client.send_media(flv.SCRIPT, 0, METADATA)
    client.send_media(flv.AUDIO, 0, AAC_SEQUENCE_HEADER)
    for i in range(30):
        client.send_media(flv.AUDIO, 0xFFFF00 + i * 23, b"\xaf\x01" + bytes([i]) * (100 + 20 * i))
        client.send_media(flv.VIDEO, 0xFFFF00 + i * 40, b"\x27\x01" + bytes([i]) * 700)
    client.unpublish()
    phase2 = client.data_to_send()
    return phase1, phase2


PHASE1, PHASE2 = recorded_publisher()


def run_recorded(mode: str, seed: int = 0) -> list[Any]:
    server = ServerSession()
    events = feed_all(server.receive_data, PHASE1, mode, seed)
    server.accept_publish(1)
    return events + feed_all(server.receive_data, PHASE2, mode, seed)


REFERENCE = run_recorded("whole")


def test_reference_recording() -> None:
    assert types(REFERENCE[:3]) == [HandshakeComplete, Connect, PublishRequested]
    assert sum(isinstance(e, Media) for e in REFERENCE) == 62
    assert REFERENCE[-1] == Unpublished(1, "FCUnpublish")


@pytest.mark.parametrize("mode", SPLIT_MODES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_events_for_any_split(mode: str, seed: int) -> None:
    assert run_recorded(mode, seed) == REFERENCE


def live_server() -> ServerSession:
    server = ServerSession(Limits(max_message_size=1 << 16, max_chunk_size=1 << 16))
    server.receive_data(PHASE1)
    server.accept_publish(1)
    return server


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_after_publish_raise_only_protocol_errors(data: bytes) -> None:
    server = live_server()
    with contextlib.suppress(ProtocolError):
        server.receive_data(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(PHASE2) - 1), st.integers(1, 255)), min_size=1, max_size=6))
def test_corrupted_publisher_bytes_raise_only_protocol_errors(flips: list[tuple[int, int]]) -> None:
    data = bytearray(PHASE2)
    for pos, xor in flips:
        data[pos] ^= xor
    server = live_server()
    with contextlib.suppress(ProtocolError):
        server.receive_data(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_arbitrary_bytes_from_the_start_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        ServerSession().receive_data(client_handshake() + data)


def connected_client() -> ClientSession:
    client, _, _, _ = connected_pair()
    return client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_client_raises_only_protocol_errors(data: bytes) -> None:
    client = connected_client()
    with contextlib.suppress(ProtocolError):
        client.receive_data(data)


@pytest.mark.parametrize("stream_id", [float("inf"), float("nan"), 0.0, 1.5, "1", None])
def test_client_rejects_a_bad_create_stream_result(stream_id: object) -> None:
    server = ServerSession()
    client = ClientSession("live", "key", "rtmp://host/live")
    client.initiate()
    for _ in range(2):  # handshake, then connect answered: createStream is now in flight
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    server._send(m.CSID_COMMAND, m.COMMAND_AMF0, 0, m.encode_command("_result", 4.0, None, stream_id))
    events = client.receive_data(server.data_to_send())
    assert [type(e) for e in events] == [PublishRejected]
    assert client.stream_id is None
