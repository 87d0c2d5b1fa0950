"""How the invalid and truncated wire samples in ``fixtures/`` were made, and what each must raise.

``test_rtmp_fixtures.py`` checks every committed ``.bin`` still equals what its
builder makes here, then feeds it to its parser. Regenerate after an
intentional change with::

    .venv/bin/python tests/relay_edge/rtmp/rtmp_fixtures.py
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtmp_support import Wire, client_handshake

from relay_edge.errors import AMFError, ChunkError, HandshakeError, LimitExceeded, MessageError
from relay_edge.rtmp import amf0
from relay_edge.rtmp import messages as m

FIXTURES_DIR = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Fixture:
    build: Callable[[], bytes]
    target: str  # "session": ServerSession.receive_data; "amf0": amf0.decode
    error: type[Exception] | None  # None: a truncated sample that must raise nothing
    message: str = ""
    events: tuple[str, ...] = ()  # event class names completed before the error / the cut


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _connected(chunk_size: int = 128) -> tuple[Wire, bytes]:
    wire = Wire(chunk_size)
    return wire, client_handshake() + wire.connect()


def _protocol(msg_type: int, body: bytes) -> bytes:
    return Wire().msg(m.CSID_PROTOCOL, msg_type, 0, 0, body)


def tls_client_hello() -> bytes:
    # The first bytes of a TLS 1.2 ClientHello record: what an rtmps:// publisher sends.
    return bytes.fromhex("16030100f8010000f40303") + bytes(32)


def chunk_size_message(value: int) -> bytes:
    return client_handshake() + _protocol(m.SET_CHUNK_SIZE, u32(value))


def message_16mib() -> bytes:
    _, data = _connected()
    # A format-0 header declaring 0xFFFFFF (16 MiB - 1) body bytes, and the first chunk.
    return data + b"\x06" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x09" + struct.pack("<I", 1) + bytes(128)


def amf_10000_deep() -> bytes:
    return b"\x0a\x00\x00\x00\x01" * 10_000 + b"\x05"


def connect_10000_deep() -> bytes:
    body = amf0.encode("connect", 1.0, {"app": "live"}) + amf_10000_deep()
    return client_handshake() + Wire().msg(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)


def unknown_continuation() -> bytes:
    return client_handshake() + b"\xc5" + bytes(16)


def format1_first() -> bytes:
    return client_handshake() + b"\x45" + b"\x00\x00\x00" + b"\x00\x00\x04" + b"\x08" + bytes(4)


def format0_mid_message() -> bytes:
    head = b"\x04" + b"\x00\x00\x00" + b"\x00\x01\x2c" + b"\x14" + struct.pack("<I", 1)  # a 300-byte command
    return client_handshake() + head + bytes(128) + head


def media_before_publish() -> bytes:
    wire, data = _connected()
    data += wire.command("createStream", 2.0, None)
    return data + wire.msg(m.CSID_AUDIO, m.AUDIO, 1, 0, b"\xaf\x00\x12\x10")


def command_before_connect() -> bytes:
    return client_handshake() + Wire().command("createStream", 2.0, None)


def command_without_name() -> bytes:
    body = amf0.encode(1.0, "connect")
    return client_handshake() + Wire().msg(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)


def connect_truncated_amf() -> bytes:
    body = amf0.encode("connect", 1.0) + b"\x03\x00\x03app\x02\x00\x10live"  # string says 16 bytes, has 4
    return client_handshake() + Wire().msg(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, body)


def publish_unknown_stream() -> bytes:
    wire, data = _connected()
    return data + wire.command("publish", 0.0, None, "key", "live", stream_id=5)


def too_many_streams() -> bytes:
    wire, data = _connected()
    return data + b"".join(wire.command("createStream", float(i), None) for i in range(2, 11))


def second_connect() -> bytes:
    wire, data = _connected()
    return data + wire.connect()


def window_ack_zero() -> bytes:
    return client_handshake() + _protocol(m.WINDOW_ACK_SIZE, u32(0))


def short_ping() -> bytes:
    return client_handshake() + _protocol(m.USER_CONTROL, b"\x00\x06\x00\x01")


def truncated_handshake() -> bytes:
    return client_handshake()[:1000]


def truncated_connect() -> bytes:
    data = client_handshake() + Wire().connect()
    return data[:-10]


def truncated_publish() -> bytes:
    wire, data = _connected()
    flow = wire.command("createStream", 2.0, None) + wire.command(
        "publish", 0.0, None, "key", "live", stream_id=1
    )
    return data + flow[:-5]


FIXTURES: dict[str, Fixture] = {
    # --- session: handshake ---
    "session_bad_version.bin": Fixture(
        lambda: b"\x06" + bytes(1536),
        "session",
        HandshakeError,
        "unsupported RTMP version 6 in C0 (only 3 is supported) (RTMPE encryption is not supported)",
    ),
    "session_tls_client_hello.bin": Fixture(
        tls_client_hello,
        "session",
        HandshakeError,
        "unsupported RTMP version 22 in C0 (only 3 is supported) "
        "(a TLS ClientHello: rtmps:// sent to a plain rtmp:// port)",
    ),
    # --- session: chunk stream ---
    "session_chunk_size_0.bin": Fixture(
        lambda: chunk_size_message(0),
        "session",
        ChunkError,
        "Set Chunk Size 0 is invalid (must be at least 1)",
        ("HandshakeComplete",),
    ),
    "session_chunk_size_0x7fffffff.bin": Fixture(
        lambda: chunk_size_message(0x7FFFFFFF),
        "session",
        LimitExceeded,
        "max_chunk_size: 2147483647 bytes exceeds limit of 1048576 bytes",
        ("HandshakeComplete",),
    ),
    "session_chunk_size_top_bit.bin": Fixture(
        lambda: chunk_size_message(0x80000000),
        "session",
        ChunkError,
        "Set Chunk Size 2147483648 has the reserved top bit set",
        ("HandshakeComplete",),
    ),
    "session_message_16mib.bin": Fixture(
        message_16mib,
        "session",
        LimitExceeded,
        "max_message_size: 16777215 bytes exceeds limit of 10485760 bytes",
        ("HandshakeComplete", "Connect"),
    ),
    "session_unknown_continuation.bin": Fixture(
        unknown_continuation,
        "session",
        ChunkError,
        "chunk stream 5: format 3 header with no previous message header",
        ("HandshakeComplete",),
    ),
    "session_format1_first.bin": Fixture(
        format1_first,
        "session",
        ChunkError,
        "chunk stream 5: format 1 header with no previous format 0 header",
        ("HandshakeComplete",),
    ),
    "session_format0_mid_message.bin": Fixture(
        format0_mid_message,
        "session",
        ChunkError,
        "chunk stream 4: format 0 header while a 300-byte message has 172 bytes left (expected format 3)",
        ("HandshakeComplete",),
    ),
    # --- session: AMF and commands ---
    "session_connect_10000_deep.bin": Fixture(
        connect_10000_deep,
        "session",
        LimitExceeded,
        "amf_max_depth: 33 levels exceeds limit of 32 levels",
        ("HandshakeComplete",),
    ),
    "session_connect_truncated_amf.bin": Fixture(
        connect_truncated_amf,
        "session",
        AMFError,
        "truncated AMF0 string at offset 28: need 16 bytes, have 4",
        ("HandshakeComplete",),
    ),
    "session_command_without_name.bin": Fixture(
        command_without_name,
        "session",
        MessageError,
        "command message does not start with a command name string",
        ("HandshakeComplete",),
    ),
    "session_command_before_connect.bin": Fixture(
        command_before_connect,
        "session",
        MessageError,
        "command 'createStream' before connect",
        ("HandshakeComplete",),
    ),
    "session_second_connect.bin": Fixture(
        second_connect,
        "session",
        MessageError,
        "second connect on one connection",
        ("HandshakeComplete", "Connect"),
    ),
    "session_media_before_publish.bin": Fixture(
        media_before_publish,
        "session",
        MessageError,
        "media message (type 8) on message stream 1, which is created, not publishing",
        ("HandshakeComplete", "Connect"),
    ),
    "session_publish_unknown_stream.bin": Fixture(
        publish_unknown_stream,
        "session",
        MessageError,
        "publish on message stream 5, which createStream did not return",
        ("HandshakeComplete", "Connect"),
    ),
    "session_too_many_streams.bin": Fixture(
        too_many_streams,
        "session",
        LimitExceeded,
        "max_message_streams: 9 streams exceeds limit of 8 streams",
        ("HandshakeComplete", "Connect"),
    ),
    "session_window_ack_0.bin": Fixture(
        window_ack_zero,
        "session",
        MessageError,
        "Window Acknowledgement Size 0 is invalid",
        ("HandshakeComplete",),
    ),
    "session_short_ping.bin": Fixture(
        short_ping,
        "session",
        MessageError,
        "Ping Request message of 2 bytes (needs 4)",
        ("HandshakeComplete",),
    ),
    # --- session: truncated, valid so far: no error, only the events completed ---
    "session_truncated_handshake.bin": Fixture(truncated_handshake, "session", None),
    "session_truncated_connect.bin": Fixture(truncated_connect, "session", None, "", ("HandshakeComplete",)),
    "session_truncated_publish.bin": Fixture(
        truncated_publish, "session", None, "", ("HandshakeComplete", "Connect")
    ),
    # --- AMF0 values ---
    "amf_10000_deep.bin": Fixture(
        amf_10000_deep, "amf0", LimitExceeded, "amf_max_depth: 33 levels exceeds limit of 32 levels"
    ),
    "amf_truncated_string.bin": Fixture(
        lambda: b"\x02\x00\x0aabc",
        "amf0",
        AMFError,
        "truncated AMF0 string at offset 3: need 10 bytes, have 3",
    ),
    "amf_unterminated_object.bin": Fixture(
        lambda: b"\x03\x00\x01a\x05",
        "amf0",
        AMFError,
        "truncated AMF0 object key or end marker at offset 5: need 3 bytes, have 0",
    ),
    "amf_reference.bin": Fixture(
        lambda: b"\x0a\x00\x00\x00\x01\x07\x00\x00",
        "amf0",
        AMFError,
        "unsupported AMF0 type 0x07 (reference) at offset 5",
    ),
    "amf_long_string_4gib.bin": Fixture(
        lambda: b"\x0c\xff\xff\xff\xff" + b"x" * 16,
        "amf0",
        LimitExceeded,
        "amf_max_string: 4294967295 bytes exceeds limit of 65536 bytes",
    ),
    "amf_strict_array_4g_items.bin": Fixture(
        lambda: b"\x0a\xff\xff\xff\xff\x05",
        "amf0",
        LimitExceeded,
        "amf_max_items: 4294967295 items exceeds limit of 4096 items",
    ),
    "amf_bad_utf8.bin": Fixture(
        lambda: b"\x03\x00\x02\xc3\x28\x05\x00\x00\x09",
        "amf0",
        AMFError,
        "invalid UTF-8 in AMF0 object key at offset 3",
    ),
}


def write_all() -> None:
    FIXTURES_DIR.mkdir(exist_ok=True)
    for name, fixture in FIXTURES.items():
        (FIXTURES_DIR / name).write_bytes(fixture.build())


if __name__ == "__main__":
    write_all()
