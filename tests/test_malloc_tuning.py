"""The malloc thresholds that keep a long-running station process's RSS flat (see
station/malloc_tuning.py; the effect is measured by benchmarks/agent_bench.py)."""

import subprocess
import sys


def test_thresholds_are_set_in_a_fresh_process_on_glibc():
    """In a fresh interpreter (so this test process keeps its own malloc settings): glibc accepts
    both settings, and afterwards a freed large block no longer raises the mmap threshold, i.e.
    a 1 MB allocation after freeing a 16 MB one is still served by mmap (it shows in the
    process's mappings count as a new region)."""
    code = r'''
import ctypes, sys
from station.malloc_tuning import limit_heap_growth
assert limit_heap_growth() is True
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def maps():
    return sum(1 for _ in open("/proc/self/maps"))
big = libc.malloc(16 << 20); libc.free(big)     # would raise the dynamic threshold to 16 MB
before = maps()
blocks = [libc.malloc(1 << 20) for _ in range(8)]
after = maps()
print(after - before)
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 1, "1 MB blocks come from mmap: the threshold stayed fixed"


def test_without_the_fix_glibc_would_serve_them_from_the_heap():
    """The same probe without limit_heap_growth: the 1 MB blocks come from the heap after a
    16 MB free (no new mappings). This shows the probe above can tell the difference."""
    code = r'''
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def maps():
    return sum(1 for _ in open("/proc/self/maps"))
big = libc.malloc(16 << 20); libc.free(big)
before = maps()
blocks = [libc.malloc(1 << 20) for _ in range(8)]
print(maps() - before)
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == 0
