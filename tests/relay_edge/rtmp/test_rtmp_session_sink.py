"""``ServerSession.receive_data(data, tags)``: the pump's per-tag path gives what Media events give.

A publisher's bytes (our ClientSession: handshake, connect, publish, then audio, video, script
data, pings and an unpublish) are read in random splits by two sessions, one returning every
tag as a Media event, one handing tags to a sink. Per read, the sink's calls come first, then
the events: together they must be the same sequence, and the same Acknowledgements go out.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from relay_edge import flv
from relay_edge.rtmp.client import ClientSession
from relay_edge.rtmp.events import Media, PublishRequested
from relay_edge.rtmp.session import ServerSession
from tests.support.rtmpbytes import publish_setup


def _publisher_bytes(kinds: list[int], chunk_size: int) -> tuple[bytes, bytes]:
    """Set-up bytes (to the publish) and then the media and unpublish bytes of one publisher."""
    client = ClientSession("live", "cam", "rtmp://127.0.0.1/live", chunk_size=chunk_size)
    client.initiate()
    setup = publish_setup(client)
    bodies = {
        0: (flv.AUDIO, b"\xaf\x01" + bytes(range(40))),
        1: (flv.VIDEO, b"\x27\x01\x00\x00\x00" + bytes(300)),
        2: (flv.SCRIPT, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"),
    }
    for i, kind in enumerate(kinds):
        if kind == 3:
            client.ping(i)
        else:
            tag_type, body = bodies[kind]
            client.send_media(tag_type, i * 23, body)
    client.unpublish()
    return setup, client.data_to_send()


def _read(setup: bytes, media: bytes, cuts: list[int], sink: bool) -> tuple[list[object], bytes]:
    server = ServerSession(random_bytes=lambda n: bytes(n))
    for event in server.receive_data(setup):
        if isinstance(event, PublishRequested):
            server.accept_publish(event.stream_id)
    server.data_to_send()
    seen: list[object] = []
    acks = bytearray()

    def tag(stream_id: int, tag_type: int, timestamp: int, data: bytes) -> None:
        seen.append(Media(stream_id, tag_type, timestamp, data))

    bounds = [0, *sorted(c % (len(media) + 1) for c in cuts), len(media)]
    for start, end in itertools.pairwise(bounds):
        seen.extend(server.receive_data(media[start:end], tag if sink else None))
        acks += server.data_to_send()
    return seen, bytes(acks)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), min_size=1, max_size=40),
    st.lists(st.integers(0, 10**6), max_size=12),
    st.sampled_from([128, 4096]),
)
def test_the_tag_sink_sees_what_media_events_would_in_the_same_order(
    kinds: list[int], cuts: list[int], chunk_size: int
) -> None:
    setup, media = _publisher_bytes(kinds, chunk_size)
    events, acks = _read(setup, media, cuts, sink=False)
    sunk, sunk_acks = _read(setup, media, cuts, sink=True)
    assert sunk == events
    assert sunk_acks == acks
    assert sum(isinstance(e, Media) for e in events) == sum(k != 3 for k in kinds)


def test_a_tag_after_another_event_of_its_read_stays_an_event() -> None:
    """A script tag (an event) first: the audio after it in the same read is a Media event too."""
    setup, media = _publisher_bytes([2, 0, 0], 4096)
    server = ServerSession(random_bytes=lambda n: bytes(n))
    for event in server.receive_data(setup):
        if isinstance(event, PublishRequested):
            server.accept_publish(event.stream_id)
    sunk: list[int] = []
    events = server.receive_data(media, lambda sid, t, ts, data: sunk.append(t))
    assert sunk == []
    assert [e.type for e in events if isinstance(e, Media)] == [flv.SCRIPT, flv.AUDIO, flv.AUDIO]
