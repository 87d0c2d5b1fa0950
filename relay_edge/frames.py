"""Frame types of the edge <-> client link: plain data, no I/O, no codec.

``docs/PROTOCOL.md`` specifies each frame and its wire keys; :mod:`relay_edge.wire`
encodes and decodes them. Both ends of the link import these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

PROTOCOL_VERSION = 1
# WebSocket subprotocol: names the framing (msgpack frames, see wire.py). A framing
# change that old peers can't parse gets a new name; everything else is
# negotiated with Hello.version.
SUBPROTOCOL = "rtmp-relay.v1"

ROLES = ("edge", "client")


class Code:
    """Well-known ``code`` values of Reject and Close frames. Unknown codes mean "error"."""

    # Stream level: Reject, or Close with a sid.
    UNPUBLISHED = "unpublished"  # edge: the publisher ended the stream
    PUBLISHER_LOST = "publisher_lost"  # edge: the publisher's connection dropped or timed out
    FORBIDDEN = "forbidden"  # client: the app refuses this stream (bad or unknown key, policy)
    BUSY = "busy"  # client: the app can't take more streams now
    DONE = "done"  # client: the app needs no more of this stream
    OVERFLOW = "overflow"  # edge: the stream's buffer limits forced it closed
    ERROR = "error"  # anything else; the reason says what
    # Link level: Close with sid None.
    SHUTDOWN = "shutdown"  # the process is stopping (deploy, restart): redial
    VERSION = "version"  # no common protocol version
    PROTOCOL = "protocol"  # the peer sent something invalid; the reason is our error message
    AUTH = "auth"  # the acceptor's proof did not verify
    TIMEOUT = "timeout"  # nothing received for Limits.ping_timeout
    REPLACED = "replaced"  # a newer link from the same peer instance took over


# --- frames --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """A stream a peer holds: ``seq`` is the highest sequence number it delivered."""

    uid: str
    seq: int


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame each way. The acceptor's Hello carries ``proof`` (see auth.acceptor_proof).

    ``streams``: from the client, the streams it holds (resume points); from
    the edge, the streams live at the edge with the highest seq assigned.
    ``patterns``: from the client, name globs it wants (empty = all).
    """

    version: int
    role: str
    instance: str
    streams: tuple[ResumePoint, ...] = ()
    proof: str = ""
    name: str = ""
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, repr=False)
class Open:
    """Edge -> client: a stream starts (or resumes) on this link as ``sid``.

    ``seq`` is the next sequence number the client should expect (the first
    tag of the next Data, unless a Gap reports it lost). ``header`` is the
    13-byte FLV file header; ``init`` are unsequenced tags (metadata, codec
    sequence headers) a fresh decoder needs before the first Data tag.
    """

    sid: int
    uid: str
    name: str
    publisher: dict[str, Any]
    codecs: dict[str, str]
    seq: int
    resumed: bool
    header: bytes
    edge: str = ""
    init: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # no media bytes in logs
        return (
            f"Open(sid={self.sid}, uid={self.uid!r}, name={self.name!r}, codecs={self.codecs!r}, "
            f"seq={self.seq}, resumed={self.resumed}, init={len(self.init)} tags, edge={self.edge!r})"
        )


@dataclass(frozen=True, slots=True)
class Accept:
    """Client -> edge: the app takes stream ``sid``."""

    sid: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Client -> edge: the app refuses stream ``sid``; the edge fails the publish."""

    sid: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True, repr=False)
class Data:
    """Edge -> client: FLV tags (header + body each); ``tags[i]`` has sequence ``seq + i``.

    ``publisher`` is set only on the Data frame whose first tag is the first of a new
    publisher that took the stream over with the same key (a publisher reconnect).
    """

    sid: int
    seq: int
    tags: tuple[bytes, ...]
    publisher: dict[str, Any] | None = None

    def __repr__(self) -> str:
        size = sum(len(tag) for tag in self.tags)
        return f"Data(sid={self.sid}, seq={self.seq}, tags={len(self.tags)}, bytes={size})"


@dataclass(frozen=True, slots=True)
class Ack:
    """Client -> edge: every tag up to ``seq`` reached the app; frees credit."""

    sid: int
    seq: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Edge -> client: ``tags`` tags (``bytes`` bytes, ``ms`` of media) before ``seq`` were dropped."""

    sid: int
    seq: int
    tags: int
    bytes: int
    ms: int


@dataclass(frozen=True, slots=True)
class Close:
    """Either way: stream ``sid`` ends, or with ``sid`` None the whole link."""

    sid: int | None
    reason: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """Either way: ``t`` is the sender's clock; the peer echoes it in a Pong."""

    t: float


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a Ping, echoing its ``t``."""

    t: float


@dataclass(frozen=True, slots=True)
class TcpOpen:
    """Edge -> client: a raw TCP connection arrived on tunnel ``name`` (raw TCP mode)."""

    cid: int
    name: str
    peer: str = ""


@dataclass(frozen=True, slots=True, repr=False)
class TcpData:
    """Either way: bytes of tunneled connection ``cid``."""

    cid: int
    data: bytes

    def __repr__(self) -> str:
        return f"TcpData(cid={self.cid}, len={len(self.data)})"


@dataclass(frozen=True, slots=True)
class TcpAck:
    """Either way: ``bytes`` of ``cid`` written to the socket so far; credit for the sender."""

    cid: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TcpClose:
    """Either way: EOF on ``cid`` (``reason`` empty) or an error that ends it."""

    cid: int
    reason: str = ""


# Union, not |: isinstance() needs it on Python 3.10.
Frame = Union[  # noqa: UP007
    Hello, Open, Accept, Reject, Data, Ack, Gap, Close, Ping, Pong, TcpOpen, TcpData, TcpAck, TcpClose
]
