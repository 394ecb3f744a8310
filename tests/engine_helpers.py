"""Build hand-made event sequences for engine tests, and run them through the engine in batches."""

from __future__ import annotations

from station import config
from station.engine import Engine
from station.events import Batch, ContactMarker, FocusChange, KeyClass, KeyEvent, MouseBin, SpeechFrame

S = 1_000_000_000
MS = 1_000_000
FRAME = 20 * MS


def cfg(**sections):
    base = config.load(system=False)
    return base.replace(**sections) if sections else base


def speech(channel: int, spans_s, start_s: float, end_s: float) -> list:
    """20 ms frames from start to end; voiced inside the given spans (seconds)."""
    out = []
    t = int(start_s * S)
    end = int(end_s * S)
    spans = [(int(a * S), int(b * S)) for a, b in spans_s]
    while t < end:
        voiced = any(a <= t and t + FRAME <= b for a, b in spans)
        out.append(SpeechFrame(t, channel, FRAME, -200 if voiced else -650, voiced, voiced))
        t += FRAME
    return out


def typing(start_s: float, end_s: float, step_s: float = 0.2, hold_s: float = 0.05,
           key_class: int = KeyClass.PRINTABLE, last_release_s: float | None = None) -> list:
    """Presses every step from start (inclusive) while < end; each released after hold."""
    out = []
    t = int(start_s * S)
    end = int(end_s * S)
    presses = []
    while t < end:
        presses.append(t)
        t += int(step_s * S)
    for i, p in enumerate(presses):
        out.append(KeyEvent(p, key_class, True))
        rel = p + int(hold_s * S)
        if i == len(presses) - 1 and last_release_s is not None:
            rel = int(last_release_s * S)
        out.append(KeyEvent(rel, key_class, False))
    return out


def mouse(start_s: float, end_s: float, step_s: float = 0.01) -> list:
    out = []
    t = int(start_s * S)
    while t < int(end_s * S):
        out.append(MouseBin(t, 1, 3))
        t += int(step_s * S)
    return out


def focus(t_s: float, category: str, wm_class: str = "") -> FocusChange:
    return FocusChange(int(t_s * S), 1, wm_class or category, "", 0, "", category)


def marker(t_s: float, action: str, kind: str = "phone", ref: str = "c1") -> ContactMarker:
    return ContactMarker(int(t_s * S), action, kind, ref, "a1")


def batches(events: list, step_s: float = 0.1, end_s: float | None = None, lag_s: float = 1.0) -> list[Batch]:
    """Split events into batches every step: a batch at time T holds events with t < T - 0.05 s
    not yet delivered; its watermark is T - lag."""
    events = sorted(events, key=lambda e: e.t_ns)
    end = int((end_s if end_s is not None else events[-1].t_ns / S + 1) * S)
    out = []
    i = 0
    T = int(step_s * S)
    while True:
        cut = T - 50 * MS
        j = i
        while j < len(events) and events[j].t_ns < cut:
            j += 1
        out.append(Batch.from_events(T, events[i:j], watermark_ns=T - int(lag_s * S)))
        i = j
        if T >= end and i >= len(events):
            break
        T += int(step_s * S)
    return out


def run(events: list, c=None, end_s: float | None = None, step_s: float = 0.1, **kw):
    """Feed events in batches, finish at end; returns (engine, outputs)."""
    eng = Engine(c or cfg(), **kw)
    outs = []
    bs = batches(events, step_s=step_s, end_s=end_s)
    for b in bs:
        outs += eng.ingest(b)
    outs += eng.finish(bs[-1].t_ns)
    return eng, outs
