"""``scripts/sim --scale``: the real cores at internet scale, one JSON line.

10 edges (regions), 10 app instances behind a least-connections load balancer, 10,000
streams (sessions of 2 to 10 minutes spread over the hour), a rolling deploy of every
instance each simulated minute (one instance every 6 s, Render-style: the new one
starts, the old one drains and closes with ``shutdown``), a graceful edge restart
every 6 minutes (its publishers reconnect to another region), a link cut a minute.
A tag stands for 10 s of audio (~0.4 M tags in the hour); every invariant is checked.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from relay_edge.limits import Limits

from .check import Violation
from .cores import APP_METER, EDGE_METER, RealCores
from .world import Params, World

HOUR = 3600.0
DEPLOY_EVERY = 60.0
EDGE_RESTART_EVERY = 360.0
SAMPLE_EVERY = 30.0
SETTLE = 30.0


def scale_params(edges: int = 10, instances: int = 10, streams: int = 10_000) -> Params:
    return Params(
        edges=edges,
        apps=instances,
        links_per_edge=instances,  # one link per instance at best: the balancer decides
        sessions=streams,
        duration=HOUR,
        tag_interval=10.0,
        tag_pad=(20, 60),
        fault_every=60.0,
        faults=("cut",),
        pipeline_per_tag=0.001,
        max_skew=2.0,
        detect=15.0,
        session=(120.0, 600.0),
        check_every=1.0,
        limits=Limits(),
    )


class _Scale:
    def __init__(self, world: World) -> None:
        self.world = world
        self.samples: list[float] = []
        self.empty_samples = 0
        self.counts: list[list[int]] = []

    def schedule(self) -> None:
        w = self.world
        p = w.p
        for minute in range(1, int(p.duration // DEPLOY_EVERY)):
            for i in range(p.apps):
                w.sched.at(minute * DEPLOY_EVERY + i * DEPLOY_EVERY / p.apps, self._deploy_oldest)
        for k in range(1, int(p.duration // EDGE_RESTART_EVERY)):
            w.sched.at(k * EDGE_RESTART_EVERY, w.restart_edge, k % p.edges)
        for k in range(1, int(p.duration // SAMPLE_EVERY)):
            w.sched.at(k * SAMPLE_EVERY, self._sample)

    def _deploy_oldest(self) -> None:
        w = self.world
        old = next((a for a in w.apps if a.ready and not a.draining), None)
        if old is not None:
            w.deploy(old)

    def _sample(self) -> None:
        """Streams open per serving instance (from the edges' Opens): max / min."""
        w = self.world
        # Instances serving for SETTLE s: a new one only gets streams that start after it.
        now = w.sched.now
        serving = {a.name: 0 for a in w.apps if a.ready and not a.draining and now - a.started >= SETTLE}
        app_of = {link.id: link.app.name for e in w.edges for link in e.links.values()}
        for ledger in w.check.streams.values():
            if not ledger.ended and ledger.open_on is not None:
                name = app_of.get(ledger.open_on[0])
                if name in serving:
                    serving[name] += 1
        counts = sorted(serving.values())
        self.counts.append(counts)
        if not counts or max(counts) == 0:
            return
        if min(counts) == 0:
            self.empty_samples += 1
            return
        self.samples.append(max(counts) / min(counts))


def run_scale(out: TextIO, streams: int = 10_000) -> int:
    """Run the hour; print the JSON line; exit 1 on a violation."""
    params = scale_params(streams=streams)
    world = World(0, params, RealCores())
    scale = _Scale(world)
    scale.schedule()
    for meter in (EDGE_METER, APP_METER):
        meter.on, meter.seconds = True, 0.0
    started = time.process_time()
    violation: Violation | None = None
    try:
        world.run()
    except Violation as exc:
        violation = exc
    finally:
        EDGE_METER.on = APP_METER.on = False
    check = world.check
    samples = sorted(scale.samples)
    result = {
        "edges": params.edges,
        "instances": params.apps,
        "streams": len(check.streams),
        "sessions": params.sessions,
        "simulated_s": round(world.sched.now, 1),
        "tags": check.tags,
        "lost_tags": check.lost(),
        "duplicates_within_consumer": 0 if violation is None else None,
        "max_replayed_tags": check.max_replay,
        "replayed_tags": check.replayed,
        "balance": round(samples[len(samples) // 2], 2) if samples else None,
        "balance_worst": round(samples[-1], 2) if samples else None,
        "balance_over": f"instances serving >= {SETTLE:g} s, median of {len(samples)} samples",
        "samples_with_an_idle_instance": scale.empty_samples,
        "streams_per_instance_median_sample": scale.counts[len(scale.counts) // 2] if scale.counts else None,
        "instances_started": world._ids["app"],
        "core_cpu_us_per_tag": _per_tag(EDGE_METER.seconds + APP_METER.seconds, check.tags),
        "edge_core_us_per_tag": _per_tag(EDGE_METER.seconds, check.tags),
        "app_core_us_per_tag": _per_tag(APP_METER.seconds, check.tags),
        "sim_cpu_s": round(time.process_time() - started, 1),
        "violation": str(violation) if violation else None,
    }
    out.write(json.dumps(result) + "\n")
    return 0 if violation is None else 1


def _per_tag(seconds: float, tags: int) -> float:
    return round(seconds / max(tags, 1) * 1e6, 1)
