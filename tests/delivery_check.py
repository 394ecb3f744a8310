"""Checking a source's ``delivered_until()`` against what it really puts into its sink.

``CheckedQueue`` is an ``EventQueue`` that numbers every event put into it. ``BoundSampler``
asks the source's bound every ``interval_s`` from a thread of its own (as the capture's batch
loop does, only much more often) while holding the queue's lock, so that it knows exactly how
many events were put before each answer. ``violations()`` lists every measurement event put
AFTER a bound B was reported whose ``t_ns`` is below B: an event the watermark had already
passed (the engine would count it late). ``assert_idle_keeps_up``: idle is not stalled.
"""

from __future__ import annotations

import threading
import time

from station.clock import monotonic_ns
from station.eventqueue import EventQueue
from station.events import FocusChange, KeyEvent, MouseBin, MouseClick, MouseScroll
from station.watermark import StallGuard
from tests.support import wait_for

INPUT = (KeyEvent, MouseBin, MouseClick, MouseScroll)
FOCUS = (FocusChange,)
MEASUREMENTS = INPUT + FOCUS


class CheckedQueue(EventQueue):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.log: list = []            # every event, in put order

    def put(self, event) -> None:
        with self.lock:
            self.log.append(event)
            super().put(event)

    def put_many(self, events) -> None:
        events = list(events)
        with self.lock:
            self.log.extend(events)
            super().put_many(events)

    def put_batch(self, batch) -> None:
        with self.lock:
            self.log.extend(batch.events())
            super().put_batch(batch)


class BoundSampler:
    """Samples ``source.delivered_until()`` into ``samples``: (events put before, bound, now).
    kinds: the event classes this source emits (the ones checked against its bound)."""

    def __init__(self, source, queue: CheckedQueue, kinds: tuple = MEASUREMENTS, interval_s: float = 0.002):
        self.source, self.queue, self.interval_s, self.kinds = source, queue, interval_s, kinds
        self.samples: list[tuple[int, int | None, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "BoundSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.queue.lock:
                n = len(self.queue.log)
                b = self.source.delivered_until()
                self.samples.append((n, b, monotonic_ns()))
            time.sleep(self.interval_s)

    def violations(self) -> list[str]:
        log = self.queue.log
        suffix_min = [None] * (len(log) + 1)    # least t_ns of the measurements from index i on
        m = None
        for i in range(len(log) - 1, -1, -1):
            e = log[i]
            if isinstance(e, self.kinds):
                m = e.t_ns if m is None else min(m, e.t_ns)
            suffix_min[i] = m
        out = []
        for n, b, _ in self.samples:
            if b is not None and suffix_min[n] is not None and suffix_min[n] < b:
                first = next(e for e in log[n:] if isinstance(e, self.kinds) and e.t_ns < b)
                out.append(f"bound {b} reported after {n} events, then {first!r} was put "
                           f"({(b - first.t_ns) / 1e6:.1f} ms behind it)")
        return out

    def bounds(self) -> list[int]:
        return [b for _, b, _ in self.samples if b is not None]


def idle_lag_ms(source) -> float | None:
    """How far (ms) the source's bound is behind now, or None when it has none."""
    b = source.delivered_until()
    return None if b is None else (monotonic_ns() - b) / 1e6


def assert_idle_keeps_up(sources, lag_ms: float) -> None:
    """Idle: each bound gets within lag_ms of now, and a StallGuard with a 0.5 s limit (a sixth
    of the real one) never declares it stalled over 1.2 s."""
    for src in sources:
        wait_for(lambda: (idle_lag_ms(src) or 1e9) < lag_ms, 5, f"{src.name}'s bound to keep up when idle")
    health = EventQueue()
    guard = StallGuard(health, 500_000_000)
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        now = monotonic_ns()
        for src in sources:
            assert guard.bound(src.name, src.delivered_until(), now) is not None, f"{src.name} declared stalled"
        time.sleep(0.05)
    assert health.drain() == []
