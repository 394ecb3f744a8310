"""Recent key-press times, shared between the input source (writer) and the audio source (reader).

The audio source rejects an impulsive VAD frame as a keyboard click when a key was pressed close
to it (``station.vad``). The input source calls ``note`` from its keyboard hook thread for every
key press; the audio worker asks ``within_each`` for a block of frames. Only times are kept (station clock,
integer ns), never which key.

An input source that reads its events in batches (the XI2 backend waits up to 400 ms between
reads to save wake-ups) says so with ``defer(t_ns)`` before such a wait and ``resume()`` after
the next read is noted; ``complete_until(now)`` tells the audio worker up to which time every
press has been noted, so that it classifies a frame only once the presses near it are known.
"""

from __future__ import annotations

import threading

import numpy as np


class RecentKeyPresses:
    """Thread-safe ring of the last ``capacity`` key-press times (ns, station clock).

    ``note`` is O(1) and holds a lock for a few list operations only, so the hook thread never
    blocks long. ``within_each`` sorts a copy of the ring (so presses noted out of order are
    found too) and looks each window up in it. Presses older than the ring's capacity are
    forgotten: with 256 entries and 20 keys/s that is 12 s of history, far more than the audio
    pipeline's delay.
    """

    def __init__(self, capacity: int = 256):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._times = [0] * capacity
        self._capacity = capacity
        self._next = 0        # slot the next note goes to
        self._count = 0       # total notes so far
        self._lock = threading.Lock()
        self._deferred_since: int | None = None   # presses after this may not be noted yet

    def note(self, t_ns: int) -> None:
        """Record a key press at t_ns (station clock, ns)."""
        with self._lock:
            self._times[self._next] = t_ns
            self._next = (self._next + 1) % self._capacity
            self._count += 1

    def defer(self, since_ns: int) -> None:
        """The noting thread stops reading for a while: presses after since_ns (ns, station
        clock) may not be noted until ``resume``."""
        self._deferred_since = since_ns

    def resume(self) -> None:
        """The noting thread has read and noted everything up to now."""
        self._deferred_since = None

    def complete_until(self, now_ns: int) -> int:
        """A time (ns) up to which every key press has been noted: now_ns, or the time from
        which the input source defers its reads (see ``defer``)."""
        since = self._deferred_since
        return now_ns if since is None else min(since, now_ns)

    def any_within(self, t0_ns: int, t1_ns: int) -> bool:
        """Whether a key press was noted at a time in [t0_ns, t1_ns] (inclusive, ns)."""
        return bool(self.within_each(np.array([t0_ns]), np.array([t1_ns]))[0])

    def within_each(self, t0_ns: np.ndarray, t1_ns: np.ndarray) -> np.ndarray:
        """Per window [t0, t1] (inclusive, ns): whether a remembered key press lies in it, as a
        bool array; ``any_within`` for many windows at once (the audio worker asks for a block
        of frames)."""
        with self._lock:
            n = min(self._count, self._capacity)
            times = np.sort(np.array(self._times[:n] if self._count <= self._capacity else self._times,
                                     dtype=np.int64))
        lo = np.searchsorted(times, np.asarray(t0_ns, dtype=np.int64), side="left")
        hi = np.searchsorted(times, np.asarray(t1_ns, dtype=np.int64), side="right")
        return hi > lo

    def __len__(self) -> int:
        """How many presses are remembered (at most capacity)."""
        with self._lock:
            return min(self._count, self._capacity)

    @property
    def total(self) -> int:
        """How many presses were noted since creation."""
        return self._count
