"""glibc's allocator, set for an app that receives video: big buffers stay in the heap.

A video stream reaches the app as WebSocket messages of hundreds of KiB to a few MiB, each
read into fresh buffers, sliced into tags and freed a moment later. glibc serves a block that
big with mmap (its threshold starts at 128 KiB), and gives the top of the heap back to the
kernel once more than twice the last such block is free there. Either way the next message
takes page faults on memory the kernel zeroes first: in a flood of one 720p stream that was a
third of the app's CPU in the kernel (``bench/README.md``, issue #15).

:func:`tune_allocator` raises both thresholds: blocks up to :data:`MMAP_THRESHOLD` come from
the heap, and up to :data:`TRIM_THRESHOLD` of free heap is kept for the next message. The cost
is that much resident memory held after a burst; an audio-only app allocates nothing that big,
so nothing changes for it. The edge does not call it: it gained little, and its memory budget
(a 256 MB machine) comes first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
# mallopt's parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The operator's own settings (glibc reads them at start) win over ours.
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OPT_OUT = "RELAY_MALLOC_TUNE"

_done: str | None = None


def tune_allocator() -> str:
    """Raise glibc's mmap and trim thresholds for this process, once; returns what it did.

    Nothing is changed off glibc, when the environment sets either threshold already, or with
    ``RELAY_MALLOC_TUNE=0``. ``relay-client`` calls it at start; an app that mounts a
    :class:`~relay_client.Receiver` for video calls it itself.
    """
    global _done
    if _done is None:
        _done = _tune()
        log.debug("allocator: %s", _done)
    return _done


def _tune() -> str:
    if os.environ.get(OPT_OUT, "") == "0":
        return f"unchanged: {OPT_OUT}=0"
    preset = [name for name in _ENV if name in os.environ]
    if preset:
        return f"unchanged: {', '.join(preset)} set in the environment"
    if platform.libc_ver()[0] != "glibc":
        return "unchanged: not glibc"
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # The trim threshold first: setting the mmap threshold ends glibc's own adjusting of both.
    if not (mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        return "unchanged: mallopt refused"
    return f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
