"""What the headset microphone heard that the station did not count as the candidate's speech.

Frames webrtcvad called speech can be rejected by the capture (``FrameFlag``): as another
person's voice far below the wearer's level (DISTANT) or as noise above the room's tracked noise
floor (NOISE). The report and the summaries say how long, so an assessor learns that a neighbour's
voice was heard and not counted.

DISTANT also marks the soft edges of the candidate's *own* words (webrtcvad's hang-over after a
word, a soft onset before one): in a quiet room about 3.7 s of the corpus's 40 s of speech, all
within a few hundred ms of the candidate's accepted speech. So "another voice" counts only runs of
DISTANT frames that are at least ``gap_ns`` (the talk-spurt bridge, 300 ms) away from the
candidate's accepted speech on both sides; DISTANT frames closer than that to one another form one
run. Measured on the corpus: quiet room 0 s, a neighbour at -20 dB in the candidate's pauses
3.8 s (an underestimate: the neighbour's words next to the candidate's are not counted).

Everything is a function of the journaled frames in time order, so a replay gives the same
figures whatever the batching (a run is counted once a frame ``gap_ns`` after it has been seen;
a run still open at the end of the session is not counted).
"""

from __future__ import annotations

import numpy as np

from station.events import FrameFlag


class RejectedVoice:
    """Running totals (ns) of the agent channel's rejected speech: ``other_voice`` (isolated
    DISTANT runs, see the module) and ``noise`` (every NOISE frame webrtcvad called speech)."""

    def __init__(self, gap_ns: int):
        self.gap_ns = int(gap_ns)
        self.totals = {"other_voice": 0, "noise": 0}
        self._own_end = -(2 ** 62)     # end (ns) of the last accepted speech frame
        self._run: list | None = None  # [end_ns, duration_ns] of a DISTANT run not yet decided
        self._run_clean = False        # no accepted speech within gap_ns before the run

    def add(self, t_ns, dur_ns, vad, speech, flags) -> None:
        """Agent-channel frames of one batch, in time order (arrays of equal length)."""
        t = np.asarray(t_ns, dtype=np.int64)
        if not len(t):
            return
        end = t + np.asarray(dur_ns, dtype=np.int64)
        own = np.asarray(speech, dtype=bool)
        flags = np.asarray(flags, dtype=np.int64)
        rejected = np.asarray(vad, dtype=bool) & ~own
        noise = rejected & ((flags & int(FrameFlag.NOISE)) != 0)
        if noise.any():
            self.totals["noise"] += int((end[noise] - t[noise]).sum())
        distant = rejected & ((flags & int(FrameFlag.DISTANT)) != 0)
        if self._run is None and not distant.any():
            if own.any():
                self._own_end = int(end[own].max())
            return
        step = own | distant
        for t0, t1, is_own in zip(t[step].tolist(), end[step].tolist(), own[step].tolist()):
            self._decide(t0)
            if is_own:
                self._run = None          # the candidate's own speech within gap_ns after the run
                self._own_end = t1
            elif self._run is None:
                self._run, self._run_clean = [t1, t1 - t0], t0 - self._own_end >= self.gap_ns
            else:
                self._run[0] = t1
                self._run[1] += t1 - t0
        self._decide(int(end.max()))

    def _decide(self, now_ns: int) -> None:
        """Count the open run once ``now_ns`` is gap_ns past it without the candidate's speech."""
        if self._run is not None and now_ns - self._run[0] >= self.gap_ns:
            if self._run_clean:
                self.totals["other_voice"] += self._run[1]
            self._run = None
