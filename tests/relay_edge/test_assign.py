"""``assign.pick``: which link a new or resumed stream goes to, table by table."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relay_edge import cli
from relay_edge.assign import Candidate, pick
from relay_edge.edge import MAX_LINKS, Edge, EdgeConfig


def link(instance: str, streams: int = 0, *, wants: bool = True, patterned: bool = False) -> Candidate:
    return Candidate(instance=instance, patterned=patterned, wants=wants, streams=streams)


CASES = [
    # (what it shows, links, previous consumer, index picked)
    ("no link", [], None, None),
    ("no link wants it", [link("a", wants=False), link("b", wants=False)], None, None),
    ("the only link", [link("a", 5)], None, 0),
    ("least streams per link", [link("a", 3), link("b", 1), link("c", 2)], None, 1),
    ("a tie goes to the longest-lived link", [link("a", 1), link("b", 1)], None, 0),
    # Two links to instance a hold 2 streams together; b's one link holds 2 too, c's none.
    ("counted per instance", [link("a", 1), link("a", 1), link("b", 2), link("c", 0)], None, 3),
    # a's two links hold 3 streams: b (2) is less loaded although its one link holds more than either of a's.
    ("per instance before per link", [link("a", 1), link("a", 2), link("b", 2)], None, 2),
    ("per link within the least-loaded instance", [link("a", 2), link("a", 0), link("b", 3)], None, 1),
    (
        "links that don't want it still count for their instance",
        [link("a", 0), link("a", 4, wants=False), link("b", 1)],
        None,
        2,
    ),
    ("the previous consumer first", [link("a", 0), link("b", 9)], "b", 1),
    ("the previous consumer's least-loaded link", [link("b", 3), link("a", 0), link("b", 1)], "b", 2),
    ("the previous consumer only if it wants it", [link("a", 0), link("b", 0, wants=False)], "b", 0),
    ("a gone previous consumer: balance", [link("a", 2), link("b", 1)], "z", 1),
    ("no previous consumer yet (empty)", [link("", 5), link("b", 1)], "", 1),
    ("patterned before catch-all", [link("a", 0), link("b", 7, patterned=True)], None, 1),
    (
        "a patterned link that doesn't match is no candidate",
        [link("a", 0), link("b", 0, patterned=True, wants=False)],
        None,
        0,
    ),
    (
        "balance among the patterned",
        [link("a", 0), link("b", 4, patterned=True), link("c", 2, patterned=True)],
        None,
        2,
    ),
    (
        "the previous consumer before a pattern",
        [link("a", 3), link("b", 0, patterned=True)],
        "a",
        0,
    ),
]


@pytest.mark.parametrize(("links", "previous", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_pick(links: list[Candidate], previous: str | None, expected: int | None) -> None:
    assert pick(links, previous) == expected


def test_streams_spread_evenly_over_instances_not_links() -> None:
    """Assign 12 streams one by one over 3 links reaching 2 instances: 6 per instance."""
    instances = ["a", "a", "b"]
    held = [0, 0, 0]
    for _ in range(12):
        index = pick([link(inst, n) for inst, n in zip(instances, held, strict=True)], None)
        assert index is not None
        held[index] += 1
    assert (held[0] + held[1], held[2]) == (6, 6)
    assert abs(held[0] - held[1]) <= 1


@pytest.mark.parametrize("links", [0, MAX_LINKS + 1])
def test_links_per_upstream_is_bounded(links: int) -> None:
    with pytest.raises(ValueError, match=f"links per upstream must be 1 to {MAX_LINKS}"):
        Edge(EdgeConfig(secret="s" * 32, upstreams=("ws://127.0.0.1:9/relay",), links=links))
    result = CliRunner().invoke(cli.main, ["serve", "--secret", "s" * 32, "--links", str(links)])
    assert result.exit_code == 2
    assert f"Invalid value for '--links': {links} is not in the range 1<=x<={MAX_LINKS}" in result.output
