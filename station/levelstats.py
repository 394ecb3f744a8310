"""Rolling percentiles of frame levels, and the noise floor tracked from them.

``RollingPercentile`` keeps the last ``window`` frame levels (tenths of dBFS, the integers the
``speech`` stream stores) in a 0.5 dB histogram and reads a percentile from it: O(1) per frame,
O(bins) per read. ``station.ownvoice`` uses it for the wearer's learned level, ``NoiseFloor``
here for the microphone's noise.

``NoiseFloor``: the ``percentile`` (10th) of the channel's frame levels at or above the static
energy gate over the last ``window_frames`` such frames (5 s), recomputed every ``UPDATE_EVERY`` frames; a frame is "not above
the noise" when it is less than ``margin_db`` above that floor. Minimum statistics in its
simplest form: speech has pauses, so the lower tail of the levels over a few seconds is the
noise, whatever its level; it follows a fan switched on within a few seconds, where webrtcvad's
own noise model can take ten seconds or more after a loud sound (measured: docs/vad.md). It
rejects frames only while the microphone is *noisy*: at least ``noisy_share`` (90 %) of the last
``noisy_frames`` (2 s) were at or above the gate, and ``min_frames`` were counted. In a quiet room
the pauses fall below the gate, the static gate does the work, and the floor (which would then be
the softest speech) is not used. Nor is it while the lower part of the levels is spread out:
the floor counts only when the ``STEADY_PCT`` (30th) percentile lies within ``STEADY_SPREAD_DB``
(3 dB) of it, as for a steady noise (20 ms frames of a fan or hiss: about 1 dB), not for
speech without pauses (its levels spread over 20 dB and more). Pure and deterministic: the same frames
in the same order give the same decisions, whatever the block sizes.
"""

from __future__ import annotations

from collections import deque

import numpy as np

BIN_X10 = 5            # histogram bin: 0.5 dB in tenths of dB
MIN_X10 = -1270        # the levels' floor (-127 dBFS)
UPDATE_EVERY = 25      # NoiseFloor recomputes its floor every this many frames
STEADY_PCT = 30.0      # NoiseFloor: the floor counts only when this percentile ...
STEADY_SPREAD_DB = 3.0  # ... is within this many dB of it (a steady noise, not soft speech)


class RollingPercentile:
    """Percentiles of the last ``window`` levels (tenths of dBFS, clamped to -127..0 dBFS)."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.window = int(window)
        self._ring: deque[int] = deque()
        self._hist = np.zeros((-MIN_X10) // BIN_X10 + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, level_x10: int) -> None:
        b = (max(MIN_X10, min(0, int(level_x10))) - MIN_X10) // BIN_X10
        self._ring.append(b)
        self._hist[b] += 1
        if len(self._ring) > self.window:
            self._hist[self._ring.popleft()] -= 1

    def percentile_dbfs(self, pct: float) -> float:
        """The pct-th percentile (0..100) in dBFS, at the centre of its 0.5 dB bin; -127 when empty."""
        n = len(self._ring)
        if n == 0:
            return MIN_X10 / 10.0
        rank = max(1, int(np.ceil(n * pct / 100.0)))
        b = int(np.searchsorted(np.cumsum(self._hist), rank))
        return (MIN_X10 + b * BIN_X10 + BIN_X10 / 2) / 10.0


class NoiseFloor:
    """Noise floor of one microphone channel (see the module docstring).

    margin_db: a frame must be at least this much above the floor to be speech (dB, > 0).
    window_frames / min_frames: frames the percentile is taken over / needed before it is used.
    percentile: which percentile of the levels is the floor (0..50).
    Raises ValueError for a margin <= 0 or a percentile outside 0..50.
    """

    def __init__(self, margin_db: float, *, window_frames: int = 250, min_frames: int = 50,
                 percentile: float = 10.0, noisy_frames: int = 100, noisy_share: float = 0.9):
        if not margin_db > 0:
            raise ValueError(f"noise margin must be > 0 dB, got {margin_db}")
        if not 0 <= percentile <= 50:
            raise ValueError(f"noise percentile must be 0..50, got {percentile}")
        self.margin_db = float(margin_db)
        self.percentile = float(percentile)
        self.min_frames = int(min_frames)
        self._levels = RollingPercentile(window_frames)
        self._count = 0
        self.floor_dbfs = MIN_X10 / 10.0
        self.noisy_frames = int(noisy_frames)
        self._need = noisy_share * self.noisy_frames
        self._above: deque[bool] = deque()
        self._n_above = 0

    @property
    def active(self) -> bool:
        """True while the mic is noisy: at least noisy_share of the last noisy_frames frames were
        at or above the static gate, and the floor is known."""
        return (len(self._above) == self.noisy_frames and self._n_above >= self._need
                and len(self._levels) >= self.min_frames)

    def below(self, levels_x10: list[int], gate_dbfs: float = MIN_X10 / 10.0) -> list[bool]:
        """Per frame, in time order: True = less than margin_db above the current floor. Every
        frame at or above gate_dbfs (dBFS; the static energy gate, which rejects the rest anyway)
        is then added to the statistics: digital silence or a noise below the gate does not hide
        a noise that starts later."""
        out = []
        gate_x10 = gate_dbfs * 10.0
        for level in levels_x10:
            out.append(self.active and level < (self.floor_dbfs + self.margin_db) * 10.0)
            above = level >= gate_x10
            self._above.append(above)
            self._n_above += above
            if len(self._above) > self.noisy_frames:
                self._n_above -= self._above.popleft()
            if not above:
                continue
            self._levels.add(level)
            self._count += 1
            if self._count % UPDATE_EVERY == 0 and len(self._levels) >= self.min_frames:
                low = self._levels.percentile_dbfs(self.percentile)
                steady = self._levels.percentile_dbfs(STEADY_PCT) - low <= STEADY_SPREAD_DB
                self.floor_dbfs = low if steady else MIN_X10 / 10.0
        return out
