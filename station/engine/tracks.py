"""Incremental activity tracks: events in, interval sets out, independent of batching.

A ``SpanTrack`` turns elementary intervals (a voiced frame, a mouse bin) into activity spans:
neighbours closer than ``gap_ns`` are bridged and spans shorter than ``min_ns`` are dropped. The
last span stays *open* while more input could still extend it; it is closed once the track's
frontier (how far the stream is known) has passed its end by ``gap_ns``. Because a span closes only
when no later input can touch it, the closed spans are the same however the input was batched.

All times are integer ns on the station clock.
"""

from __future__ import annotations

import numpy as np

from station import intervals as iv


class GrowingIntervals:
    """Append-only sorted interval set with O(log n) window queries."""

    def __init__(self):
        self._buf = np.zeros((1024, 2), dtype=np.int64)
        self.n = 0

    def extend(self, arr: np.ndarray) -> None:
        if len(arr) == 0:
            return
        need = self.n + len(arr)
        if need > len(self._buf):
            size = len(self._buf)
            while size < need:
                size *= 2
            buf = np.zeros((size, 2), dtype=np.int64)
            buf[: self.n] = self._buf[: self.n]
            self._buf = buf
        self._buf[self.n: need] = arr
        self.n = need

    @property
    def all(self) -> np.ndarray:
        return self._buf[: self.n]

    def within(self, lo: int, hi: int) -> np.ndarray:
        """Intervals clipped to [lo, hi)."""
        a = self.all
        if self.n == 0 or hi <= lo:
            return iv.EMPTY.copy()
        i = int(np.searchsorted(a[:, 1], lo, side="right"))
        j = int(np.searchsorted(a[:, 0], hi, side="left"))
        return iv.clip(a[i:j], lo, hi)

    def last_end(self) -> int | None:
        return int(self._buf[self.n - 1, 1]) if self.n else None


class SpanTrack:
    """Bridged, length-filtered activity spans of one stream.

    gap_ns: elementary intervals whose gap is < gap_ns belong to one span.
    min_ns: closed spans shorter than this are dropped.
    """

    def __init__(self, gap_ns: int, min_ns: int = 0):
        self.gap_ns = int(gap_ns)
        self.min_ns = int(min_ns)
        self.closed = GrowingIntervals()
        self.open: tuple[int, int] | None = None
        self.frontier = -(2 ** 62)
        self._new: list[np.ndarray] = []   # closed since last take_new()

    def add(self, elementary: np.ndarray, frontier: int | None = None) -> None:
        """Add elementary intervals ((n, 2) int64, any order) and advance the frontier.

        frontier: the time up to which this stream is known (default: the latest end seen).
        """
        if len(elementary):
            parts = [elementary]
            if self.open is not None:
                parts.append(np.array([self.open], dtype=np.int64))
            merged = iv.bridged(np.concatenate(parts) if len(parts) > 1 else elementary, self.gap_ns)
            last_closed = self.closed.last_end()
            if last_closed is not None and len(merged) and merged[0, 0] < last_closed + self.gap_ns:
                # input older than what is already closed (late by more than the gap): keep it
                # apart rather than rewriting history; it can only happen with a misbehaving source.
                merged[0, 0] = max(merged[0, 0], last_closed)
                merged = merged[merged[:, 1] > merged[:, 0]]
            if len(merged):
                self._close(merged[:-1])
                self.open = (int(merged[-1, 0]), int(merged[-1, 1]))
            self.frontier = max(self.frontier, int(elementary[:, 1].max()))
        if frontier is not None:
            self.frontier = max(self.frontier, int(frontier))
        if self.open is not None and self.frontier - self.open[1] >= self.gap_ns:
            self._close(np.array([self.open], dtype=np.int64))
            self.open = None

    def _close(self, spans: np.ndarray) -> None:
        spans = iv.at_least(spans, self.min_ns) if self.min_ns else spans
        if len(spans):
            self.closed.extend(spans)
            self._new.append(spans)

    def flush(self, t_ns: int) -> None:
        """Close everything (session end at t_ns)."""
        self.frontier = max(self.frontier, t_ns)
        if self.open is not None:
            self._close(np.array([self.open], dtype=np.int64))
            self.open = None

    def active(self) -> bool:
        """An open span long enough to count (live indicator)."""
        return self.open is not None and self.open[1] - self.open[0] >= self.min_ns

    def within(self, lo: int, hi: int, provisional: bool = False) -> np.ndarray:
        """Closed spans clipped to [lo, hi); with provisional, the open span too (if long enough)."""
        out = self.closed.within(lo, hi)
        if provisional and self.active():
            extra = iv.clip(np.array([self.open], dtype=np.int64), lo, hi)
            if len(extra):
                out = np.concatenate((out, extra)) if len(out) else extra
        return out

    def take_new(self) -> np.ndarray:
        """Spans closed since the last call (for live timelines)."""
        if not self._new:
            return iv.EMPTY.copy()
        out = np.concatenate(self._new)
        self._new = []
        return out


class Points:
    """Append-only sorted time points with an integer attribute each (e.g. key presses)."""

    def __init__(self):
        self.t = np.zeros(4096, dtype=np.int64)
        self.attr = np.zeros(4096, dtype=np.int64)
        self.n = 0

    def extend(self, t: np.ndarray, attr: np.ndarray) -> None:
        """Add points; kept sorted by time (a late point is merged into place, stable)."""
        if len(t) == 0:
            return
        if (len(t) > 1 and np.any(np.diff(t) < 0)) or (self.n and t[0] < self.t[self.n - 1]):
            allt = np.concatenate((self.t[: self.n], t))
            alla = np.concatenate((self.attr[: self.n], attr))
            order = np.argsort(allt, kind="stable")
            self.n = 0
            t, attr = allt[order], alla[order]
        need = self.n + len(t)
        if need > len(self.t):
            size = len(self.t)
            while size < need:
                size *= 2
            for name in ("t", "attr"):
                old = getattr(self, name)
                new = np.zeros(size, dtype=np.int64)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.t[self.n: need] = t
        self.attr[self.n: need] = attr
        self.n = need

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.t[: self.n], self.attr[: self.n]

    def count_in(self, spans: np.ndarray, mask: np.ndarray | None = None) -> int:
        """How many points (optionally only where mask) fall inside the normalized spans."""
        t, _ = self.view()
        if mask is not None:
            t = t[mask]
        if len(spans) == 0 or len(t) == 0:
            return 0
        lo = np.searchsorted(t, spans[:, 0], side="left")
        hi = np.searchsorted(t, spans[:, 1], side="left")
        return int(np.sum(hi - lo))

    def window(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        t, a = self.view()
        i = int(np.searchsorted(t, lo, side="left"))
        j = int(np.searchsorted(t, hi, side="left"))
        return t[i:j], a[i:j]
