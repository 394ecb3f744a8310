"""Keep a long-running station process's memory flat: fix glibc malloc's mmap threshold.

glibc serves large allocations (numpy arrays of a few hundred KB, zlib and SQLite buffers) with
mmap and returns them to the system when freed, but each such free raises the mmap threshold
(the "dynamic threshold", up to 32 MB). Afterwards those sizes come from the heap, where blocks of
varying size leave holes that are never given back: under the stress profile the agent's RSS grew
by about 1 MB a minute (8 MB in 270 s, 30 MB in 30 min) although Python and numpy held no more
live memory. Setting the thresholds explicitly turns the dynamic adjustment off (mallopt(3)):
with them the same run grew 2 MB (benchmarks/agent_bench.py, docs/operations.md).

Linux/glibc only; elsewhere (or when mallopt is missing, e.g. musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024     # glibc's default start value, now fixed
TRIM_THRESHOLD_BYTES = 256 * 1024     # free heap top above this is returned to the system


def limit_heap_growth() -> bool:
    """Fix the mmap and trim thresholds of this process's malloc. Returns True when glibc
    accepted both, False when not on glibc (nothing changed). Never raises."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return ok_mmap and ok_trim
