"""Every bound rtmp-relay enforces, in one place, with where the number comes from.

A breach closes the one connection (or drops from the one stream buffer) that
caused it, with a logged reason naming the field below; nothing else is
affected. ``docs/LIMITS.md`` is the user-facing table of the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    # --- RTMP ingest: connections -------------------------------------------------
    # Seconds for C0+C1+C2. Real publishers finish in one RTT; 10 s covers a
    # congested mobile uplink and still frees a stalled socket quickly.
    handshake_timeout: float = 10.0
    # Seconds without any bytes from a publisher before we drop it. LiveKit
    # egress sends audio every ~23 ms; 30 s is far beyond any real pause.
    idle_timeout: float = 30.0
    # Concurrent RTMP connections, in total and from one IP address. A small
    # edge carries hundreds of audio streams; a single host rarely needs more
    # than a handful (LiveKit egress uses one connection per egress).
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    # Live published streams on one edge.
    max_streams: int = 500
    # Seconds from TCP accept to an accepted publish, however slowly the bytes come:
    # otherwise a client dripping a byte a second resets idle_timeout forever. Real
    # publishers take one to three round trips (nginx-rtmp answers in ~175 ms).
    publish_timeout: float = 10.0
    # Seconds a stream whose publisher vanished without unpublishing waits for
    # the same key to come back. LiveKit egress retries its RTMP sink for 30 s.
    reconnect_grace: float = 30.0

    # --- RTMP chunk stream -------------------------------------------------------
    # Largest Set Chunk Size we accept. Publishers use 128 (LiveKit, GStreamer)
    # to 65536 (some encoders); the spec allows 2**31-1, which only serves to
    # make us buffer a huge chunk.
    max_chunk_size: int = 1 * MIB
    # Largest RTMP message body, checked on the declared length before reading.
    # MediaMTX uses 10 MiB; a 4K H.264 keyframe at high bitrate is ~3 MB.
    max_message_size: int = 10 * MIB
    # Bytes held in half-received messages across all chunk streams of one
    # connection. Without it, 64 chunk streams each holding most of a 10 MiB
    # message would pin 640 MiB; two full messages in flight is plenty.
    max_partial_bytes: int = 20 * MIB
    # Until a publish is accepted, the largest message (checked on the declared
    # length, at the header) and the bytes held in unfinished messages. Before a
    # publish only commands are legal; ffmpeg's connect is ~200 bytes, one with long
    # tcUrl/swfUrl/pageUrl a few KiB. Unauthenticated clients can't make us buffer more.
    preauth_max_message: int = 64 * KIB
    preauth_partial_bytes: int = 64 * KIB
    # Largest command message at any time: commands are decoded (AMF) on the event
    # loop, and no real command is bigger than a few KiB, so a large one is refused
    # at its header instead of stalling every other connection while it decodes.
    max_command_message: int = 64 * KIB
    # Chunk stream ids in use on one connection. Publishers use 2..8.
    max_chunk_streams: int = 64
    # Message streams (createStream) on one connection. A publisher needs one.
    max_message_streams: int = 8
    # Window Acknowledgement Size we announce and default to until the peer sets
    # one; 2_500_000 is what nginx-rtmp, ffmpeg and SRS use.
    ack_window: int = 2_500_000

    # --- AMF ------------------------------------------------------------------------
    # Nesting of objects/arrays in one value. Real commands nest 2-3 deep;
    # recursion past a few hundred would hit Python's stack.
    amf_max_depth: int = 32
    # Length of one AMF string (long strings declare up to 4 GiB).
    amf_max_string: int = 64 * KIB
    # Entries in one object, ECMA array or strict array.
    amf_max_items: int = 4096
    # Values decoded from one message, all nesting levels together. A connect has
    # ~15 (~25 with Enhanced RTMP's fourCcList), publish 3. The costliest value to
    # decode (an empty string) took ~1 us on the loaded 2-core dev box, so 256 stop
    # the worst 64 KiB command after ~0.25 ms instead of 20,000 values.
    amf_max_values: int = 256

    # --- Per-stream buffering at the edge ------------------------------------------
    # Unacked FLV tags kept per stream, by bytes and by media seconds. 90 s of
    # a 128 kbit/s stream is 1.44 MB (a Render cold start is 30-60 s); 8 MiB
    # also holds ~60 s of 1 Mbit/s video.
    buffer_bytes: int = 8 * MIB
    buffer_seconds: float = 120.0
    # Bytes all streams' buffers hold together, counted as encoded tags plus the
    # measured per-tag overhead (outbox.TAG_OVERHEAD). Sized for a 256 MB VM (Fly's
    # shared-cpu-1x): the process at rest is ~45 MiB, 1000 unauthenticated
    # connections may hold preauth_partial_bytes each (62.5 MiB), and the allocator
    # needs slack. Past it the oldest tags of any stream go first, each a reported gap.
    max_buffered_total: int = 96 * MIB
    # Streams of one name ended but still flushing to the app. Publishing and
    # unpublishing in a loop with one valid key would otherwise pile them up.
    max_streams_per_key: int = 4
    # Unacked bytes in flight per stream on the link: the credit window.
    # Large enough for ~2 s of 4 Mbit/s video, small enough that one stalled
    # consumer can't fill the shared socket.
    credit_bytes: int = 1 * MIB
    # How far a stream's window grows while it is full and acks keep coming (a video
    # flood): by what each ack frees, TCP slow start's rule, so it doubles per round trip
    # up to this. One link's round trip then carries more than credit_bytes. It is what a
    # stream may have in the app's memory unacked; a new link starts again at credit_bytes.
    # 8 MiB carried 21% more in a pull flood, but the app's RSS went from ~90 to 150-350 MiB
    # (bench/README.md, "The flood's credit window"): 4 until the app's memory is held down.
    credit_max_bytes: int = 4 * MIB
    # Unsent bytes of a stream whose live link has credit to spare: the edge (or
    # the network to the app), not the app, is behind. Past this the edge stops
    # reading that publisher until half has left, so TCP slows the publisher
    # instead of the buffer dropping tags. Never reached by real-time audio.
    pause_bytes: int = 2 * MIB
    # Longest such pause. rtmp2sink (LiveKit's egress) fails a write after 5 s and the
    # egress gives up on a stream without outbound progress; past this the edge reads
    # again and the buffer bounds drop the oldest tags (a reported gap) instead.
    max_pause: float = 2.0
    # Sequence starts kept per stream for a resume replay, one per track (Enhanced
    # RTMP multitrack: up to 256 audio and 256 video tracks). Publishers use a few (a
    # mix plus one per language); past this, a new track's sequence start still
    # passes but is not kept, so a publisher can't make the edge hoard headers.
    max_replay_tracks: int = 16

    # --- HTTP listeners (the edge's --http, the app's) ------------------------------------
    # Seconds from accept to a complete request head, and for a kept-alive connection
    # to send its next one. aiohttp has no header timeout: half a request held a socket
    # forever. Browsers and Prometheus send a head in one packet.
    http_header_timeout: float = 10.0
    # Seconds for a request body (at most 1 MiB, aiohttp's client_max_size) to arrive.
    http_body_timeout: float = 30.0
    # Open HTTP connections per listener, links included. A deployment has a few links,
    # a dashboard and a scraper; each connection costs aiohttp's buffers, so without a
    # cap anyone could hold thousands for http_header_timeout each. Past it, new
    # connections are closed at accept (the ones open are untouched).
    http_max_connections: int = 256

    # --- The edge <-> client link -----------------------------------------------------
    # One WebSocket message: a batch of frames. Must exceed max_message_size
    # plus framing, since one FLV tag is never split.
    ws_max_message: int = 16 * MIB
    # How long tags may wait to be batched into one WebSocket message.
    batch_delay: float = 0.002
    # Seconds allowed between the link proof's timestamp and our clock.
    auth_max_skew: float = 60.0
    # Application-level ping interval and the silence after which a link is dead.
    ping_interval: float = 5.0
    ping_timeout: float = 15.0
    # Seconds the dialer waits for the peer's answer to its WebSocket close. A live peer answers
    # within a round trip; a dead one (half-open) never does, and the redial waits for this
    # (the websockets default, 10 s, added that much to every half-open recovery).
    close_timeout: float = 2.0
    # Link proofs remembered for replay detection at once. Only proofs with a
    # good signature are stored, so filling this takes the secret; a link every
    # second for the 2 * auth_max_skew window is 120 entries.
    auth_max_remembered: int = 4096

    # --- Background tasks (dialers, the pull-mode connect loop, the sweep) ------------------
    # /healthz answers 503 once a task has failed unexpectedly more than
    # task_failures_unhealthy times within task_failure_window seconds, so the platform
    # restarts the process. Restarts back off to 10 s, so a task failing on every try fails
    # ~9 times a minute and trips this within ~10 s; one odd exception never restarts an
    # edge that holds streams. Expected link failures (app asleep, 502) never count.
    task_failures_unhealthy: int = 5
    task_failure_window: float = 60.0

    # --- msgpack frames on the link ----------------------------------------------------
    # Longest string anywhere in a frame. Strings carry ids, names, reasons and the
    # publisher's connect fields, which the edge read as AMF strings, so this
    # matches amf_max_string: nothing the edge forwards can exceed it.
    wire_max_str: int = 64 * KIB
    # Entries in one array or map: tags in a Data frame, streams in a Hello,
    # publisher fields. 4096 AAC tags are 95 s of audio; longer runs are split
    # into several Data frames by the sender.
    wire_max_items: int = 4096
    # Frames in one WebSocket message. A sender batches one Data (or Ack) per
    # live stream, so max_streams (500) plus control frames fits easily; the
    # bound keeps a message of tiny frames from becoming a million objects.
    wire_max_frames: int = 8192


DEFAULT_LIMITS = Limits()


def parse_overrides(items: tuple[str, ...] | list[str], base: Limits = DEFAULT_LIMITS) -> Limits:
    """``["max_streams=1000", "buffer_seconds=300"]`` → a :class:`Limits` with those fields changed.

    Unknown names and values of the wrong type raise ValueError naming the field,
    so a typo in ``--limit`` or RELAY_LIMITS fails at start-up, not silently.
    """
    changes: dict[str, Any] = {}  # each value of its field's type, checked below
    known = {f.name: f.type for f in fields(Limits)}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"unknown limit {name!r}; known: {', '.join(sorted(known))}")
        kind = float if known[name] in (float, "float") else int
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"limit {name} needs a {kind.__name__}, got {raw!r}") from None
        if value < 0:
            raise ValueError(f"limit {name} must not be negative, got {value}")
        changes[name] = value
    return replace(base, **changes)
