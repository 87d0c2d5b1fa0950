"""A publisher connection's per-tag path into the edge core, as one object the core build compiles.

``ServerSession.receive_data`` hands each tag of a read to its ``tags`` callable. The edge's was
a Python closure: one interpreted frame per tag, between the compiled session and the compiled
core. :class:`CoreSink` is that closure as a class in a module of the compiled core
(relay_edge.accel), so with the build in use a tag goes from the chunk reader to the outbox
without running Python bytecode. Without the build it is plain Python, doing the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .edgecore import EdgeCore, Output


class CoreSink:
    """``tags(stream_id, tag_type, timestamp, body)`` for one connection: into ``EdgeCore.media``.

    ``conn`` is the publisher connection (``RtmpConnection``): its ``last_rx``, the time of the
    read being parsed, is every tag's arrival time (one clock read per read, not per tag).
    ``metrics`` counts the tags and their bytes. ``apply`` carries out the core's outputs,
    when a tag made any (rarely: a link's first due tag, a drop).
    """

    def __init__(
        self, core: EdgeCore, conn_id: int, conn: Any, metrics: Any, apply: Callable[[list[Output]], None]
    ) -> None:
        self.core = core
        self.conn_id = conn_id
        self.conn = conn
        self.metrics = metrics
        self.apply = apply

    def __call__(self, stream_id: int, tag_type: int, timestamp: int, data: bytes) -> None:
        core = self.core
        core.media(self.conn_id, stream_id, tag_type, timestamp, data, self.conn.last_rx)
        metrics = self.metrics
        metrics.tags_total += 1
        metrics.bytes_total += len(data)
        if core.pending:
            self.apply(core.outputs())
