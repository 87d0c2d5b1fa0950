"""The simulated world: edges, app instances behind a load balancer, publishers, links, faults.

Everything random comes from the scheduler's one ``random.Random(seed)``; nothing reads
a clock or iterates a set, so a seed replays byte for byte. Each host's core sees its
own clock (global time plus the host's skew).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from relay_edge.frames import Close, Code, Hello, Ping, Pong
from relay_edge.limits import Limits

from . import events as ev
from .check import Checker, Violation
from .cores import Cores
from .sched import Scheduler

AAC_HEADER = b"\xaf\x00\x12\x10"  # AAC AudioSpecificConfig: a sequence header the edge keeps for replays


@dataclass(frozen=True, slots=True)
class Params:
    """One seed's world. Times are simulated seconds."""

    edges: int = 2
    apps: int = 2
    links_per_edge: int = 2
    sessions: int = 4  # stream names published over the run
    duration: float = 30.0
    tag_interval: float = 0.1
    tag_pad: tuple[int, int] = (20, 200)
    fault_every: float = 3.0  # mean seconds between faults
    faults: tuple[str, ...] = ()
    pipeline_per_tag: float = 0.001  # app pipeline seconds per tag (slow consumers: more)
    max_skew: float = 5.0
    latency: tuple[float, float] = (0.005, 0.08)
    detect: float = 3.0  # seconds until a half-open link is declared dead (the pumps' ping timeout)
    session: tuple[float, float] | None = None  # a publisher's stream lasts this long (else: the run)
    check_every: float = 0.25  # seconds between the timed invariant checks
    # Hello.patterns an app service may have (each instance draws one; its replacements keep it).
    patterns: tuple[tuple[str, ...], ...] = ((),)
    limits: Limits = field(default_factory=Limits)


FAULTS = (
    "cut",
    "half_open",
    "partition",
    "app_crash",
    "deploy",
    "publisher_drop",
    "takeover",
    "edge_crash",
    "edge_restart",
    "slow_consumer",
)


def random_params(seed_rng: Any, wide: bool = False) -> Params:
    """A small world with a random mix of faults and (in some seeds) tiny limits.

    ``wide``: up to 5 edges, 5 app instances, 4 links per edge and 12 stream names over
    20-60 s, faults every 0.5-3 s (about three times the CPU of a small world).
    """
    r = seed_rng
    small = r.random() < 0.35
    # Drawn in the order they always were, so each seed's scenario stays what it was.
    grace = r.uniform(1.0, 6.0)
    buffer_seconds = r.uniform(2.0, 8.0) if small else 60.0
    buffer_bytes = r.randint(2_000, 20_000) if small else 1 << 20
    credit = r.randint(300, 4_000) if r.random() < 0.5 else 1 << 20
    limits = Limits(
        ping_interval=1.0,
        ping_timeout=3.0,  # = Params.detect: the app's core times a half-open link out itself
        reconnect_grace=grace,
        buffer_seconds=buffer_seconds,
        buffer_bytes=buffer_bytes,
        credit_bytes=credit,
        # A window that grows in half the seeds, fixed in the other half (no extra draw).
        credit_max_bytes=credit if credit % 2 else 4 * credit,
        max_buffered_total=r.randint(10_000, 60_000) if small and r.random() < 0.5 else 96 << 20,
    )
    faults = tuple(f for f in FAULTS if r.random() < 0.6)
    patterns = r.choice(
        [
            ((),),  # every instance takes every stream
            ((), ("room-1", "room-2")),  # a subscriber beside catch-alls
            (("room-[0-2]",), ("room-[3-9]",)),  # split by name, no catch-all
        ]
    )
    params = Params(
        edges=r.randint(1, 3),
        apps=r.randint(1, 3),
        links_per_edge=r.randint(1, 3),
        sessions=r.randint(2, 6),
        duration=r.uniform(10.0, 25.0),
        tag_interval=r.uniform(0.05, 0.3),
        fault_every=r.uniform(1.0, 5.0),
        faults=faults,
        pipeline_per_tag=r.choice((0.0005, 0.002, 0.05)),
        max_skew=r.uniform(0.0, 30.0),
        patterns=patterns,
        limits=limits,
    )
    if not wide:
        return params
    return replace(
        params,
        edges=r.randint(1, 5),
        apps=r.randint(1, 5),
        links_per_edge=r.randint(1, 4),
        sessions=r.randint(2, 12),
        duration=r.uniform(20.0, 60.0),
        fault_every=r.uniform(0.5, 3.0),
    )


class Host:
    """One process incarnation: its core, clock skew and links. A restart is a new Host."""

    def __init__(self, kind: str, name: str, core: Any, skew: float, label: str = "") -> None:
        self.kind = kind
        self.name = name
        self.label = label or name  # an edge's stable name (its Hello.name), across restarts
        self.core = core
        self.skew = skew
        self.alive = True
        self.draining = False
        self.ready = True
        self.links: dict[int, SimLink] = {}
        self.timer: float | None = None
        self.timer_version = 0
        # app only: the pipeline between TagsToDeliver and Delivered
        self.queue: deque[Any] = deque()
        self.busy = False
        self.started = 0.0
        self.patterns: tuple[str, ...] = ()


@dataclass(slots=True)
class SimLink:
    """A WebSocket between an edge and an app: in order each way, with per-message delay."""

    id: int
    edge: Host
    app: Host
    slot: int
    dead: bool = False
    last: list[float] = field(default_factory=lambda: [0.0, 0.0])  # last delivery time: to app, to edge


@dataclass(slots=True)
class Pub:
    conn: int
    name: str
    edge: Host
    n: int = 0
    attached: bool = False


class World:
    """Builds the hosts, runs the faults and the quiet end, and feeds every output to the checker."""

    def __init__(
        self,
        seed: int,
        params: Params,
        cores: Cores,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.sched = Scheduler(seed)
        self.rng = self.sched.rng
        self.p = params
        self.cores = cores
        self.check = Checker(params.limits)
        self._trace = trace
        self.edges: list[Host] = []
        self.apps: list[Host] = []
        self.pubs: dict[int, Pub] = {}
        self._ids = {"link": 0, "conn": 0, "app": 0, "edge": 0}
        self.faulting = True
        self.partitioned: dict[str, float] = {}  # edge name -> until
        self.finished: dict[str, None] = {}  # stream names whose session is over

    # --- plumbing ---------------------------------------------------------------------

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def trace(self, who: str, text: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.sched.now:12.6f} {who:<10} {text}")

    def feed(self, host: Host, event: Any) -> None:
        """One input into a host's core, then its outputs, then its timer."""
        if not host.alive:
            return
        if self._trace is not None:
            self.trace(host.name, f"<- {event!r}")
        now = self.sched.now + host.skew
        host.core.handle(event, now)
        self._outputs(host, host.core.outputs(), now)

    def _wake(self, host: Host, version: int) -> None:
        if not host.alive or version != host.timer_version:
            return
        host.timer = None
        now = self.sched.now + host.skew
        if self._trace is not None:
            self.trace(host.name, "<- tick")
        host.core.tick(now)
        self._outputs(host, host.core.outputs(), now)

    def _outputs(self, host: Host, outs: list[Any], now: float) -> None:
        handler = self._edge_output if host.kind == "edge" else self._app_output
        for out in outs:
            if self._trace is not None:
                self.trace(host.name, f"-> {out!r}")
            handler(host, out, now)
        if host.kind == "edge":
            memory = self.cores.memory(host.core)
            if memory is not None:
                self.check.memory(host.name, *memory)
        deadline = host.core.next_deadline()
        if deadline is None:
            host.timer = None
            return
        when = deadline - host.skew + 1e-6  # a hair late, so the core sees it due
        if host.timer != when:
            host.timer = when
            host.timer_version += 1
            self.sched.at(when, self._wake, host, host.timer_version)

    # --- edge outputs -----------------------------------------------------------------

    def _edge_output(self, edge: Host, out: Any, now: float) -> None:
        if isinstance(out, ev.SendFrames):
            link = edge.links.get(out.link_id)
            self.check.edge_sent(edge.name, out.link_id, out.frames, now)
            if link is not None:
                self._send(link, to_edge=False, frames=out.frames)
        elif isinstance(out, ev.AcceptPublish):
            pub = self.pubs.get(out.conn_id)
            self.check.accepted(edge.name, out.conn_id, out.uid, pub.name if pub else "")
            pub = self.pubs.get(out.conn_id)
            if pub is not None:
                pub.attached = True
        elif isinstance(out, (ev.ClosePublisher, ev.RejectPublish)):
            self.check.detached(out.conn_id, self.sched.now)
            pub = self.pubs.pop(out.conn_id, None)
            # Closed by a takeover (we started it), or the edge is stopping: publish again elsewhere.
            if pub is not None and (edge.draining or isinstance(out, ev.RejectPublish)):
                self.sched.after(self.rng.uniform(0.2, 1.0), self._publish, pub.name, None)
        elif isinstance(out, ev.CloseLink):  # the pump sends Close(None), then closes the socket
            link = edge.links.pop(out.link_id, None)
            if link is not None:
                self.check.link_down(edge.name, link.id)
                self._send(link, to_edge=False, frames=(Close(None, out.reason, out.code),))
                self.sched.after(self.p.latency[1] + 0.01, self._cut, link, 0.0, 0.0)
                self.sched.after(self.rng.uniform(0.1, 1.5), self._dial, edge, link.slot)
        elif isinstance(out, ev.LimitBreached):
            self.check.limit_breached(edge.name, out.limit)
        elif isinstance(out, ev.GapReported):
            self.check.gap_reported(out.uid, out.gap, now)
        elif isinstance(out, ev.StreamEnded):
            self.check.stream_ended(edge.name, out.uid)

    # --- app outputs ------------------------------------------------------------------

    def _app_output(self, app: Host, out: Any, now: float) -> None:
        if isinstance(out, ev.SendFrames):
            link = app.links.get(out.link_id)
            if link is not None:
                self._send(link, to_edge=True, frames=out.frames)
            return
        if isinstance(out, ev.CloseLink):
            if out.code == Code.PROTOCOL:
                raise Violation("protocol error", f"{app.name} closed link {out.link_id}: {out.reason}")
            link = app.links.get(out.link_id)
            if link is not None:
                self._cut(link, self.rng.uniform(0.01, 0.1), 0.0)
            return
        if isinstance(out, ev.TagsToDeliver):
            self.check.app_tags(app.name, out.uid, out.seq, out.tags)
        elif isinstance(out, ev.GapToDeliver):
            self.check.app_gap(app.name, out.uid, out.gap)
        elif isinstance(out, ev.StreamOpened):
            self.check.app_opened(app.name, out.uid, out.init)
        app.queue.append(out)
        self._pump_pipeline(app)

    def _pump_pipeline(self, app: Host) -> None:
        while app.queue and not app.busy and app.alive:
            item = app.queue[0]
            if not isinstance(item, ev.TagsToDeliver):
                app.queue.popleft()
                continue
            app.busy = True
            self.sched.after(self.p.pipeline_per_tag * len(item.tags), self._pipeline_done, app)

    def _pipeline_done(self, app: Host) -> None:
        if not app.alive:
            return
        item = app.queue.popleft()
        app.busy = False
        self.check.delivered(app.name, item.uid, item.seq, len(item.tags))
        self.feed(app, ev.Delivered(item.uid, item.seq + len(item.tags) - 1))
        self._pump_pipeline(app)

    # --- the network ------------------------------------------------------------------

    def _send(self, link: SimLink, to_edge: bool, frames: tuple[Any, ...]) -> None:
        if link.dead:
            return
        lo, hi = self.p.latency
        way = 1 if to_edge else 0
        when = max(self.sched.now + self.rng.uniform(lo, hi), link.last[way])
        link.last[way] = when
        self.sched.at(when, self._deliver, link, to_edge, frames)

    def _deliver(self, link: SimLink, to_edge: bool, frames: tuple[Any, ...]) -> None:
        host = link.edge if to_edge else link.app
        if link.dead or not host.alive or link.id not in host.links:
            return
        for frame in frames:
            if link.dead or not host.alive or link.id not in host.links:
                return
            if to_edge and self._edge_pump(link, frame):
                continue
            if to_edge:
                self.check.edge_got(link.id, frame)
            self.feed(host, ev.FrameReceived(link.id, frame))

    def _edge_pump(self, link: SimLink, frame: Any) -> bool:
        """Link-level frames are the edge pump's, not its core's: True if handled here."""
        if isinstance(frame, Ping):
            self._send(link, to_edge=False, frames=(Pong(frame.t),))
            return True
        if isinstance(frame, Pong):
            return True
        if isinstance(frame, Close) and frame.sid is None:  # the app is going (a deploy)
            self._cut(link, 0.0, 0.0)
            return True
        return False

    def _cut(self, link: SimLink, edge_after: float, app_after: float) -> None:
        """The link dies: frames in flight are lost, each end notices after its delay."""
        if link.dead:
            return
        link.dead = True
        self.trace("net", f"link {link.id} {link.edge.name}-{link.app.name} cut")
        self.sched.after(edge_after, self._down, link, link.edge)
        self.sched.after(app_after, self._down, link, link.app)

    def _down(self, link: SimLink, host: Host) -> None:
        if host.links.pop(link.id, None) is None or not host.alive:
            return
        if host.kind == "edge":
            self.check.link_down(host.name, link.id)
        self.feed(host, ev.LinkDown(link.id))
        if host.kind == "edge":
            self.sched.after(self.rng.uniform(0.1, 1.5), self._dial, host, link.slot)

    def _dial(self, edge: Host, slot: int) -> None:
        """The edge's dialer, through the load balancer to one ready app instance."""
        if not edge.alive or edge.draining:
            return
        ready = [a for a in self.apps if a.alive and a.ready and not a.draining]
        if not ready or self.partitioned.get(edge.name, -1.0) > self.sched.now:
            self.sched.after(self.rng.uniform(0.5, 2.0), self._dial, edge, slot)
            return
        fewest = min(len(a.links) for a in ready)  # least connections, ties at random
        app = self.rng.choice([a for a in ready if len(a.links) == fewest])
        link = SimLink(self._next("link"), edge, app, slot)
        rtt = self.rng.uniform(*self.p.latency)
        self.sched.after(rtt, self._accept, link)

    def _accept(self, link: SimLink) -> None:
        app, edge = link.app, link.edge
        if not app.alive or app.draining or not edge.alive:
            self.sched.after(0.5, self._dial, edge, link.slot)
            return
        app.links[link.id] = link
        hello = self.cores.edge_hello(edge.core, edge.name, edge.label)
        self.feed(app, ev.LinkUp(link.id, hello))
        answer = self.cores.app_hello(app.core)
        self.sched.after(self.rng.uniform(*self.p.latency), self._edge_up, link, answer)

    def _edge_up(self, link: SimLink, hello: Hello) -> None:
        edge = link.edge
        if not edge.alive:
            return
        if link.dead or not link.app.alive:
            self._cut(link, 0.0, 0.0)
            self.sched.after(0.5, self._dial, edge, link.slot)
            return
        edge.links[link.id] = link
        self.check.link_up(edge.name, link.id)
        self.feed(edge, ev.LinkUp(link.id, hello))

    # --- hosts ------------------------------------------------------------------------

    def start_edge(self, index: int) -> Host:
        name = f"e{index}.{self._next('edge')}"
        skew = self.rng.uniform(-1, 1) * self.p.max_skew
        label = f"e{index}"
        host = Host("edge", name, self.cores.edge(name, label, self.p.limits), skew, label)
        if index < len(self.edges):
            self.edges[index] = host
        else:
            self.edges.append(host)
        for slot in range(self.p.links_per_edge):
            self.sched.after(self.rng.uniform(0.0, 0.2), self._dial, host, slot)
        return host

    def start_app(self, startup: float = 0.0, patterns: tuple[str, ...] | None = None) -> Host:
        name = f"app{self._next('app')}"
        skew = self.rng.uniform(-1, 1) * self.p.max_skew
        if patterns is None:
            patterns = self.rng.choice(self.p.patterns)
        host = Host("app", name, self.cores.app(name, self.p.limits, patterns), skew)
        host.patterns = patterns
        host.ready = False
        host.started = self.sched.now
        self.apps.append(host)
        self.sched.after(startup, self._ready, host)
        return host

    def _ready(self, host: Host) -> None:
        host.ready = True
        self.trace(host.name, "ready")

    def kill_app(self, app: Host) -> None:
        """The process dies: core state and pipeline lost; each edge notices by reset or ping timeout."""
        app.alive = False
        app.queue.clear()
        self.trace(app.name, "crash")
        for link in list(app.links.values()):
            self._cut(link, self._detect_delay(), 0.0)
        self.apps.remove(app)

    def _detect_delay(self) -> float:
        if self.rng.random() < 0.5:
            return self.rng.uniform(0.01, 0.3)  # a reset
        return self.p.detect + self.rng.uniform(0.0, 1.0)  # silence until the ping timeout

    def deploy(self, old: Host) -> None:
        """Render-style: the new instance starts first, then the old one drains and stops."""
        self.trace(old.name, "deploy: draining")
        self.start_app(self.rng.uniform(0.5, 3.0), old.patterns)
        old.draining = True
        self.feed(old, ev.Drain())
        self._close_when_idle(old, self.sched.now + 5.0)

    def _close_when_idle(self, app: Host, give_up: float) -> None:
        """The pipeline finished (its acks are out): Close(None, shutdown) on every link, then exit."""
        if not app.alive:
            return
        if app.queue and self.sched.now < give_up:
            self.sched.after(0.05, self._close_when_idle, app, give_up)
            return
        for link in list(app.links.values()):
            self._send(link, to_edge=True, frames=(Close(None, "deploy", Code.SHUTDOWN),))
        self.sched.after(1.0, self._stop_app, app)

    def _stop_app(self, app: Host) -> None:
        if app.alive:
            app.alive = False
            self.trace(app.name, "stopped")
            for link in list(app.links.values()):
                self._cut(link, self._detect_delay(), 0.0)
            if app in self.apps:
                self.apps.remove(app)

    def crash_edge(self, index: int) -> None:
        edge = self.edges[index]
        edge.alive = False
        self.trace(edge.name, "crash")
        self.check.edge_crashed(edge.name)
        for link in list(edge.links.values()):
            self._cut(link, 0.0, self._detect_delay())
        for pub in [p for p in self.pubs.values() if p.edge is edge]:
            del self.pubs[pub.conn]
            self.sched.after(self.rng.uniform(0.2, 2.0), self._publish, pub.name, None)
        self.sched.after(self.rng.uniform(0.5, 3.0), self.start_edge, index)

    def restart_edge(self, index: int) -> None:
        """Graceful: the edge ends its publishers (they publish elsewhere), flushes, then restarts."""
        edge = self.edges[index]
        if edge.draining:
            return
        edge.draining = True  # before the Drain: its ClosePublishers send publishers elsewhere
        self.feed(edge, ev.Drain())
        self._exit_when_flushed(edge, index, self.sched.now + self.p.limits.buffer_seconds + 10.0)

    def _exit_when_flushed(self, edge: Host, index: int, give_up: float) -> None:
        if not edge.alive:
            return
        if edge.links and self.sched.now < give_up:  # the core closes its links once drained
            self.sched.after(0.5, self._exit_when_flushed, edge, index, give_up)
            return
        self.crash_edge(index)

    # --- publishers -------------------------------------------------------------------

    def _publish(self, name: str, edge: Host | None) -> None:
        """A publisher connects with ``name``'s key (to ``edge``, or any running one)."""
        if not self.faulting or name in self.finished:
            return  # the quiet end, or the session is over: publishers have left
        if edge is None or not edge.alive or edge.draining:
            live = [e for e in self.edges if e.alive and not e.draining]
            if not live:
                self.sched.after(1.0, self._publish, name, None)
                return
            edge = self.rng.choice(live)
        pub = Pub(self._next("conn"), name, edge)
        self.pubs[pub.conn] = pub
        self.feed(edge, ev.PublishVerified(pub.conn, name, {"id": pub.conn}))
        if pub.attached:
            self._tag(pub)

    def _tag(self, pub: Pub) -> None:
        if self.pubs.get(pub.conn) is not pub or not pub.edge.alive:
            return
        pub.n += 1
        if pub.n == 1:
            body = AAC_HEADER
        else:
            pad = b"." * self.rng.randint(*self.p.tag_pad)
            body = b"\xaf\x01" + f"{pub.conn}:{pub.n};".encode() + pad
        if self.check.pushed(pub.conn, body, self.sched.now + pub.edge.skew):
            self.feed(pub.edge, ev.Media(pub.conn, 8, int(self.sched.now * 1000), body))
        if self.pubs.get(pub.conn) is pub:
            self.sched.after(self.p.tag_interval * self.rng.uniform(0.5, 1.5), self._tag, pub)

    def _leave(self, pub: Pub, graceful: bool) -> None:
        if self.pubs.pop(pub.conn, None) is None:
            return
        self.check.detached(pub.conn, self.sched.now)
        self.feed(pub.edge, ev.Unpublished(pub.conn) if graceful else ev.PublisherGone(pub.conn))

    # --- faults -----------------------------------------------------------------------

    def _fault(self) -> None:
        if not self.faulting:
            return
        kinds = self.p.faults
        if kinds:
            getattr(self, "_f_" + self.rng.choice(kinds))()
        self.sched.after(self.rng.expovariate(1.0 / self.p.fault_every), self._fault)

    def _any_link(self) -> SimLink | None:
        links = [link for e in self.edges if e.alive for link in e.links.values()]
        return self.rng.choice(links) if links else None

    def _f_cut(self) -> None:
        link = self._any_link()
        if link is not None:
            self._cut(link, self.rng.uniform(0.0, 0.2), self.rng.uniform(0.0, 0.2))

    def _f_half_open(self) -> None:
        link = self._any_link()
        if link is not None:
            self._cut(link, self.p.detect + self.rng.uniform(0, 1), self.p.detect + self.rng.uniform(0, 1))

    def _f_partition(self) -> None:
        edge = self.rng.choice(self.edges)
        if not edge.alive:
            return
        self.trace("net", f"partition {edge.name} from the apps")
        self.partitioned[edge.name] = self.sched.now + self.rng.uniform(1.0, 6.0)
        for link in list(edge.links.values()):
            self._cut(link, self.p.detect + self.rng.uniform(0, 1), self.p.detect + self.rng.uniform(0, 1))

    def _f_app_crash(self) -> None:
        if self.apps:
            app = self.rng.choice(self.apps)
            self.kill_app(app)
            self.start_app(self.rng.uniform(0.5, 5.0), app.patterns)

    def _f_deploy(self) -> None:
        apps = [a for a in self.apps if not a.draining]
        if apps:
            self.deploy(self.rng.choice(apps))

    def _f_publisher_drop(self) -> None:
        if self.pubs:
            pub = self.pubs[self.rng.choice(list(self.pubs))]
            self._leave(pub, graceful=False)
            grace = self.p.limits.reconnect_grace
            back = self.rng.uniform(0.1, grace * 0.5) if self.rng.random() < 0.6 else grace * 1.5
            self.sched.after(back, self._publish, pub.name, pub.edge)

    def _f_takeover(self) -> None:
        if self.pubs:
            pub = self.pubs[self.rng.choice(list(self.pubs))]
            self._publish(pub.name, pub.edge)

    def _f_edge_crash(self) -> None:
        index = self.rng.randrange(len(self.edges))
        if self.edges[index].alive:
            self.crash_edge(index)

    def _f_edge_restart(self) -> None:
        index = self.rng.randrange(len(self.edges))
        if self.edges[index].alive:
            self.restart_edge(index)

    def _f_slow_consumer(self) -> None:
        self.p = replace(self.p, pipeline_per_tag=self.rng.choice((0.0005, 0.01, 0.1)))

    # --- running ----------------------------------------------------------------------

    def _periodic(self) -> None:
        consumers = {
            e.name: [ln.app.patterns for ln in e.links.values() if _consumer(ln)] for e in self.edges
        }
        self.check.periodic(self.sched.now, consumers)
        self.sched.after(self.p.check_every, self._periodic)

    def run(self) -> None:
        """The busy part with faults, then a quiet end in which everything must settle."""
        p = self.p
        for i in range(p.edges):
            self.start_edge(i)
        for _ in range(p.apps):
            self.start_app()
        for k in range(p.sessions):
            if p.session is None:
                self.sched.at(self.rng.uniform(0.0, p.duration * 0.5), self._publish, f"room-{k}", None)
                continue
            length = self.rng.uniform(*p.session)
            start = self.rng.uniform(0.0, p.duration - length)
            self.sched.at(start, self._publish, f"room-{k}", None)
            self.sched.at(start + length, self._end_session, f"room-{k}")
        self.sched.at(self.rng.uniform(0.5, 2.0), self._fault)
        self.sched.at(0.25, self._periodic)
        self.sched.run(p.duration)
        self.faulting = False
        self.partitioned.clear()
        self.p = replace(self.p, pipeline_per_tag=min(self.p.pipeline_per_tag, 0.002))
        for pub in list(self.pubs.values()):
            self._leave(pub, graceful=True)
        if not self.apps:
            self.start_app()
        quiet = p.limits.reconnect_grace + p.limits.buffer_seconds + 30.0
        self.sched.run(p.duration + quiet)
        self.check.final()

    def _end_session(self, name: str) -> None:
        self.finished[name] = None
        for pub in [p for p in self.pubs.values() if p.name == name]:
            self._leave(pub, graceful=True)


def _consumer(link: SimLink) -> bool:
    """The link reaches an app that takes streams."""
    return link.app.alive and not link.app.draining
