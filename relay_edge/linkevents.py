"""Link inputs both cores take in the same shape: plain data, no I/O.

:mod:`relay_edge.edgecore` and :mod:`relay_client.appcore` import these and re-export them; the
inputs whose fields differ between the cores (``LinkUp``, ``Drain``) and the outputs stay in each
core. Pure like :mod:`relay_edge.frames`, so the app side may import it (tests/test_import_graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Frame

__all__ = ["FrameReceived", "LinkDown"]


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """One frame from the peer on ``link_id``.

    The edge core takes only stream-level frames (Ack, Reject, Accept, a Close with a sid): Ping,
    Pong, the link's Close and tunnel frames are its pump's. The app core takes every frame
    (tunnel frames and Pong only show the link is alive).
    """

    link_id: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class LinkDown:
    """Link ``link_id`` is gone (closed, reset, timed out).

    The edge core rewinds its streams to their last ack and holds them for the next link.
    """

    link_id: int
