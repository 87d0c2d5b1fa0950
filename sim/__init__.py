"""Deterministic simulation of the link's sans-I/O cores (issue #14 items 2 and 3).

One seeded scheduler drives edge and app cores through a simulated network, clocks
with skew, publishers and faults, and checks the delivery invariants after every
step. Pure Python, no asyncio: ``scripts/sim`` runs it; see ``sim/README.md``.
"""
