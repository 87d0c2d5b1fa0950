"""The pre-auth budget of ServerSession: what an unauthenticated connection may make us hold or decode.

Each refusal is asserted to happen on the *declared* length or type, with only the message's header
fed: no payload byte was needed to decide.
"""

from __future__ import annotations

import pytest
from rtmp_support import SPLIT_MODES, Wire, client_handshake, connected_pair, feed_all

from relay_edge import flv
from relay_edge.errors import LimitExceeded, MessageError
from relay_edge.limits import DEFAULT_LIMITS, KIB, MIB, Limits
from relay_edge.rtmp import Media, PublishRequested, ServerSession, amf0
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkWriter

SHARED_OBJECT = m.SHARED_OBJECT_AMF0  # neither a command nor media: only the size limits apply to it


def header_only(msg_type: int, length: int, stream_id: int = 0, csid: int = 3) -> bytes:
    """The first chunk header of a ``length``-byte message, without any payload."""
    whole = ChunkWriter().write(csid, msg_type, stream_id, 0, bytes(length))
    return whole[:12]  # 1-byte basic header + 11-byte format-0 header


def connected(limits: Limits = DEFAULT_LIMITS) -> tuple[ServerSession, Wire]:
    server = ServerSession(limits)
    wire = Wire()
    server.receive_data(client_handshake() + wire.connect())
    assert server.connected
    return server, wire


@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_a_large_message_before_publish_is_refused_at_its_header(mode: str) -> None:
    server, _ = connected()
    with pytest.raises(LimitExceeded) as info:
        feed_all(server.receive_data, header_only(SHARED_OBJECT, 64 * KIB + 1), mode)
    assert str(info.value) == "preauth_max_message: 65537 bytes exceeds limit of 65536 bytes"
    assert info.value.what == "preauth_max_message"


def test_the_same_message_is_fine_after_a_publish_is_accepted() -> None:
    _, server, _, _ = connected_pair()
    assert server.authorized
    wire = Wire(4096)
    server.receive_data(wire.msg(3, SHARED_OBJECT, 0, 0, bytes(64 * KIB + 1)))  # no error: post-auth limits
    events = server.receive_data(wire.msg(4, m.AUDIO, 1, 0, b"\xaf\x01" + bytes(MIB)))
    assert [type(e) for e in events] == [Media] and len(events[0].data) == MIB + 2


@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_media_on_a_stream_not_publishing_is_refused_at_its_header(mode: str) -> None:
    server, wire = connected()
    server.receive_data(wire.command("createStream", 2.0, None))
    with pytest.raises(MessageError, match="message stream 1, which is created, not publishing"):
        feed_all(server.receive_data, header_only(m.VIDEO, 4 * MIB, stream_id=1, csid=6), mode)


def test_media_on_a_stream_never_created_is_refused_at_its_header() -> None:
    server, _ = connected()
    with pytest.raises(MessageError, match="message stream 1, which is not created, not publishing"):
        server.receive_data(header_only(m.DATA_AMF0, 100, stream_id=1, csid=5))


def test_a_large_command_is_refused_at_its_header_even_after_publish() -> None:
    _, server, _, _ = connected_pair()
    with pytest.raises(LimitExceeded, match="max_command_message: 10485760 bytes exceeds limit of 65536"):
        server.receive_data(header_only(m.COMMAND_AMF0, 10 * MIB))


def unfinished(csid: int, chunks: int = 400) -> bytes:
    """The first ``chunks`` + 1 chunks (51,328 payload bytes) of a 60 KiB message, cut at a chunk boundary."""
    return ChunkWriter(128).write(csid, SHARED_OBJECT, 0, 0, bytes(60 * KIB))[: 12 + 128 + chunks * 129]


def test_unfinished_messages_before_publish_are_capped_across_chunk_streams() -> None:
    server, _ = connected()
    server.receive_data(unfinished(10))  # 50 KiB held: within the budget
    with pytest.raises(LimitExceeded) as info:
        server.receive_data(unfinished(11))  # two messages, each within preauth_max_message
    assert info.value.what == "preauth_partial_bytes"
    assert info.value.limit == 64 * KIB


def test_after_publish_the_partial_cap_is_max_partial_bytes() -> None:
    _, server, _, _ = connected_pair(chunk_size=128)
    assert server.receive_data(unfinished(10) + unfinished(11) + unfinished(12)) == []  # 150 KiB held: fine


def test_the_budget_follows_the_limits() -> None:
    limits = Limits(preauth_max_message=1000, max_command_message=2000)
    server, _ = connected(limits)
    with pytest.raises(LimitExceeded, match="preauth_max_message: 1001 bytes"):
        server.receive_data(header_only(SHARED_OBJECT, 1001))


def test_publish_is_what_lifts_the_budget_not_connect() -> None:
    server = ServerSession()
    wire = Wire()
    events = server.receive_data(client_handshake() + wire.publish_flow())
    assert isinstance(events[-1], PublishRequested) and not server.authorized  # pending is not accepted
    server.accept_publish(1)
    assert server.authorized


# --- commands: name first, bounded decode ---------------------------------------------------------


def test_an_unknown_command_body_is_never_decoded() -> None:
    server, wire = connected()
    # A valid name, then bytes no AMF0 decoder accepts (0x07 is a reference): never looked at.
    body = amf0.encode("onBWDone") + b"\x07\x00\x01" + bytes(1000)
    assert server.receive_data(wire.msg(3, m.COMMAND_AMF0, 0, 0, body)) == []
    assert m.decode_command(body, wanted=frozenset({"connect"})).name == "onBWDone"


def test_a_known_command_stops_decoding_at_amf_max_values() -> None:
    server, wire = connected()
    body = amf0.encode("createStream", 2.0, None) + amf0.encode(0.0) * 5000  # 45 KB: within the size limits
    with pytest.raises(LimitExceeded) as info:
        server.receive_data(wire.msg(3, m.COMMAND_AMF0, 0, 0, body))
    assert str(info.value) == "amf_max_values: 257 values exceeds limit of 256 values"


def test_amf_max_values_counts_nested_values() -> None:
    data = amf0.encode({"a": [1.0, 2.0, {"b": 3.0}]}, 4.0)  # object, array, 1, 2, object, 3, then 4: 7
    assert amf0.decode(data, Limits(amf_max_values=7)) == [{"a": [1.0, 2.0, {"b": 3.0}]}, 4.0]
    with pytest.raises(LimitExceeded, match="amf_max_values: 7 values exceeds limit of 6"):
        amf0.decode(data, Limits(amf_max_values=6))


def test_aac_audio_after_publish_still_flows_byte_for_byte() -> None:
    client, server, _, _ = connected_pair()
    client.send_media(flv.AUDIO, 0, b"\xaf\x00\x12\x10")
    events = server.receive_data(client.data_to_send())
    assert events == [Media(1, flv.AUDIO, 0, b"\xaf\x00\x12\x10")]
