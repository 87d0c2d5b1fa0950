"""Regenerate the committed seed corpus in fuzz/corpus/<parser>/ from the project's own encoders.

Seeds are valid inputs (a real publish session, frames of every type, keys,
proofs, FLV files) plus the broken fixtures from tests/relay_edge/rtmp/fixtures,
so each fuzzer starts deep inside its parser. Run: ``.venv/bin/python fuzz/make_corpus.py``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay_edge import auth, flv, keys, wire  # noqa: E402
from relay_edge.rtmp import amf0  # noqa: E402
from relay_edge.rtmp import messages as m  # noqa: E402
from relay_edge.rtmp.chunk import ChunkWriter  # noqa: E402
from relay_edge.rtmp.client import ClientSession  # noqa: E402
from relay_edge.rtmp.handshake import PACKET_SIZE, ClientHandshake  # noqa: E402
from tests.support.rtmpbytes import publish_setup  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
FIXTURES = ROOT / "tests" / "relay_edge" / "rtmp" / "fixtures"
SECRET = "fuzz-secret-0123456789"
NOW = 1_700_000_000.0
# Seeds are cut to fuzz/run's -max_len: a 1000-deep AMF prefix breaches the depth limit as well as 10000.
MAX_SEED = 8192
AAC_CONFIG = b"\xaf\x00\x12\x10"
AAC_FRAME = b"\xaf\x01" + bytes(range(32))


def save(parser: str, data: bytes) -> None:
    data = data[:MAX_SEED]
    folder = CORPUS / parser
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def publish_session() -> tuple[bytes, bytes]:
    """(whole client byte stream, the part after the handshake) of a real publish with two frames."""
    client = ClientSession("live", "name", "rtmp://127.0.0.1/live", chunk_size=128, random_bytes=bytes)
    client.initiate()
    sent = bytearray(publish_setup(client))
    client.send_media(flv.SCRIPT, 0, amf0.encode("onMetaData", {"duration": 0.0}))
    client.send_media(flv.AUDIO, 0, AAC_CONFIG)
    client.send_media(flv.AUDIO, 23, AAC_FRAME)
    client.unpublish()
    sent += client.data_to_send()
    return bytes(sent), bytes(sent[1 + 2 * PACKET_SIZE :])


def main() -> None:
    whole, after = publish_session()
    # handshake
    hs = ClientHandshake(False, bytes)
    hs.initiate()
    c0c1 = hs.data_to_send()
    save("handshake", c0c1 + bytes(PACKET_SIZE))
    hs = ClientHandshake(True, bytes)
    hs.initiate()
    save("handshake", hs.data_to_send() + bytes(PACKET_SIZE))
    save("handshake", b"\x06" + bytes(10))
    # session and chunk
    save("session", whole)
    save("session", after)
    save("chunk", after)
    writer = ChunkWriter(128)
    save("chunk", writer.write(3, m.COMMAND_AMF0, 0, 0, m.encode_command("connect", 1.0, {"app": "live"})))
    save("chunk", ChunkWriter(60).write(6, m.AUDIO, 1, 0xFFFFFF + 5, AAC_FRAME * 4))
    for fixture in sorted(FIXTURES.glob("session_*.bin")):
        data = fixture.read_bytes()
        if len(data) < 64 * 1024:
            # The session harness plays the handshake itself unless the input starts with C0.
            body = data[1 + 2 * PACKET_SIZE :] if data[:1] == b"\x03" else data
            save("session", body)
            save("chunk", body)
    # amf0
    save("amf0", m.encode_command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "fpad": False}))
    save("amf0", amf0.encode("onMetaData", amf0.ECMAArray({"duration": 1.5, "audiocodecid": 10.0})))
    save("amf0", amf0.encode(None, [1.0, "two", True, {"x": [None]}]))
    for fixture in sorted(FIXTURES.glob("amf_*.bin")):
        save("amf0", fixture.read_bytes()[:4096])
    # flv
    tags = [flv.Tag(flv.SCRIPT, 0, amf0.encode("onMetaData", {})), flv.Tag(flv.AUDIO, 0, AAC_CONFIG)]
    tags += [flv.Tag(flv.AUDIO, 23 * i, AAC_FRAME) for i in range(1, 4)]
    file = bytearray(flv.file_header(True, False))
    for tag in tags:
        file += tag.encode() + flv.previous_tag_size(tag.encode())
    save("flv", bytes(file))
    save("flv", tags[-1].encode())
    save("flv", flv.Tag(flv.VIDEO, 0xFFFFFFFF, b"\x17\x00\x00\x00\x00").encode())
    # Enhanced RTMP bodies (tagbody): FourCC start, multitrack ManyTracks, ModEx, cts, metadata.
    enhanced = [
        (flv.AUDIO, b"\x90OpusOpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
        (flv.AUDIO, b"\x95\x11Opus\x00\x00\x00\x02AA\x01\x00\x00\x03BBB"),
        (flv.AUDIO, b"\x95\x21Opus\x00\x00\x00\x01Amp4a\x01\x00\x00\x02BB"),
        (flv.AUDIO, b"\x97\x02\x00\x01\x00\x01Opus\xfc"),
        (flv.VIDEO, b"\x91hvc1\x00\x00\x50nal"),
        (flv.VIDEO, b"\x96\x11avc1\x00\x00\x00\x05\x00\x00\x28AB\x01\x00\x00\x04\x00\x00\x00C"),
        (flv.VIDEO, b"\xd4vp09\x02\x00\x09colorInfo"),
    ]
    for tag_type, body in enhanced:
        save("flv", flv.Tag(tag_type, 40, body).encode())
        save("flv", body)
    # wire
    frames = [
        wire.Hello(version=1, role="edge", instance="e1", name="edge", streams=(wire.ResumePoint("u", 3),)),
        wire.Open(
            sid=1,
            uid="u",
            name="n",
            publisher={"addr": "1.2.3.4:5", "app": "live"},
            codecs={"audio": "aac"},
            seq=1,
            resumed=False,
            header=flv.file_header(True, False),
            init=(tags[1].encode(),),
        ),
        wire.Accept(sid=1),
        wire.Reject(sid=1, code="forbidden", reason="no"),
        wire.Ack(sid=1, seq=9),
        wire.Gap(sid=1, seq=3, tags=2, bytes=100, ms=46),
        wire.Close(sid=None, reason="bye", code="shutdown"),
        wire.Ping(t=1.5),
    ]
    for frame in frames:
        save("wire", wire.encode(frame))
    save("wire", wire.encode_data(1, 1, [t.encode() for t in tags]))
    save("wire", wire.encode_many(frames))
    # keys: stream keys, publish names, proofs, hostile names
    key = keys.mint_key(SECRET, "stream_1", 600, now=NOW)
    for text in (
        key,
        key + "?user=a&x=1",
        "stream_1",
        "stream_1.1700000600.AAAAAAAAAAAAAAAAAAAAAA",
        "../../etc/passwd",
        "a\x00b",
        "CON.txt",
        auth.make_proof(SECRET, "edge", NOW),
        auth.make_proof(SECRET, "client", NOW, nonce=bytes(16)),
        "2.edge.1.AAAAAAAAAAAAAAAA.x",
    ):
        save("keys", text.encode("utf-8"))


if __name__ == "__main__":
    main()
