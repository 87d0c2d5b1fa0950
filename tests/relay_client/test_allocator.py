"""relay_client.allocator: big transient buffers stay in the heap, measured by the page faults
a process takes to allocate and free them again, in a fresh interpreter each time."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from relay_client import allocator

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")

# Two 3 MiB messages at a time, freed together: over glibc's own thresholds once they adjust
# (mmap at the largest block freed, trim at twice that), so the heap's top goes back to the
# kernel every round and the next round faults it in again; within ours, it stays.
CHURN = """
import json, resource, sys
from relay_client.allocator import tune_allocator
said = tune_allocator() if sys.argv[1] == "tune" else "not called"
def churn():
    for _ in range(20):
        a = b"\\1" * (3 << 20); b = b"\\2" * (3 << 20); del a, b
churn()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
churn()
print(json.dumps({"said": said, "faults": (faults() - before) / 20}))
"""


def churn(mode: str, **env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k not in (*allocator._ENV, allocator.OPT_OUT)}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_tuned_allocator_keeps_big_buffers_in_the_heap() -> None:
    default, tuned = churn("plain"), churn("tune")
    assert tuned["said"] == "glibc: mmap threshold 4 MiB, trim threshold 32 MiB"
    # 6 MiB faulted in again each round (1536 pages of 4 KiB) against none at all.
    assert default["faults"] > 1000
    assert tuned["faults"] < 10


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"RELAY_MALLOC_TUNE": "0"}, "unchanged: RELAY_MALLOC_TUNE=0"),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "unchanged: MALLOC_TRIM_THRESHOLD_ set in the environment"),
    ],
)
def test_the_operator_keeps_the_last_word(env: dict[str, str], said: str) -> None:
    result = churn("tune", **env)
    assert result["said"] == said
    assert result["faults"] > 1000  # glibc's own behaviour, as without the call
