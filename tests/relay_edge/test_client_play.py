"""ClientSession in play mode: in memory against ServerSession and hand-built server bytes, then
as a real player of nginx-rtmp while a second ClientSession publishes to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay_edge import flv
from relay_edge.errors import LocalProtocolError
from relay_edge.flv import Tag
from relay_edge.limits import Limits
from relay_edge.rtmp import (
    AcknowledgementReceived,
    ClientSession,
    Connected,
    Media,
    PlayStarted,
    PublishRejected,
    PublishStarted,
    ServerSession,
    Status,
    amf0,
)
from relay_edge.rtmp import messages as m
from relay_edge.rtmp.chunk import ChunkReader, ChunkWriter, Message
from relay_edge.rtmp.handshake import PACKET_SIZE
from tests.support.media import audio_payloads, read_tags, tone_flv
from tests.support.nginx import NginxRtmp, strip_injected_header

C0_C1_C2 = 1 + 2 * PACKET_SIZE
AAC_HEADER = b"\xaf\x00\x12\x10"


def player(**kwargs: Any) -> ClientSession:
    return ClientSession("live", "key", "rtmp://host/live", play=True, random_bytes=bytes, **kwargs)


def pump(client: ClientSession, server: ServerSession, sent: bytearray) -> list[Any]:
    """Move bytes both ways until quiet; keep what the client sent in ``sent``. Returns client events."""
    events: list[Any] = []
    for _ in range(20):
        out = client.data_to_send()
        sent += out
        server.receive_data(out)
        answer = server.data_to_send()
        if not out and not answer:
            break
        events.extend(client.receive_data(answer))
    return events


def client_messages(sent: bytes) -> list[Message]:
    """The chunk messages a client sent, after its C0+C1+C2."""
    return ChunkReader().feed(sent[C0_C1_C2:])


def played_pair(**kwargs: Any) -> tuple[ClientSession, bytearray, list[Any]]:
    """A player pumped against ServerSession through connect, createStream and play."""
    client, sent = player(**kwargs), bytearray()
    client.initiate()
    events = pump(client, ServerSession(Limits(ack_window=1000)), sent)
    return client, sent, events


class ServerWire:
    """Server -> client messages, after the chunk size ServerSession announced at connect."""

    def __init__(self) -> None:
        self.writer = ChunkWriter(m.OUT_CHUNK_SIZE)

    def status(self, stream_id: int, level: str, code: str) -> bytes:
        body = m.encode_command("onStatus", 0.0, None, m.status_info(level, code, code))
        return self.writer.write(m.CSID_STREAM_COMMAND, m.COMMAND_AMF0, stream_id, 0, body)

    def msg(self, csid: int, msg_type: int, stream_id: int, timestamp: int, body: bytes) -> bytes:
        return self.writer.write(csid, msg_type, stream_id, timestamp, body)


# --- in memory ----------------------------------------------------------------------------------


def test_play_mode_sends_create_stream_play_and_buffer_length_not_fcpublish() -> None:
    client, sent, events = played_pair()
    assert [type(e) for e in events if not isinstance(e, AcknowledgementReceived)] == [Connected]
    assert client.stream_id == 1 and not client.playing
    msgs = client_messages(sent)
    calls = [m.decode_command(msg.body) for msg in msgs if msg.type == m.COMMAND_AMF0]
    assert [c.name for c in calls] == ["connect", "createStream", "play"]
    play = next(msg for msg in msgs if msg.type == m.COMMAND_AMF0 and msg.stream_id == 1)
    assert play.csid == m.CSID_STREAM_COMMAND
    assert m.decode_command(play.body)[2:] == (None, ["key", -2000.0])  # FFmpeg's gen_play
    (buffer,) = [msg for msg in msgs if msg.type == m.USER_CONTROL]
    assert (buffer.csid, buffer.stream_id) == (m.CSID_PROTOCOL, 0)
    assert buffer.body == m.user_control(m.SET_BUFFER_LENGTH, 1, 3000)


def test_play_mode_refuses_send_media() -> None:
    client, _, _ = played_pair()
    with pytest.raises(LocalProtocolError, match="playing"):
        client.send_media(flv.AUDIO, 0, AAC_HEADER)


def test_played_messages_become_media_events_and_are_acknowledged() -> None:
    client, sent, _ = played_pair()
    wire = ServerWire()
    events = client.receive_data(wire.status(1, "status", "NetStream.Play.Start"))
    assert events[-1] == PlayStarted(1) and client.playing
    sent += client.data_to_send()
    before = len(client_messages(sent))
    metadata = amf0.encode("onMetaData", amf0.ECMAArray(duration=0.0))
    sub_tags = b"".join(
        Tag(t, ts, body).encode() + m.u32(11 + len(body))
        for t, ts, body in [(flv.AUDIO, 500, b"\xaf\x01a"), (flv.VIDEO, 520, b"\x17\x01v")]
    )
    data = (
        wire.msg(m.CSID_PROTOCOL, m.USER_CONTROL, 0, 0, m.user_control(m.STREAM_BEGIN, 1))
        + wire.msg(m.CSID_DATA, m.DATA_AMF0, 1, 0, amf0.encode(m.SET_DATA_FRAME) + metadata)
        + wire.msg(m.CSID_AUDIO, m.AUDIO, 1, 0, AAC_HEADER)
        + wire.msg(m.CSID_AUDIO, m.AUDIO, 1, 23, b"\xaf\x01" + bytes(1200))
        + wire.msg(m.CSID_VIDEO, m.AGGREGATE, 1, 100, sub_tags)
    )
    events = client.receive_data(data)
    assert [(e.stream_id, e.type, e.timestamp, e.data) for e in events] == [
        (1, flv.SCRIPT, 0, metadata),
        (1, flv.AUDIO, 0, AAC_HEADER),
        (1, flv.AUDIO, 23, b"\xaf\x01" + bytes(1200)),
        (1, flv.AUDIO, 100, b"\xaf\x01a"),
        (1, flv.VIDEO, 120, b"\x17\x01v"),
    ]
    # ServerSession announced a 1000-byte window: the 1.3 kB of media must be acknowledged.
    sent += client.data_to_send()
    (ack,) = client_messages(sent)[before:]
    assert (ack.type, m.read_u32(ack.body, "ack")) == (m.ACKNOWLEDGEMENT, client.bytes_received)


def test_play_errors_are_publish_rejected_and_stop_playing() -> None:
    client, _, _ = played_pair()
    wire = ServerWire()
    client.receive_data(wire.status(1, "status", "NetStream.Play.Start"))
    events = client.receive_data(wire.status(1, "error", "NetStream.Play.StreamNotFound"))
    assert isinstance(events[0], Status)
    assert events[1] == PublishRejected("NetStream.Play.StreamNotFound", "NetStream.Play.StreamNotFound")
    assert not client.playing


def test_unpublish_of_a_player_sends_delete_stream_only() -> None:
    client, sent, _ = played_pair()
    before = len(client_messages(sent))
    client.unpublish()
    sent += client.data_to_send()
    (delete,) = client_messages(sent)[before:]
    command = m.decode_command(delete.body)
    assert (command.name, command.args) == ("deleteStream", [1.0])
    assert client.stream_id is None and not client.playing


# --- against nginx-rtmp -------------------------------------------------------------------------


class Peer:
    """A ClientSession over an asyncio TCP connection, pumped until a condition holds."""

    def __init__(self, session: ClientSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.session, self.reader, self.writer = session, reader, writer
        self.events: list[Any] = []

    @classmethod
    async def open(cls, nginx: NginxRtmp, name: str, play: bool = False) -> Peer:
        reader, writer = await asyncio.open_connection(nginx.host, nginx.port)
        tc_url = f"rtmp://{nginx.host}:{nginx.port}/{nginx.app}"
        peer = cls(ClientSession(nginx.app, name, tc_url, play=play), reader, writer)
        peer.session.initiate()
        return peer

    async def flush(self) -> None:
        self.writer.write(self.session.data_to_send())
        await self.writer.drain()

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Send what is due, feed what arrives, until ``done()``; fail on EOF, refusal or timeout."""

        async def run() -> None:
            while True:
                await self.flush()
                if done():
                    return
                data = await self.reader.read(65536)
                assert data, f"nginx closed the connection; events: {self.events}"
                self.events.extend(self.session.receive_data(data))
                rejected = [e for e in self.events if isinstance(e, PublishRejected)]
                assert not rejected, rejected

        await asyncio.wait_for(run(), timeout)

    def codes(self) -> list[str]:
        return [e.code for e in self.events if isinstance(e, Status)]

    def close(self) -> None:
        self.writer.close()


@pytest.mark.slow
async def test_player_gets_what_a_publisher_sends_through_nginx(tmp_path: Path) -> None:
    tags = read_tags(tone_flv(tmp_path / "t.flv", seconds=2))
    async with NginxRtmp(tmp_path / "nginx") as nginx:
        player = await Peer.open(nginx, "tone", play=True)
        publisher: Peer | None = None
        try:
            # nginx keeps idle players: Play.Start comes before anyone publishes.
            await player.until(lambda: player.session.playing)
            assert PlayStarted(player.session.stream_id) in player.events  # type: ignore[arg-type]
            publisher = await Peer.open(nginx, "tone")
            await publisher.until(lambda: publisher.session.publishing)
            assert any(isinstance(e, PublishStarted) for e in publisher.events)
            for tag in tags:  # sequence header first (the file's order), then the frames; no pacing
                publisher.session.send_media(tag.type, tag.timestamp, tag.data)
            publisher.session.unpublish()
            await publisher.flush()
            # publish_notify on: UnpublishNotify follows the last relayed message.
            await player.until(lambda: "NetStream.Play.UnpublishNotify" in player.codes())
        finally:
            player.close()
            if publisher is not None:
                publisher.close()
    media = [e for e in player.events if isinstance(e, Media)]
    assert {e.stream_id for e in media} == {player.session.stream_id}
    scripts = [e.data for e in media if e.type == flv.SCRIPT]  # nginx sends its own onMetaData
    assert any(data.startswith(amf0.encode("onMetaData")) for data in scripts)
    received = strip_injected_header([Tag(e.type, e.timestamp, e.data) for e in media])
    sent_audio = [t for t in tags if t.type == flv.AUDIO]
    got_audio = [t for t in received if t.type == flv.AUDIO]
    assert audio_payloads(got_audio) == audio_payloads(sent_audio)
    stamps = [t.timestamp for t in got_audio]
    assert stamps == sorted(stamps)
    assert stamps == [t.timestamp for t in sent_audio]  # a player that joined first: absolute stamps
