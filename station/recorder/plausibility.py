"""What the recorder accepts from the capture link: only capture streams, only plausible events.

The capture process runs beside the candidate; whatever it sends is checked as if it could lie.
``LinkChecks.check(batch, now_ns)`` returns the batch with every implausible row removed and the
violations found, as ``IntegrityEvent``s to journal (the report lists them; the engine alerts
the consoles):

- **streams** (``stream_refused``): only ``station.handover.CAPTURE_STREAMS``; health rows only of
  ``CAPTURE_SOURCES`` (a capture may not declare the journal, the recorder or itself healthy).
  Exam control, marks and contact markers come from authenticated consoles only.
- **time** (``future_events``, ``past_events``): an event later than
  ``now + max_future_ns`` (the capture stamps on the same monotonic clock, so only forged stamps
  are ahead) is dropped. An event earlier than the highest watermark the capture has declared (it
  said everything before that was delivered) is *late*: passed on when it is at most
  ``max_late_ns`` behind (a stalled source thread; the engine journals, counts and alerts it as a
  late event and leaves it out of the figures, the same live and in any replay), dropped as a
  backfill beyond. The batch's watermark itself is clamped to ``now`` and never moves back.
  A simulated link (scenario sources, practice mode only, the session marked simulated) runs a
  virtual clock at ``--speed`` x real time: its stamps are not checked against the recorder's.
- **rate** (``rate_exceeded``): per stream (speech: per channel) a token bucket in *event time*
  caps rows at what the hardware produces: speech frames at the configured frame rate per
  channel (+2 % for sound-card clock drift, burst 3), mouse bins at one per 10 ms, keys, clicks, scrolls, focus changes and health
  rows at generous human/hardware limits (``RATES``).

All limits are per capture link lifetime but the time floor survives reconnects (a reconnecting
capture must not backfill). Cost: one pass over each stream's timestamps (about 1 µs a row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from station.events import COLUMNS, Batch, IntegrityEvent
from station.handover import CAPTURE_SOURCES, CAPTURE_STREAMS

NS_PER_S = 1_000_000_000
# stream -> (rows per second, burst): what real hardware and people produce, with margin
RATES = {
    "key": (100.0, 50),       # auto-repeat (~30/s) with a fast typist on top
    "mouse": (100.0, 5),      # one bin per 10 ms
    "click": (50.0, 20),
    "scroll": (200.0, 100),   # high-resolution wheels
    "focus": (50.0, 20),
    "health": (20.0, 50),
    "device": (20.0, 200),    # the whole device set at start, then hot-plug
}
SPEECH_BURST = 3
RATE_MARGIN = 1.02   # sound cards' clocks drift against the monotonic clock (ppm to 1 %): never drop real frames


@dataclass
class _Bucket:
    tokens: float
    last_t: int | None = None


@dataclass
class LinkChecks:
    """Per-link checks (see module docstring). frame_ms: the speech frame length (ms);
    max_future_ns: how far ahead of the recorder's clock an event may be stamped."""

    frame_ms: int
    max_future_ns: int | None = 250_000_000     # None: no future check (a simulated link's virtual clock)
    max_late_ns: int = 10_000_000_000           # behind the declared watermark by more: a backfill, dropped
    floor_ns: int | None = None                 # highest watermark the capture declared
    _buckets: dict = field(default_factory=dict)

    def check(self, batch: Batch, now_ns: int) -> tuple[Batch, list[IntegrityEvent]]:
        problems: dict[str, list] = {}           # kind -> [count, details]

        def note(kind: str, n: int, what: str) -> None:
            entry = problems.setdefault(kind, [0, []])
            entry[0] += n
            entry[1].append(what)

        streams = {}
        for name, cols in batch.streams.items():
            n = len(cols["t_ns"])
            if n == 0:
                continue
            if name not in CAPTURE_STREAMS:
                note("stream_refused", n, f"{n} {name} row(s)")
                continue
            keep = np.ones(n, dtype=bool)
            if name == "health":
                ok = np.fromiter((s in CAPTURE_SOURCES for s in cols["source"]), dtype=bool, count=n)
                if not ok.all():
                    bad = sorted({s for s, good in zip(cols["source"], ok) if not good})
                    note("stream_refused", int((~ok).sum()), f"health of {', '.join(bad)[:80]}")
                keep &= ok
            t = np.asarray(cols["t_ns"], dtype=np.int64)
            future = t > now_ns + self.max_future_ns if self.max_future_ns is not None else np.zeros(n, dtype=bool)
            if future.any():
                note("future_events", int(future.sum()), f"{int(future.sum())} {name} up to "
                     f"{(int(t.max()) - now_ns) / 1e6:.0f} ms ahead")
            keep &= ~future
            if self.floor_ns is not None:
                # late (behind the declared watermark) but within the bound: passed on, and the
                # engine counts it as late against its own watermark (journaled, left out of the
                # figures); beyond the bound: a backfill, dropped here
                past = keep & (t < self.floor_ns - self.max_late_ns)
                if past.any():
                    note("past_events", int(past.sum()), f"{int(past.sum())} {name} up to "
                         f"{(self.floor_ns - int(t[past].min())) / 1e6:.0f} ms before the declared watermark")
                keep &= ~past
            over = self._rate_limit(name, cols, t, keep)
            if over:
                note("rate_exceeded", over, f"{over} {name} over {self._rate_text(name)}")
            streams[name] = cols if keep.all() else _select(name, cols, keep)
        watermark = min(batch.watermark_ns, now_ns) if self.max_future_ns is not None else batch.watermark_ns
        if self.floor_ns is not None:
            watermark = max(watermark, self.floor_ns)
        self.floor_ns = watermark
        events = [IntegrityEvent(now_ns, kind, "; ".join(details)[:300], count)
                  for kind, (count, details) in problems.items()]
        return Batch(batch.t_ns, streams, watermark), events

    # --------------------------------------------------------------- rates
    def _rate(self, name: str) -> tuple[float, int]:
        if name == "speech":
            return 1000.0 / self.frame_ms, SPEECH_BURST
        return RATES[name]

    def _rate_text(self, name: str) -> str:
        rate, _ = self._rate(name)
        return f"{rate:g}/s" + (" per channel" if name == "speech" else "")

    def _rate_limit(self, name: str, cols: dict, t: np.ndarray, keep: np.ndarray) -> int:
        """Clear ``keep`` for rows over the stream's rate (token bucket in event time, per channel
        for speech). Returns how many rows it dropped."""
        rate, burst = self._rate(name)
        per_ns = rate * RATE_MARGIN / NS_PER_S
        keys = cols["channel"].tolist() if name == "speech" else None
        dropped = 0
        times = t.tolist()
        for i in np.flatnonzero(keep).tolist():
            key = (name, keys[i]) if keys is not None else name
            b = self._buckets.get(key)
            ti = times[i]
            if b is None:
                b = self._buckets[key] = _Bucket(float(burst))
            elif b.last_t is not None and ti > b.last_t:
                b.tokens = min(float(burst), b.tokens + (ti - b.last_t) * per_ns)
            if b.last_t is None or ti > b.last_t:
                b.last_t = ti
            if b.tokens >= 1.0:
                b.tokens -= 1.0
            else:
                keep[i] = False
                dropped += 1
        return dropped


def _select(name: str, cols: dict, keep: np.ndarray) -> dict:
    idx = np.flatnonzero(keep)
    out = {}
    for col, kind in COLUMNS[name]:
        v = cols[col]
        out[col] = [v[i] for i in idx.tolist()] if kind == "str" else np.asarray(v)[idx]
    return out
