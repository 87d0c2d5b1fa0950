"""Which consumer a stream goes to: one pure function, no I/O (docs/TOPOLOGY.md).

An edge may hold several links to one app instance (``--links N`` to a load-balanced
upstream lands N dialers on whichever instances the balancer picks), so load is
counted per distinct app instance (``hello.instance``) first and per link second:
two links that reached the same instance are one instance's worth of capacity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "pick"]


@dataclass(frozen=True)
class Candidate:
    """One link as the assignment sees it.

    ``instance`` is the peer's ``hello.instance``; ``patterned`` whether it named streams
    by pattern (``hello.patterns`` non-empty); ``wants`` whether it asked for this stream
    (its patterns match, or it has none); ``streams`` how many streams the link holds now.
    """

    instance: str
    patterned: bool
    wants: bool
    streams: int


def pick(candidates: Sequence[Candidate], previous: str | None) -> int | None:
    """Index of the link a stream goes to, or None when no link asked for it.

    1. Its previous consumer (``previous`` instance) while a link to it wants it (resume).
    2. Links that named the stream with a pattern before catch-all links.
    3. The fewest streams per *instance* (every link to it counted, wanting or not),
       then per link, then the first (the longest-lived link).
    """
    wanting = [i for i, c in enumerate(candidates) if c.wants]
    if not wanting:
        return None
    resumed = [i for i in wanting if candidates[i].instance == previous]
    if previous and resumed:
        return min(resumed, key=lambda i: (candidates[i].streams, i))
    wanting = [i for i in wanting if candidates[i].patterned] or wanting
    per_instance: Counter[str] = Counter()
    for c in candidates:
        per_instance[c.instance] += c.streams
    return min(wanting, key=lambda i: (per_instance[candidates[i].instance], candidates[i].streams, i))
