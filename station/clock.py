"""The one station clock.

Every event carries station time: integer nanoseconds of ``time.monotonic_ns()`` (CLOCK_MONOTONIC
on Linux, the clock PortAudio's ADC timestamps use too). Wall-clock time is recorded once per
session as an anchor pair and derived from it, so a stepped wall clock never moves an event.
"""

import time

monotonic_ns = time.monotonic_ns

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def wall_anchor() -> tuple[int, int]:
    """Return (monotonic_ns, wall_ns) read as close together as possible.

    The wall reading is bracketed by two monotonic readings and paired with their midpoint, so the
    anchor's error is at most half the bracket (typically < 1 µs).
    """
    before = time.monotonic_ns()
    wall = time.time_ns()
    after = time.monotonic_ns()
    return (before + after) // 2, wall


def boot_id() -> str:
    """The kernel's boot id: monotonic time is comparable only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def ms(value_ns: int) -> float:
    """Nanoseconds to milliseconds (float, for display only)."""
    return value_ns / NS_PER_MS
