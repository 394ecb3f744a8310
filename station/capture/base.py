"""What every source implements, and the sink it writes to.

A source is started with a sink and must:
- stamp every event with ``station.clock.monotonic_ns()`` (or a better-aligned station-clock time,
  e.g. the ADC time of an audio frame),
- call ``sink.put(event)`` / ``sink.put_many(events)``, or ``sink.put_batch(batch)`` for events
  it already holds in columns (``events.Batch``: no Python object per event), without blocking its
  hook or callback thread for long (the sink is a bounded in-memory queue; on overflow it counts
  drops),
- report its state changes as ``SourceHealth`` events (``ok`` / ``degraded`` / ``lost``) and keep
  retrying when its device goes away (degrade, don't die),
- stop promptly on ``stop()`` (within 1 s).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol

from station.clock import monotonic_ns
from station.eventqueue import EventSink
from station.events import DEFAULT_LAG_NS, SourceHealth
from station.osthread import named
from station.watermark import STALL_NS, StallGuard

BACKOFF_START_S = 0.1   # first wait before reconnecting to a lost server (s)
BACKOFF_MAX_S = 2.0     # the wait doubles up to this (s)


class Source(Protocol):
    name: str

    def start(self, sink: EventSink) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> dict[str, Any]:
        """Current state and counters for the health beat, e.g. {"state": "ok", "overflows": 0}."""
        ...

    # Optional: ``delivered_until() -> int | None``: the station time (ns) up to which this source
    # has put every event it will ever emit into the sink (None: no such bound, e.g. while it is
    # lost). A source whose events reach the sink later than DEFAULT_LAG_NS after their time (the
    # audio source hands over whole blocks, the scenario runs behind its clock on a slow machine)
    # reports it, so that the watermark waits. Optional: ``stall_ns`` (ns, or None: never): how
    # far behind now its bound may fall before it is declared stalled (default
    # ``station.watermark.STALL_NS``). Events of one stream (speech: of one channel) reach the
    # sink in time order.


def sources_watermark(sources, now_ns: int, lag_ns: int = DEFAULT_LAG_NS, guard: StallGuard | None = None) -> int:
    """The time (ns) up to which every live source has delivered its events: ``now_ns - lag_ns``
    (what a source without ``delivered_until`` promises), held back to what sources report
    through ``delivered_until``. With a ``guard``, a source that falls more than its stall limit
    behind is declared lost (a SourceHealth in the guard's sink) and then no longer holds it back;
    without one, nothing is skipped. Evaluate it before draining the queue: events counted here
    must be in the drain (and so must the guard's health events)."""
    mark = now_ns - lag_ns
    for src in sources:
        until = getattr(src, "delivered_until", None)
        if until is None:
            continue
        try:
            t = until()
        except Exception:  # a source's bug must not stop the recorder
            continue
        if t is None:
            continue
        t = int(t)
        if guard is not None:
            t = guard.bound(getattr(src, "name", "source"), t, now_ns, getattr(src, "stall_ns", -1))
        if t is not None:
            mark = min(mark, t)
    return mark


class SourcesWatermark:
    """``f(now_ns) -> ns``: ``sources_watermark`` with a ``StallGuard`` that reports stalled sources
    into ``sink`` (the queue the watermark's batch is drained from)."""

    def __init__(self, sources, sink: EventSink, lag_ns: int = DEFAULT_LAG_NS, stall_ns: int = STALL_NS):
        self.sources = sources
        self.lag_ns = lag_ns
        self.guard = StallGuard(sink, stall_ns)

    def __call__(self, now_ns: int) -> int:
        return sources_watermark(self.sources, now_ns, self.lag_ns, self.guard)


class HealthReporter:
    """Emits a SourceHealth event only when a source's state or detail changes."""

    def __init__(self, source: str, sink: EventSink):
        self.source = source
        self.sink = sink
        self.state: str | None = None
        self.detail = ""

    def report(self, state: str, detail: str = "", t_ns: int | None = None) -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        self.sink.put(SourceHealth(t_ns if t_ns is not None else monotonic_ns(), self.source, state, detail))


class ThreadedSource:
    """start/stop for a source with one worker thread (``_run``) and a self-pipe that wakes it:
    ``stop`` sets ``_stop``, writes to ``_wake_w`` (so a ``select`` on ``_wake_r`` returns), joins
    the thread (2 s at most) and closes the pipe. Subclasses set ``name`` and ``thread_name`` and
    call ``super().__init__()``."""

    name = "source"
    thread_name = "station-source"

    def __init__(self) -> None:
        self._sink: EventSink | None = None
        self._health: HealthReporter | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1

    def start(self, sink: EventSink) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} source already started")
        self._sink = sink
        self._health = HealthReporter(self.name, sink)
        self._stop.clear()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=named(self._run), name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1


def reconnect_loop(stop: threading.Event, session, on_reconnect=None) -> None:
    """The reconnect loop of the sources that read a server (X display): call ``session(connected)``
    until ``stop`` is set.

    ``session`` connects, calls ``connected()`` once it is connected, reads until the connection
    ends and returns; it reports its own failures through health and must not raise. Between
    sessions the loop waits ``BACKOFF_START_S``, doubling up to ``BACKOFF_MAX_S``; the wait starts
    again from ``BACKOFF_START_S`` after every session that got connected. Every connection after
    the first calls ``on_reconnect()``. Returns as soon as ``stop`` is set (within the wait)."""
    delay = BACKOFF_START_S
    first = True

    def connected() -> None:
        nonlocal first, delay
        if not first and on_reconnect is not None:
            on_reconnect()
        first = False
        delay = BACKOFF_START_S

    while not stop.is_set():
        session(connected)
        if stop.wait(delay):
            break
        delay = min(delay * 2, BACKOFF_MAX_S)
