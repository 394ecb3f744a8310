"""The malloc thresholds that keep a long-running station process's RSS flat (see
station/malloc_tuning.py; the effect over time is measured by benchmarks/agent_bench.py)."""

import subprocess
import sys

# Frees a 16 MB block (which, with glibc's dynamic threshold, lifts the mmap threshold to 16 MB),
# then allocates 8 blocks of 1 MB and prints how many bytes glibc serves by mmap (mallinfo2().hblkhd).
PROBE = r'''
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    from station.ops.malloc_tuning import limit_heap_growth
    assert limit_heap_growth() is True
libc.free(libc.malloc(16 << 20))
before = libc.mallinfo2().hblkhd
blocks = [libc.malloc(1 << 20) for _ in range(8)]
print(libc.mallinfo2().hblkhd - before)
'''


def probe(mode: str) -> int:
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def test_large_blocks_stay_on_mmap_after_a_bigger_free():
    """With the fixed thresholds, the 1 MB blocks are mmapped (returned to the system on free)
    even after a 16 MB block was freed."""
    assert probe("fixed") >= 8 << 20


def test_without_the_fix_glibc_moves_them_to_the_heap():
    """The same probe without limit_heap_growth: after the 16 MB free, glibc serves the 1 MB
    blocks from the heap (this is what fragmented the agent's heap). Shows the probe can tell."""
    assert probe("default") == 0
