"""The headset wearer's own voice level, and which microphone frames are too quiet to be it.

A close-talking headset microphone hears its wearer 20-35 dB louder than a voice a metre or two
away (a neighbouring candidate on their own call). ``OwnVoice`` keeps a reference level of the
wearer's speech on the ITU-T P.56 active-level scale (dBFS) and says, frame by frame, whether a
frame that the VAD calls speech is within ``margin_db`` of it; a frame far below is another
person's voice (``FrameFlag.DISTANT``), whatever the VAD says. The customer channel never uses
this.

The reference:

* its **anchor** is the calibrated speech level of the headset profile (``speech_level_dbfs``,
  P.56 at the mouth reference point), else ``audio.own_level_dbfs`` (-26 dBFS, ITU-T's nominal
  active speech level);
* it is **learned** from the wearer's own speech during the exam (people speak softer or louder
  than the technician did): the ``LEARN_PERCENTILE`` (80th) percentile of the levels of the last
  ``window_frames`` frames accepted as own speech, plus ``PERCENTILE_TO_ACTIVE_DB`` (the measured
  offset between that percentile of 20 ms frame levels and the P.56 active level of the same
  speech; tests/data/corpus), once ``min_frames`` frames were accepted; before that, from
  ``EARLY_FRAMES`` (1 s) on, it may only rise above the anchor (a wearer louder than the technician: a stricter check sooner, which
  keeps a neighbour out in the first seconds; lowering it needs ``min_frames`` of speech);
* the learned value is **clamped** to anchor +/- ``clamp_db``. A candidate who shouts once moves a
  robust percentile over a long window hardly at all, and never more than ``clamp_db``; frames
  rejected as distant are not learned from, so a neighbour's voice cannot pull the level down.

Hold: after a frame at or above the threshold, the next ``hold_frames`` frames that the VAD calls
speech are kept too (the soft ends of the wearer's words), as long as they are within
``margin_db + HOLD_EXTRA_DB`` of the reference. Onsets are not looked ahead at: the capture
decides each frame once, in time order, so a replay of the journaled frames reproduces it.

Pure and deterministic (no clock, no I/O): the same frames in the same order give the same
decisions, whatever the block sizes. Cost: a few Python operations per frame; the percentile is
read from a 0.5 dB histogram (``station.levelstats.RollingPercentile``) every UPDATE_EVERY (25)
accepted frames.
"""

from __future__ import annotations

from station.levelstats import RollingPercentile

LEARN_PERCENTILE = 80.0
PERCENTILE_TO_ACTIVE_DB = -2.3   # P.56 active level minus the 80th percentile of 20 ms frame levels (dB)
HOLD_EXTRA_DB = 6.0              # held frames may be this much quieter than the threshold (dB)
UPDATE_EVERY = 25                # the learned reference is recomputed after this many accepted frames
EARLY_FRAMES = 50                # accepted frames before the reference may rise above the anchor (1 s)


class OwnVoice:
    """Own-voice reference and per-frame decision for one microphone channel.

    anchor_dbfs: calibrated (or configured) own speech level, P.56 active level (dBFS).
    margin_db: frames more than this below the reference are not the wearer's (dB, > 0).
    clamp_db: the learned reference stays within anchor +/- this (dB; 0 = no learning).
    window_frames: frames the learned percentile is taken over (most recent accepted frames).
    min_frames: accepted frames needed before the learned value replaces the anchor (at most
    window_frames).
    hold_frames: frames kept after an accepted one (soft word ends), see the module docstring.
    Raises ValueError for a margin <= 0, a negative clamp or window sizes < 1.
    """

    def __init__(self, anchor_dbfs: float, *, margin_db: float = 12.0, clamp_db: float = 10.0,
                 window_frames: int = 3000, min_frames: int = 150, hold_frames: int = 10):
        if not margin_db > 0:
            raise ValueError(f"own-voice margin must be > 0 dB, got {margin_db}")
        if clamp_db < 0 or window_frames < 1 or min_frames < 1 or hold_frames < 0:
            raise ValueError("own-voice clamp must be >= 0 dB and the windows >= 1 frame")
        self.anchor_dbfs = float(anchor_dbfs)
        self.margin_db = float(margin_db)
        self.clamp_db = float(clamp_db)
        self.window_frames = int(window_frames)
        self.min_frames = min(int(min_frames), self.window_frames)   # a longer wait could never end
        self.hold_frames = int(hold_frames)
        self._levels = RollingPercentile(self.window_frames)
        self._held = 0
        self.reference_dbfs = self.anchor_dbfs
        self.accepted = 0
        self.rejected = 0

    @property
    def learned(self) -> bool:
        """True once the reference comes from the wearer's speech (min_frames accepted)."""
        return len(self._levels) >= self.min_frames

    @property
    def threshold_dbfs(self) -> float:
        """Frames below this level (dBFS) are not the wearer's (before the hold)."""
        return self.reference_dbfs - self.margin_db

    def _update_reference(self) -> None:
        if self.clamp_db == 0 or len(self._levels) < EARLY_FRAMES:
            return
        level = self._levels.percentile_dbfs(LEARN_PERCENTILE) + PERCENTILE_TO_ACTIVE_DB
        if not self.learned:             # early: only upwards (stricter), never below the anchor
            level = max(self.anchor_dbfs, level)
        self.reference_dbfs = min(self.anchor_dbfs + self.clamp_db, max(self.anchor_dbfs - self.clamp_db, level))

    def _learn(self, level_x10: int) -> None:
        self._levels.add(level_x10)
        if self.accepted % UPDATE_EVERY == 0:   # a count of frames, not blocks: replayable
            self._update_reference()

    def decide(self, levels_x10: list[int], candidates: list[bool]) -> list[bool]:
        """For each frame of a block, in time order: True = too far below the wearer's level
        (reject as DISTANT). levels_x10: frame levels in tenths of dBFS; candidates: the frame
        would otherwise be speech (VAD, gate, click and bleed checks passed). Non-candidates are
        never rejected and end a hold. Accepted frames are learned from; the reference is
        recomputed every UPDATE_EVERY accepted frames (whatever the block boundaries)."""
        out = []
        for level, cand in zip(levels_x10, candidates):
            thr_x10 = (self.reference_dbfs - self.margin_db) * 10.0
            if not cand:
                self._held = 0
                out.append(False)
                continue
            if level >= thr_x10:
                self._held = self.hold_frames
                keep = True
            elif self._held > 0 and level >= thr_x10 - HOLD_EXTRA_DB * 10.0:
                self._held -= 1
                keep = True
            else:
                self._held = 0
                keep = False
            if keep:
                self.accepted += 1
                self._learn(level)
            else:
                self.rejected += 1
            out.append(not keep)
        return out

    def status(self) -> dict[str, float | int | bool]:
        """Current figures for the audio source's status: reference, anchor and threshold (dBFS),
        whether learned, frames accepted / rejected as distant."""
        return {"own_level_dbfs": round(self.reference_dbfs, 1), "own_anchor_dbfs": round(self.anchor_dbfs, 1),
                "own_threshold_dbfs": round(self.threshold_dbfs, 1), "own_learned": self.learned,
                "own_accepted": self.accepted, "distant_rejected": self.rejected}
