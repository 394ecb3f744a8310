"""The bounded in-memory queue between event producers (sources, the hand-over server) and
the recorder loop, and the sink interface producers write to."""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable, Protocol

from station.events import Batch


class EventSink(Protocol):
    def put(self, event: Any) -> None: ...
    def put_many(self, events: Iterable[Any]) -> None: ...
    def put_batch(self, batch: Any) -> None: ...


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
