"""The cores' inputs and outputs, in the vocabulary of docs/CORE.md.

The simulator speaks these to every core; :mod:`sim.cores` adapts a real core's own
types to them. Frames on the link are the project's real :mod:`relay_edge.frames`.
Where a core's own type has exactly the simulator's shape it is that type, imported
(its repr, and so the trace, is the same); the rest are simulator-only, narrower than
the cores' (no RTMP stream ids, no log names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay_client.appcore import Delivered, Drain, GapToDeliver, LinkUp, SendFrames
from relay_edge.edgecore import CloseLink, LimitBreached, PublisherGone
from relay_edge.frames import Gap
from relay_edge.linkevents import FrameReceived, LinkDown

__all__ = [
    "AcceptPublish",
    "CloseLink",
    "ClosePublisher",
    "Delivered",
    "Drain",
    "FrameReceived",
    "GapReported",
    "GapToDeliver",
    "LimitBreached",
    "LinkDown",
    "LinkUp",
    "Media",
    "PublishVerified",
    "PublisherGone",
    "RejectPublish",
    "SendFrames",
    "StreamEnded",
    "StreamOpened",
    "TagsToDeliver",
    "Unpublished",
]

# Imported, not declared: both cores' FrameReceived and LinkDown; the app core's LinkUp
# (the edge's adds ``remote``), Drain (fed to edges too: the adapter adds the edge's grace),
# Delivered, SendFrames (decoded frames) and GapToDeliver; the edge core's PublisherGone,
# CloseLink (the app's adds ``by_peer``) and LimitBreached.

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


# --- outputs ---------------------------------------------------------------------------


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
