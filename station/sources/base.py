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

import collections
import os
import threading
from typing import Any, Iterable, Protocol

from ..clock import monotonic_ns
from ..events import DEFAULT_LAG_NS, Batch, SourceHealth
from ..osthread import named


class EventSink(Protocol):
    def put(self, event: Any) -> None: ...
    def put_many(self, events: Iterable[Any]) -> None: ...
    def put_batch(self, batch: Any) -> None: ...


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
    # audio source hands over whole blocks) reports it, so that ``sources_watermark`` waits.


MAX_SOURCE_LAG_NS = 3_000_000_000   # the watermark never lags more than this behind "now"


def sources_watermark(sources, now_ns: int, lag_ns: int = DEFAULT_LAG_NS, max_lag_ns: int = MAX_SOURCE_LAG_NS) -> int:
    """The time (ns) up to which every source has delivered its events: ``now_ns - lag_ns``, held
    back to what sources report through ``delivered_until``, but never more than max_lag_ns
    behind now (a source that stalls reports itself lost through its health; it does not stop
    time). Evaluate it before draining the queue: events counted here must be in the drain."""
    mark = now_ns - lag_ns
    for src in sources:
        until = getattr(src, "delivered_until", None)
        if until is None:
            continue
        try:
            t = until()
        except Exception:  # a source's bug must not stop the recorder
            continue
        if t is not None:
            mark = min(mark, int(t))
    return max(mark, now_ns - max_lag_ns)


class EventQueue:
    """Thread-safe bounded FIFO of events between sources and the recorder loop.

    Items are events, or whole ``events.Batch`` objects (``put_batch``: the recorder's hand-over
    server passes on what a capture process sent without taking it apart). ``put`` never blocks:
    when ``max_events`` events are waiting, the event (or batch) is dropped and counted in
    ``dropped`` (the recorder reports it in health). ``drain`` takes everything waiting, in
    arrival order; ``len()`` is the number of events waiting.
    """

    def __init__(self, max_events: int = 1_000_000):
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._waiting = 0       # events waiting (a batch counts its events)
        self.max_events = max_events
        self.dropped = 0
        self.accepted = 0
        self.wakeup = threading.Event()

    def put(self, event: Any) -> None:
        with self._lock:
            if self._waiting >= self.max_events:
                self.dropped += 1
                return
            self._items.append(event)
            self._waiting += 1
            self.accepted += 1

    def put_many(self, events: Iterable[Any]) -> None:
        with self._lock:
            for event in events:
                if self._waiting >= self.max_events:
                    self.dropped += 1
                    continue
                self._items.append(event)
                self._waiting += 1
                self.accepted += 1

    def put_batch(self, batch: Any) -> None:
        """Queue a whole ``events.Batch`` (all its events, or none when they do not fit)."""
        n = batch.count()
        if n == 0:
            return
        with self._lock:
            if self._waiting + n > self.max_events:
                self.dropped += n
                return
            self._items.append(batch)
            self._waiting += n
            self.accepted += n

    def drain(self) -> list[Any]:
        """Everything waiting (events and batches), in arrival order."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._waiting = 0
        return items

    def drain_batch(self, now_ns: int, watermark_fn) -> Batch:
        """Everything waiting as one ``Batch`` stamped now_ns (``Batch.from_items``), with the
        watermark ``min(now_ns, watermark_fn(now_ns))`` taken *before* the drain, so that every
        event the watermark counts as delivered is in this batch or an earlier one."""
        watermark = min(now_ns, watermark_fn(now_ns))
        return Batch.from_items(now_ns, self.drain(), watermark_ns=watermark)

    def drain_events(self) -> list[Any]:
        """Everything waiting as single events (batches taken apart), in arrival order: for
        consumers that want event objects (tools, tests), not the recorder."""
        out: list[Any] = []
        for item in self.drain():
            if isinstance(item, Batch):
                out.extend(item.events())
            else:
                out.append(item)
        return out

    def __len__(self) -> int:
        return self._waiting


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
    initialise ``_sink, _health, _thread, _stop, _wake_r, _wake_w`` in ``__init__``."""

    name = "source"
    thread_name = "station-source"

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
