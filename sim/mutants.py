"""``scripts/sim --mutants``: plant known bugs in the real cores and show the invariants catch each.

Each mutant monkeypatches one thing for the length of its run and is undone after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TextIO

from relay_client import appcore as ac
from relay_edge import accel, frames
from relay_edge import edgecore as ec
from relay_edge.outbox import Outbox

from .run import run_seed


@contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def ack_before_deliver() -> Any:
    """The app acks what it handed to the pipeline, before the pipeline finished it."""

    def _ack(self: Any, link: Any, sid: int, held: Any) -> None:
        seq = min(max(held.emitted, held.delivered), link.seen.get(sid, 0))
        if seq > link.acked.get(sid, 0):
            link.acked[sid] = seq
            link.acks[sid] = seq

    return _patched(ac.AppCore, "_ack", _ack)


class _Wire:
    """edgecore's ``wire`` module with Open built without its init tags."""

    def __getattr__(self, name: str) -> Any:
        return getattr(ec_wire, name)

    @staticmethod
    def Open(**fields: Any) -> frames.Open:  # stands in for the class
        return replace(frames.Open(**fields), init=())


ec_wire = ec.wire


def no_init_replay() -> Any:
    """A resumed stream's Open carries no metadata or sequence headers."""
    return _patched(ec, "wire", _Wire())


def two_consumers() -> Any:
    """A new link also takes streams that are live on another link (not closed there)."""
    link_up = ec.EdgeCore._link_up

    def _link_up(self: Any, event: Any) -> None:
        link_up(self, event)
        link = self.links[event.link_id]
        for stream in self.streams.values():
            if stream.link_id is not None and stream.link_id != event.link_id:
                stream.link_id = event.link_id
                link.load += 1
                self._mark(link, stream)

    return _patched(ec.EdgeCore, "_link_up", _link_up)


def forgotten_gap() -> Any:
    """Tags dropped by a buffer limit are skipped without a Gap frame."""
    take = Outbox.take

    def _take(self: Outbox, sid: int) -> Any:
        _, first, tags = take(self, sid)
        return None, first, tags

    return _patched(Outbox, "take", _take)


def no_dedupe() -> Any:
    """A stream opened again in the same process forgets what it already handed out."""
    open_ = ac.AppCore._open

    def _open(self: Any, link: Any, frame: frames.Open) -> None:
        open_(self, link, frame)
        held = self._streams.get(frame.uid)
        if held is not None:
            held.emitted = min(held.emitted, frame.seq - 1)

    return _patched(ac.AppCore, "_open", _open)


def early_drop() -> Any:
    """The buffer drops its oldest tags at a quarter of buffer_bytes."""
    trim = Outbox._trim

    def _trim(self: Outbox, now: float) -> None:
        full = self._buffer_bytes  # the outbox's copy of limits.buffer_bytes
        self._buffer_bytes = full // 4
        try:
            trim(self, now)
        finally:
            self._buffer_bytes = full

    return _patched(Outbox, "_trim", _trim)


MUTANTS: dict[str, Callable[[], Any]] = {
    "ack before deliver": ack_before_deliver,
    "no init-tag replay on resume": no_init_replay,
    "one stream on two consumers": two_consumers,
    "forgotten gap report": forgotten_gap,
    "replays not deduped": no_dedupe,
    "gap below the limit": early_drop,
}


def run_mutants(budget: int, out: TextIO) -> int:
    """Run each mutant over seeds 0.. until a violation; exit 0 only if every one was caught."""
    if accel.running() == "compiled":
        out.write("mutants patch the pure-Python core: run with RELAY_PURE=1 (scripts/sim does)\n")
        return 2
    caught = 0
    for name, plant in MUTANTS.items():
        found = None
        with plant():
            for seed in range(budget):
                outcome = run_seed(seed)
                if outcome.violation is not None:
                    found = outcome
                    break
        if found is None:
            out.write(f"mutant {name!r}: NOT caught in {budget} seeds\n")
            continue
        caught += 1
        out.write(f"mutant {name!r}: caught by seed {found.seed}: {found.violation}\n")
    out.write(f"mutants: {caught}/{len(MUTANTS)} caught\n")
    return 0 if caught == len(MUTANTS) else 1
