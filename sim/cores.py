"""Which cores the simulator drives, behind one small adapter each.

The world speaks :mod:`sim.events` (docs/CORE.md's vocabulary). :class:`RealCores` wraps
``relay_edge.edgecore.EdgeCore`` and ``relay_client.appcore.AppCore`` (translating their
own event types, decoding the edge's encoded frames, and pulling its sends at once:
the simulated transport is always writable, credit is what bounds it);
:class:`ModelCores` builds the reference cores of :mod:`sim.model`.
"""

from __future__ import annotations

import time
from typing import Any

from relay_client import appcore as ac
from relay_edge import edgecore as ec
from relay_edge import wire
from relay_edge.edgestream import Publisher
from relay_edge.frames import PROTOCOL_VERSION, Hello
from relay_edge.limits import Limits

from . import events as ev
from .model import ModelAppCore, ModelEdgeCore


class Meter:
    """Seconds spent inside the real cores' own calls (handle, tick, outputs), when on.

    perf_counter, not process_time: that one is a system call (~2.6 us here), longer
    than many core calls, so it would mostly measure itself. Single-threaded, so this is
    the cores' CPU time unless the machine preempts the process.
    """

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0

    def call(self, fn: Any, *args: Any) -> Any:
        if not self.on:
            return fn(*args)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0


EDGE_METER = Meter()
APP_METER = Meter()


class ModelCores:
    """The reference cores of :mod:`sim.model`."""

    name = "model"

    def edge(self, instance: str, edge_name: str, limits: Limits) -> Any:
        return ModelEdgeCore(instance, edge_name, limits)

    def app(self, instance: str, limits: Limits, patterns: tuple[str, ...] = ()) -> Any:
        return ModelAppCore(instance, patterns)

    def app_hello(self, app_core: Any) -> Hello:
        return app_core.hello()

    def edge_hello(self, edge_core: Any, instance: str, edge_name: str) -> Hello:
        return Hello(PROTOCOL_VERSION, "edge", instance, edge_core.resume_points(), name=edge_name)

    def memory(self, edge_core: Any) -> tuple[int, int] | None:
        return edge_core.memory()


class RealEdge:
    """``relay_edge.edgecore.EdgeCore`` in the simulator's vocabulary."""

    def __init__(self, instance: str, edge_name: str, limits: Limits) -> None:
        self.core = ec.EdgeCore(instance, edge_name, limits)
        self.limits = limits
        self._now = 0.0

    def handle(self, event: Any, now: float) -> None:
        if type(event) is ev.Media:
            real: Any = ec.Media(event.conn_id, 1, event.tag_type, event.timestamp, event.data)
        elif isinstance(event, ev.PublishVerified):
            who = Publisher(f"pub-{event.publisher['id']}", "live", "sim")
            real = ec.PublishVerified(event.conn_id, 1, event.name, "live", who)
        elif isinstance(event, ev.Unpublished):
            real = ec.Unpublished(event.conn_id, 1, "FCUnpublish")
        elif isinstance(event, ev.PublisherGone):
            real = ec.PublisherGone(event.conn_id)
        elif isinstance(event, ev.LinkUp):
            real = ec.LinkUp(event.link_id, event.hello)
        elif isinstance(event, ev.FrameReceived):
            frame = event.frame
            if type(frame) is wire.Ack and frame.seq % 2:
                # Half the acks take the pump's direct entry (a message of Acks only), half the
                # general one: the two must not be told apart.
                self._now = now
                EDGE_METER.call(self.core.acks, event.link_id, [(frame.sid, frame.seq)])
                return
            real = ec.FrameReceived(event.link_id, frame)
        elif isinstance(event, ev.LinkDown):
            real = ec.LinkDown(event.link_id)
        elif isinstance(event, ev.Drain):
            real = ec.Drain(self.limits.buffer_seconds)
        else:
            raise TypeError(f"no EdgeCore input for {event!r}")
        self._now = now
        EDGE_METER.call(self.core.handle, real, now)

    def tick(self, now: float) -> None:
        self._now = now
        EDGE_METER.call(self.core.tick, now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def outputs(self) -> list[Any]:
        out: list[Any] = []
        self._expand(EDGE_METER.call(self.core.outputs), out)
        return out

    def _expand(self, items: list[Any], out: list[Any]) -> None:
        """Translate in order; a LinkDue is answered at once and its sends take its place."""
        for item in items:
            kind = type(item)
            if kind is ec.LinkDue:  # the simulated transport is always writable
                EDGE_METER.call(self.core.handle, ec.LinkWritable(item.link_id), self._now)
                self._expand(EDGE_METER.call(self.core.outputs), out)
            elif kind is ec.SendFrames:
                frames = wire.decode_message(b"".join(item.frames), self.limits)
                out.append(ev.SendFrames(item.link_id, tuple(frames)))
            elif kind not in (ec.Log, ec.Count, ec.Drained):
                out.append(self._translate(item))

    def _translate(self, item: Any) -> Any:
        if isinstance(item, ec.AcceptPublish):
            return ev.AcceptPublish(item.conn_id, item.uid)
        if isinstance(item, ec.RejectPublish):
            return ev.RejectPublish(item.conn_id, item.code, item.description)
        if isinstance(item, ec.ClosePublisher):
            return ev.ClosePublisher(item.conn_id, "closed by the edge")
        if isinstance(item, ec.CloseLink):
            return ev.CloseLink(item.link_id, item.code, item.reason)
        if isinstance(item, ec.GapReported):
            return ev.GapReported(item.uid, item.gap)
        if isinstance(item, ec.StreamEnded):
            return ev.StreamEnded(item.uid, item.reason)
        if isinstance(item, ec.LimitBreached):
            return ev.LimitBreached(item.limit)
        raise TypeError(f"no simulator output for {item!r}")


class RealApp:
    """``relay_client.appcore.AppCore`` in the simulator's vocabulary."""

    def __init__(self, instance: str, limits: Limits, patterns: tuple[str, ...] = ()) -> None:
        self.core = ac.AppCore(instance, limits, patterns=patterns)

    def handle(self, event: Any, now: float) -> None:
        if isinstance(event, ev.FrameReceived):
            real: Any = ac.FrameReceived(event.link_id, event.frame)
        elif isinstance(event, ev.Delivered):
            real = ac.Delivered(event.uid, event.seq)
        elif isinstance(event, ev.LinkUp):
            real = ac.LinkUp(event.link_id, event.hello)
        elif isinstance(event, ev.LinkDown):
            real = ac.LinkDown(event.link_id)
        elif isinstance(event, ev.Drain):
            real = ac.Drain()
        else:
            raise TypeError(f"no AppCore input for {event!r}")
        APP_METER.call(self.core.handle, real, now)

    def tick(self, now: float) -> None:
        APP_METER.call(self.core.tick, now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def hello(self) -> Hello:
        return self.core.hello()

    def outputs(self) -> list[Any]:
        out: list[Any] = []
        for item in APP_METER.call(self.core.outputs):
            kind = type(item)
            if kind is ac.SendFrames:
                out.append(ev.SendFrames(item.link_id, item.frames))
            elif kind is ac.TagsToDeliver:
                out.append(ev.TagsToDeliver(item.uid, item.seq, item.tags))
            elif kind is ac.GapToDeliver:
                out.append(ev.GapToDeliver(item.uid, item.gap))
            elif kind is ac.StreamOpened:
                o = item.open
                out.append(ev.StreamOpened(item.uid, o.name, o.seq, o.resumed, o.init))
            elif kind is ac.StreamEnded:
                out.append(ev.StreamEnded(item.uid, item.reason))
            elif kind is ac.CloseLink:
                out.append(ev.CloseLink(item.link_id, item.code, item.reason))
            else:
                raise TypeError(f"no simulator output for {item!r}")
        return out


class RealCores:
    """The project's own cores: ``EdgeCore`` and ``AppCore``."""

    name = "real"

    def edge(self, instance: str, edge_name: str, limits: Limits) -> Any:
        return RealEdge(instance, edge_name, limits)

    def app(self, instance: str, limits: Limits, patterns: tuple[str, ...] = ()) -> Any:
        return RealApp(instance, limits, patterns)

    def app_hello(self, app_core: Any) -> Hello:
        return app_core.hello()

    def edge_hello(self, edge_core: Any, instance: str, edge_name: str) -> Hello:
        points = edge_core.core.resume_points()
        return Hello(PROTOCOL_VERSION, "edge", instance, points, name=edge_name)

    def memory(self, edge_core: Any) -> tuple[int, int] | None:
        core = edge_core.core
        held = [*core.streams.values(), *core.finishing]
        largest = max((s.outbox.buffered_bytes for s in held), default=0)
        return largest, core.budget.used


Cores = ModelCores | RealCores


def default_cores() -> Cores:
    """The real cores: what the simulation is for."""
    return RealCores()
