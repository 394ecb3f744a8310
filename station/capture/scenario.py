"""The scenario source: plays a simulated exam (``station.scenario.Scenario``) into a station.

``VirtualClock`` maps wall time to station time at ``speed`` x real time, starting at the
scenario's ``start_ns``; ``ScenarioSource`` is a ``station.capture.base.Source`` whose thread, every
~20 ms of wall time, hands ``scenario.events_until(clock.now())`` to the sink. At speeds beyond what
the machine can synthesize (about 150-250x on one core) the source simply runs as fast as it can;
no event is skipped either way.

Health: ``ok`` when started, ``lost`` (with the reason) if the scenario raises; the source then
stops emitting instead of taking the process down.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from station.capture.base import HealthReporter
from station.eventqueue import EventSink
from station.osthread import named
from station.scenario import Scenario, exam_scenario

__all__ = ["MAX_SPEED", "Scenario", "ScenarioSource", "VirtualClock", "check_speed", "exam_scenario"]

MAX_SPEED = 1000.0   # x real time; beyond a few hundred the machine cannot synthesize that fast anyway


def check_speed(speed, max_speed: float = MAX_SPEED) -> float:
    """``speed`` as a float if it is a finite number with 0 < speed <= max_speed; otherwise
    ValueError with a message fit for an operator (inf, nan, 0, negative, not a number)."""
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise ValueError(f"speed must be a number, got {speed!r}") from None
    if not (math.isfinite(value) and 0 < value <= max_speed):
        bound = f" and <= {max_speed:g}" if math.isfinite(max_speed) else ""
        raise ValueError(f"speed must be a finite number > 0{bound} (x real time), got {speed!r}")
    return value


class VirtualClock:
    """Station time for a scenario played at ``speed`` x real time:
    ``now() = start_ns + (monotonic_ns() - t0) * speed`` (integer ns), t0 taken at construction.
    Raises ValueError unless speed is finite and > 0 (``check_speed``; the command line also
    bounds it by MAX_SPEED)."""

    def __init__(self, start_ns: int, speed: float):
        self.start_ns = int(start_ns)
        self.speed = check_speed(speed, max_speed=math.inf)
        self.t0 = time.monotonic_ns()

    def now(self) -> int:
        return self.start_ns + int((time.monotonic_ns() - self.t0) * self.speed)


class ScenarioSource:
    """Feeds a Scenario's events to a sink, paced by a VirtualClock (see module docstring)."""

    name = "scenario"
    PERIOD_S = 0.02

    def __init__(self, scenario: Scenario, clock: VirtualClock):
        self.scenario = scenario
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health: HealthReporter | None = None
        self.emitted = 0
        self.error = ""
        self._delivered: int | None = scenario.complete_until   # set after each put (delivered_until)

    def start(self, sink: EventSink) -> None:
        if self._thread is not None:
            raise RuntimeError("scenario source already started")
        self._health = HealthReporter(self.name, sink)
        self._health.report("ok", f"simulated exam, seed {self.scenario.seed}",
                            t_ns=max(self.scenario.start_ns, self.clock.now()))
        self._thread = threading.Thread(target=named(self._run), args=(sink,), name="scenario-source", daemon=True)
        self._thread.start()

    MAX_STEP_NS = 5_000_000_000   # at most this much station time per step, so stop() stays prompt

    def _run(self, sink: EventSink) -> None:
        sc = self.scenario
        while not self._stop.is_set():
            target = min(self.clock.now(), sc.end_ns)
            step_to = min(target, sc.position_ns + self.MAX_STEP_NS)
            try:
                events = sc.events_until(step_to)
            except Exception as e:  # a bug in the simulation must not take the station down
                self.error = f"{type(e).__name__}: {e}"
                if self._health is not None:
                    self._health.report("lost", f"scenario failed: {self.error}"[:200], t_ns=step_to)
                self._delivered = None   # lost (journaled just above): it no longer holds the watermark
                return
            if events:
                sink.put_many(events)
                self.emitted += len(events)
            self._delivered = sc.complete_until   # only now: every event before it is in the sink
            if sc.finished:
                return
            if step_to >= target:   # caught up with the clock: wait for it
                self._stop.wait(self.PERIOD_S)

    # A simulation always delivers: however far it runs behind its clock (a machine slower than
    # the speed), the watermark waits for it and it is never declared stalled.
    stall_ns = None

    def delivered_until(self) -> int | None:
        """Station time (ns) before which every event of the scenario is in the sink (see
        ``station.capture.base``); None once it has finished or failed (nothing to wait for)."""
        return self._delivered

    def stop(self) -> None:
        """Stop emitting (returns within about 1 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    @property
    def finished(self) -> bool:
        """All events up to the scenario's end_ns have been emitted."""
        return self.scenario.finished

    def status(self) -> dict[str, Any]:
        sc = self.scenario
        if self.error:
            state = "lost"
        elif sc.finished:
            state = "finished"
        else:
            state = "ok"
        return {"state": state, "seed": sc.seed, "emitted": self.emitted,
                "progress": round(sc.progress(), 4), "speed": self.clock.speed,
                "lag_ms": max(0, min(self.clock.now(), sc.end_ns) - sc.position_ns) // 1_000_000,
                "error": self.error}
