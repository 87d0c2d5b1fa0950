"""The cores' inputs and outputs, in the vocabulary of docs/CORE.md.

The simulator speaks these to every core; :mod:`sim.cores` adapts a real core's own
types to them. Frames on the link are the project's real :mod:`relay_edge.frames`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay_edge.frames import Frame, Gap, Hello

# --- edge inputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishVerified:
    """A publisher's key checked by the pump: ``name`` may start or take over a stream."""

    conn_id: int
    name: str
    publisher: dict[str, Any]


@dataclass(frozen=True, slots=True, repr=False)
class Media:
    """One FLV tag body from publisher ``conn_id``."""

    conn_id: int
    tag_type: int
    timestamp: int
    data: bytes

    def __repr__(self) -> str:
        return f"Media(conn={self.conn_id}, ts={self.timestamp}, {self.data[2:].split(b';')[0].decode()})"


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher ended its stream (deleteStream / FCUnpublish)."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class PublisherGone:
    """The publisher's connection dropped without unpublishing."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class Drain:
    """Graceful stop: an edge ends its publishers and flushes; an app acks and closes its links."""


# --- both cores ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A link is established; ``hello`` is the peer's."""

    link_id: int
    hello: Hello


@dataclass(frozen=True, slots=True)
class FrameReceived:
    link_id: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class LinkDown:
    link_id: int


# --- app inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """The app's pipeline finished every tag of ``uid`` up to ``seq``: only now may it be acked."""

    uid: str
    seq: int


# --- outputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendFrames:
    link_id: int
    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class AcceptPublish:
    """The publish of ``conn_id`` is accepted into stream ``uid``."""

    conn_id: int
    uid: str


@dataclass(frozen=True, slots=True)
class RejectPublish:
    conn_id: int
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ClosePublisher:
    conn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CloseLink:
    link_id: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class GapReported:
    """Edge observation: tags of ``uid`` dropped with no link to report them on."""

    uid: str
    gap: Gap


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The stream is gone from the core (edge) or ended for the app (app)."""

    uid: str
    reason: str


@dataclass(frozen=True, slots=True, repr=False)
class StreamOpened:
    uid: str
    name: str
    seq: int
    resumed: bool
    init: tuple[bytes, ...] = field(default=())

    def __repr__(self) -> str:
        return f"StreamOpened({self.uid}, seq={self.seq}, resumed={self.resumed}, init={len(self.init)})"


@dataclass(frozen=True, slots=True, repr=False)
class TagsToDeliver:
    uid: str
    seq: int
    tags: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"TagsToDeliver({self.uid}, seq={self.seq}, tags={len(self.tags)})"


@dataclass(frozen=True, slots=True)
class GapToDeliver:
    uid: str
    gap: Gap


@dataclass(frozen=True, slots=True)
class LimitBreached:
    """Edge observation: ``limit`` was exceeded (``max_buffered_total``: any stream may lose tags)."""

    limit: str
