"""Per-frame voice activity: webrtcvad plus the station's own checks.

``FrameClassifier.classify_block`` turns a block of frames of int16 mono samples into the columns
of the ``speech`` stream (``classify``: one frame into a ``SpeechFrame``, the same code); per frame:

1. level: RMS in dBFS (0 dBFS = full-scale sine RMS convention is NOT used: 0 dBFS here is the RMS
   of a full-scale square wave, i.e. 20*log10(rms/32768)); silence is clamped to -127 dBFS;
2. webrtcvad's raw decision (``vad``) at the configured mode;
3. energy gate: frames below ``gate_dbfs`` (noise floor + margin from the headset profile) are not
   speech (flag GATED); on the agent channel, with a ``NoiseFloor`` (``station.levelstats``), also
   frames less than its margin above the noise floor tracked over the last seconds (flag NOISE):
   noise that came after the calibration (a fan, a noisy room) and that webrtcvad calls speech;
4. click rejection: a frame is impulsive (flag IMPULSIVE) when its crest factor (peak/RMS) is
   above ``crest_limit_db`` or when its loudest ``CLICK_SPAN_MS`` (5 ms) hold at least
   ``click_energy_share`` of its energy. A key click rings for a few ms: the crest factor of a
   ringing click over a 20 ms frame is only about 15 dB (and lower for the tail of a click that
   crossed into the next frame), but nearly all of its energy lies within 5 ms; voiced speech
   spreads over several pitch periods. An impulsive frame near a key press is a keyboard click,
   not speech (CLICK);
5. bleed suppression (agent channel only): when the customer signal's level in the same frame is
   known, the microphone picks up ``customer_level - coupling_db`` from the earpiece; a mic frame
   not louder than that plus ``bleed_margin_db`` is bleed, not agent speech (BLEED);
6. own voice (agent channel only, when an ``OwnVoice`` is given, ``station.ownvoice``): a frame
   that passed 1-5 but lies more than the own-voice margin below the wearer's own speech level
   (calibrated, then learned within bounds) is another person's voice, e.g. a neighbouring
   candidate (DISTANT).

The final ``speech`` decision is ``vad`` minus these rejections. Smoothing into talk spurts
(onset/hangover) happens later, in the metrics engine, so that it is replayable.

The classifier is pure given its inputs (no clock, no I/O), so the live audio source and the demo
scenario run exactly the same code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import webrtcvad

from station.events import FrameFlag, SpeechFrame
from station.levelstats import NoiseFloor
from station.ownvoice import OwnVoice

SILENCE_DBFS = -127.0
# the flags as plain ints for classify_block's per-frame loop (an IntEnum operation costs more)
_GATED, _NOISE, _IMPULSIVE, _CLICK, _BLEED, _DISTANT = (int(f) for f in (
    FrameFlag.GATED, FrameFlag.NOISE, FrameFlag.IMPULSIVE, FrameFlag.CLICK, FrameFlag.BLEED, FrameFlag.DISTANT))
CLICK_SPAN_MS = 5   # window of the energy-concentration check (ms)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (full scale = 32768), clamped at -127 dBFS."""
    if len(samples) == 0:
        return SILENCE_DBFS
    return float(levels_dbfs(np.asarray(samples).reshape(1, -1))[0])


def levels_dbfs(frames: np.ndarray) -> np.ndarray:
    """RMS levels (dBFS, clamped at -127) of the rows of a 2-D int16 array (the same code as
    ``level_dbfs`` and the classifier's, for a block of frames)."""
    n = frames.shape[1]
    total, _, _ = _energies(frames, n)
    return np.array([_dbfs(t / n) for t in total]) if n else np.full(len(frames), SILENCE_DBFS)


def _energies(frames: np.ndarray, span: int) -> tuple[list[float], list[float], list[float]]:
    """Per row of a 2-D int16 array: its energy (sum of squared samples), its largest squared
    sample, and its largest energy within ``span`` consecutive samples. One numpy pass for a
    whole block; exact, as int16 squares and their sums are integers far below 2**53."""
    x = frames.astype(np.float64)
    sq = x * x
    n = x.shape[1]
    if n == 0:
        zeros = [0.0] * len(x)
        return zeros, zeros, zeros
    e = np.cumsum(sq, axis=1)
    total = e[:, -1]
    best = total if span >= n else np.maximum(e[:, span - 1], (e[:, span:] - e[:, :-span]).max(axis=1))
    return total.tolist(), sq.max(axis=1).tolist(), best.tolist()


def _dbfs(mean_square: float) -> float:
    if mean_square <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (32768.0 * 32768.0)))


def _impulse(total: float, peak: float, best: float, n: int) -> tuple[float, float]:
    """(crest factor dB, energy share) from a frame's _energies; (0.0, 0.0) when silent."""
    if total <= 0:
        return 0.0, 0.0
    return 10.0 * math.log10(max(peak * n / total, 1e-300)), best / total


def impulse_measures(samples: np.ndarray, span: int) -> tuple[float, float]:
    """(crest factor in dB, largest share 0..1 of the energy within any ``span`` consecutive
    samples) of a frame; (0.0, 0.0) for a silent frame. A sine has a crest factor of 3 dB,
    speech ~10-15 dB, a click 15 dB and more; a click's energy lies within a few ms."""
    crest, share = impulse_measures_rows(np.asarray(samples).reshape(1, -1), span)
    return float(crest[0]), float(share[0])


def impulse_measures_rows(frames: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """``impulse_measures`` of each row of a 2-D int16 array (one numpy pass for the block):
    (crest factors in dB, energy shares 0..1)."""
    n = frames.shape[1]
    measures = [_impulse(t, p, b, n) for t, p, b in zip(*_energies(frames, span))]
    return (np.array([c for c, _ in measures], dtype=np.float64),
            np.array([s for _, s in measures], dtype=np.float64))


def crest_db(samples: np.ndarray) -> float:
    """Peak-to-RMS ratio in dB (see impulse_measures)."""
    return impulse_measures(samples, len(samples))[0]


def energy_share(samples: np.ndarray, span: int) -> float:
    """Largest share of the frame's energy in any ``span`` consecutive samples (see impulse_measures)."""
    return impulse_measures(samples, span)[1]


class FrameClassifier:
    """Classify frames of one channel.

    sample_rate: 8000/16000/32000/48000 Hz. frame_ms: 10/20/30. mode: webrtcvad 0..3.
    gate_dbfs: frames below this level are not speech. crest_limit_db / click_energy_share:
    impulsive thresholds (crest factor in dB; share of energy within CLICK_SPAN_MS).
    coupling_db / bleed_margin_db: earpiece-to-mic coupling loss and tolerance (agent channel).
    own_voice: the wearer's own-voice check (agent channel; None = none). noise_floor: the tracked
    noise floor (agent channel; None = none). Both keep state from frame to frame, like webrtcvad. Raises ValueError for a frame of the wrong length.
    """

    def __init__(self, channel: int, *, sample_rate: int = 16000, frame_ms: int = 20, mode: int = 2,
                 gate_dbfs: float = -54.0, crest_limit_db: float = 15.0, click_energy_share: float = 0.9,
                 coupling_db: float = 20.0, bleed_margin_db: float = 6.0, own_voice: OwnVoice | None = None,
                 noise_floor: NoiseFloor | None = None, detector: Any = None):
        self.channel = int(channel)
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_len = sample_rate * frame_ms // 1000
        self.dur_ns = frame_ms * 1_000_000
        self.vad = webrtcvad.Vad(mode) if detector is None else detector
        self.gate_dbfs = gate_dbfs
        self.crest_limit_db = crest_limit_db
        self.click_energy_share = click_energy_share
        self.click_span = max(1, sample_rate * CLICK_SPAN_MS // 1000)
        self.coupling_db = coupling_db
        self.bleed_margin_db = bleed_margin_db
        self.own_voice = own_voice if self.channel == 0 else None
        self.noise_floor = noise_floor if self.channel == 0 else None

    @classmethod
    def from_audio_config(cls, channel: int, audio: Any, *, gate_dbfs: float | None = None,
                          mode: int | None = None, coupling_db: float | None = None,
                          sample_rate: int | None = None, own_level_dbfs: float | None = None,
                          own_margin_db: float | None = None, noise_margin_db: float | None = None,
                          detector: Any = None) -> "FrameClassifier":
        """A classifier set up from the ``[audio]`` config section (``cfg.audio``), the one place
        that maps its keys onto the classifier: frame_ms, click_crest_db, click_energy_share,
        bleed_margin_db, and, unless given (from a headset profile or a calibration step),
        gate_dbfs = noise_floor_dbfs + gate_margin_db, mode = vad_mode, coupling_db =
        bleed_coupling_db, sample_rate. The agent channel (0) gets an ``OwnVoice`` check anchored
        at own_level_dbfs (the profile's speech level, else audio.own_level_dbfs) with
        own_margin_db (the profile's, else audio.own_margin_db; 0 = no own-voice check),
        own_clamp_db, own_learn_s, own_learn_min_s and own_hold_ms; and a ``NoiseFloor`` with
        noise_margin_db (unless given; 0 = none) over noise_window_s. detector: see the class (None = webrtcvad)."""
        margin = audio.own_margin_db if own_margin_db is None else own_margin_db
        own = None
        if channel == 0 and margin > 0:
            per_s = 1000 // audio.frame_ms
            own = OwnVoice(audio.own_level_dbfs if own_level_dbfs is None else own_level_dbfs,
                           margin_db=margin, clamp_db=audio.own_clamp_db,
                           window_frames=max(1, int(audio.own_learn_s * per_s)),
                           min_frames=max(1, int(audio.own_learn_min_s * per_s)),
                           hold_frames=audio.own_hold_ms // audio.frame_ms)
        noise = None
        noise_margin = audio.noise_margin_db if noise_margin_db is None else noise_margin_db
        if channel == 0 and noise_margin > 0:
            window = max(1, int(audio.noise_window_s * 1000 // audio.frame_ms))
            noise = NoiseFloor(noise_margin, window_frames=window, min_frames=max(1, window // 5),
                               noisy_frames=max(1, 2000 // audio.frame_ms))
        return cls(channel, sample_rate=audio.sample_rate if sample_rate is None else sample_rate,
                   frame_ms=audio.frame_ms, mode=audio.vad_mode if mode is None else mode,
                   gate_dbfs=audio.noise_floor_dbfs + audio.gate_margin_db if gate_dbfs is None else gate_dbfs,
                   crest_limit_db=audio.click_crest_db, click_energy_share=audio.click_energy_share,
                   coupling_db=audio.bleed_coupling_db if coupling_db is None else coupling_db,
                   bleed_margin_db=audio.bleed_margin_db, own_voice=own, noise_floor=noise, detector=detector)

    def impulsive(self, samples: np.ndarray) -> bool:
        """Click-like: crest factor above crest_limit_db, or at least click_energy_share of the
        energy within CLICK_SPAN_MS (the test classify_block applies to speech frames)."""
        crest, share = impulse_measures(samples, self.click_span)
        return crest > self.crest_limit_db or share >= self.click_energy_share

    def classify(self, samples: np.ndarray, t_ns: int, *, near_key_press: bool = False,
                 customer_level_dbfs: float | None = None) -> SpeechFrame:
        """One frame -> SpeechFrame: ``classify_block`` for a block of one frame.

        samples: int16 array of exactly frame_len samples. near_key_press: a key was pressed
        within the click window of this frame. customer_level_dbfs: the customer channel's level
        around the same frame (agent channel only; None = unknown). Raises ValueError for a frame
        of the wrong length.
        """
        if len(samples) != self.frame_len:
            raise ValueError(f"frame has {len(samples)} samples, expected {self.frame_len}")
        cols = self.classify_block(np.asarray(samples).reshape(1, -1), np.array([t_ns], dtype=np.int64),
                                   near_key_press=np.array([near_key_press]),
                                   customer_level_dbfs=None if customer_level_dbfs is None
                                   else np.array([customer_level_dbfs], dtype=np.float64))
        return SpeechFrame(t_ns=int(t_ns), channel=self.channel, dur_ns=self.dur_ns,
                           level_dbfs_x10=int(cols["level_dbfs_x10"][0]), vad=bool(cols["vad"][0]),
                           speech=bool(cols["speech"][0]), flags=int(cols["flags"][0]))

    def classify_block(self, frames: np.ndarray, t_ns: np.ndarray, *, near_key_press: np.ndarray | None = None,
                       customer_level_dbfs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Consecutive frames of this channel -> the ``speech`` stream's columns (``events.Batch``).

        frames: 2-D int16 array, one frame of frame_len samples per row, in time order (webrtcvad
        keeps state from frame to frame). t_ns: int64 start time of each frame (ns).
        near_key_press: bool per frame, a key was pressed within the click window (None = none).
        customer_level_dbfs: float per frame, the customer channel's level around the frame (dBFS;
        NaN or None = unknown); used on the agent channel only.
        The per-sample work is one numpy pass over the block (``_energies``); the live source (a
        block per 200 ms), the simulation and calibration run this same code. Only frames that
        webrtcvad calls speech and the gate lets through are checked for clicks. Raises
        ValueError for frames of the wrong length.
        """
        frames = np.ascontiguousarray(frames, dtype=np.int16)
        if frames.ndim != 2 or frames.shape[1] != self.frame_len:
            raise ValueError(f"frames have shape {frames.shape}, expected (n, {self.frame_len})")
        count, n = frames.shape
        total, peak, best = _energies(frames, self.click_span)
        near = [False] * count if near_key_press is None else np.asarray(near_key_press, dtype=bool).tolist()
        cust = (None if customer_level_dbfs is None or self.channel != 0
                else np.asarray(customer_level_dbfs, dtype=np.float64).tolist())
        is_speech, rate, gate = self.vad.is_speech, self.sample_rate, self.gate_dbfs
        dbfs = [_dbfs(t / n) for t in total]
        levels = [int(round(level * 10)) for level in dbfs]
        noisy = (self.noise_floor.below(levels, self.gate_dbfs) if self.noise_floor is not None
                 else [False] * count)
        data, size = frames.tobytes(), 2 * n   # frame i: data[i * size:(i + 1) * size]
        raws, speeches, flags = [], [], []
        # per-frame decisions on Python floats and ints: for a block of ~20 frames this is
        # cheaper than a dozen more numpy calls; the per-sample work is done above, for the block
        for i, level in enumerate(dbfs):
            raw = bool(is_speech(data[i * size:(i + 1) * size], rate))
            flag = 0
            speech = raw
            if level < gate:
                flag = _GATED
                speech = False
            elif noisy[i]:
                flag = _NOISE
                speech = False
            if speech:
                crest, share = _impulse(total[i], peak[i], best[i], n)
                if crest > self.crest_limit_db or share >= self.click_energy_share:
                    flag |= _IMPULSIVE
                    if near[i]:
                        flag |= _CLICK
                        speech = False
            if cust is not None:
                c = cust[i]   # NaN (unknown) compares False: no bleed
                if level <= c - self.coupling_db + self.bleed_margin_db and c > gate:
                    flag |= _BLEED
                    speech = False
            raws.append(raw)
            speeches.append(speech)
            flags.append(flag)
        if self.own_voice is not None:
            for i, distant in enumerate(self.own_voice.decide(levels, speeches)):
                if distant:
                    flags[i] |= _DISTANT
                    speeches[i] = False
        return {"t_ns": np.asarray(t_ns, dtype=np.int64), "channel": np.full(count, self.channel, dtype=np.int64),
                "dur_ns": np.full(count, self.dur_ns, dtype=np.int64),
                "level_dbfs_x10": np.array(levels, dtype=np.int64), "vad": np.array(raws, dtype=bool),
                "speech": np.array(speeches, dtype=bool), "flags": np.array(flags, dtype=np.int64)}
