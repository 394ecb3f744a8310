"""The stall rule of the watermark, one definition for the capture and the recorder.

The watermark of a batch is the station time (ns) up to which every *live* source has delivered
its events: the minimum of what the sources report. A source that stops delivering would stop
time for everything (no contact, no figure would ever become final), so a source whose bound
lags more than ``STALL_NS`` behind now is declared stalled: ``StallGuard`` puts a
``SourceHealth(lost)`` event into the sink *before* it lets the watermark pass that source (the
watermark is taken before the queue is drained, so the loss is journaled in the very batch whose
watermark no longer waits). Events the stalled source delivers afterwards and that are older than
the watermark are late: journaled as they came, counted and alerted by the engine, and left out
of its figures (``station.engine.core``). Once the source's bound is back within ``STALL_NS / 2``
of now (hysteresis: no flapping at the limit) the guard reports it ``ok`` and it holds the
watermark again.
"""

from __future__ import annotations

from typing import Any

from station.events import SourceHealth

STALL_NS = 3_000_000_000   # a source this far behind now (ns) is declared stalled


class StallGuard:
    """Tracks which sources it declared stalled; ``bound`` says whether a source holds the
    watermark. sink: where the SourceHealth events go (an EventQueue: ``put``)."""

    def __init__(self, sink: Any, stall_ns: int = STALL_NS):
        self.sink = sink
        self.stall_ns = int(stall_ns)
        self.stalled: dict[str, int] = {}    # source name -> its bound when declared stalled (ns)

    def bound(self, name: str, until: int | None, now_ns: int, stall_ns: int | None = -1) -> int | None:
        """The source's bound ``until`` (ns) if it holds the watermark, else None.

        until None: the source has no bound (lost, or nothing to wait for): None.
        stall_ns: this source's own limit (ns); -1: the guard's; None: never declared stalled
        (a simulation that always delivers, however far behind its clock it runs)."""
        if until is None:
            return None
        limit = self.stall_ns if stall_ns == -1 else stall_ns
        if limit is None:
            return until
        lag = now_ns - until
        if name in self.stalled:
            if lag > limit // 2:
                return None
            del self.stalled[name]
            self.sink.put(SourceHealth(now_ns, name, "ok", "delivering again"))
            return until
        if lag > limit:
            self.stalled[name] = until
            self.sink.put(SourceHealth(until, name, "lost",
                                       f"stalled: nothing delivered for {lag // 1_000_000} ms; "
                                       "its later events count as late"))
            return None
        return until
