"""The real-speech corpus (tests/data/corpus, SOURCES.md there) and exam-room scenes made from it.

``load(name)`` gives a recording (int16 mono, 16 kHz) and its ground-truth speech spans (ms).
``scene(...)`` lays out a candidate's turns (one reader, LibriVox) with pauses, one of them a
long silence (dead air), and adds what a real exam room adds, at known levels:

* a neighbour: other people's recorded voices (CMU Sphinx and ALSA speakers) in the candidate's
  pauses, their P.56 active level ``neighbour_db`` relative to the candidate's own;
* noise at ``snr_db`` (candidate's P.56 active level minus the noise's RMS level): ``steady``
  (seeded Gaussian noise shaped -3 dB/octave, pink-like), ``babble`` (four other voices summed,
  looped), ``keyboard`` (key-click bursts, the synthetic click of the audio tests).

Ground truth is the candidate's spans only, placed where they were played. Everything is
deterministic (fixed seeds). Offline figures (``evaluate``) run the agent's own
``FrameClassifier.classify_block`` in 400 ms blocks, as the live source does.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from station import intervals

DIR = Path(__file__).resolve().parent / "data" / "corpus"
RATE = 16000
MS = 1_000_000
CANDIDATE = ["librivox_0870", "librivox_0880", "librivox_0890", "librivox_0920", "librivox_0930"]
OTHERS = ["cmu_goforward", "cmu_numbers", "cmu_something", "alsa_front_left", "alsa_front_right",
          "alsa_front_center", "alsa_rear_left", "alsa_rear_right", "alsa_rear_center", "alsa_side_left",
          "alsa_side_right"]
DEAD_AIR_S = 9.6


@lru_cache(maxsize=None)
def spans_table() -> dict:
    return json.loads((DIR / "spans.json").read_text())


@lru_cache(maxsize=None)
def load(name: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(int16 samples at 16 kHz, ground-truth spans [start_ms, end_ms)) of a corpus file."""
    import soundfile as sf
    x, rate = sf.read(DIR / f"{name}.flac", dtype="int16")
    assert rate == RATE
    return x, [tuple(s) for s in spans_table()[name]["spans_ms"]]


def active_dbfs(name: str) -> float:
    """P.56 active speech level (dBFS) of a corpus file, as measured when it was made."""
    return float(spans_table()[name]["active_dbfs"])


def gain_to(name: str, target_dbfs: float) -> float:
    return float(10 ** ((target_dbfs - active_dbfs(name)) / 20))


@dataclass
class Scene:
    """A mic signal (float samples at 16 kHz, int16 scale), the candidate's truth spans (ns offsets
    into it), the dead-air span (ns), the candidate's active level (dBFS), where the candidate's
    speech starts (s) and the key presses of keyboard noise (ns)."""

    mic: np.ndarray
    truth: np.ndarray
    dead_air: tuple[int, int]
    level_dbfs: float
    start_s: float
    key_ns: np.ndarray        # key presses (ns offsets) of keyboard noise, else empty

    def int16(self) -> np.ndarray:
        return np.clip(np.round(self.mic), -32768, 32767).astype(np.int16)

    @property
    def seconds(self) -> float:
        return len(self.mic) / RATE


def _noise(kind: str, n: int, rms: float, seed: int) -> tuple[np.ndarray, list[int]]:
    """(noise of the kind, n samples, at RMS rms; key press times in ns for keyboard noise)"""
    keys: list[int] = []
    rng = np.random.default_rng(seed)
    if kind == "steady":
        spec = np.fft.rfft(rng.normal(0, 1, n))
        f = np.fft.rfftfreq(n, 1 / RATE)
        spec *= 1 / np.sqrt(np.maximum(f, 50.0) / 50.0)
        x = np.fft.irfft(spec, n)
    elif kind == "babble":
        x = np.zeros(n)
        for k in range(4):
            voices = np.concatenate([load(o)[0].astype(np.float64) * gain_to(o, -26.0)
                                     for o in np.roll(OTHERS, 3 * k)])
            x += np.resize(voices, n)
    elif kind == "keyboard":
        t = np.arange(int(0.03 * RATE)) / RATE
        clk = np.exp(-t / 0.002) * np.sin(2 * np.pi * 3000 * t)
        x = np.zeros(n)
        at = 0.2
        while at < n / RATE - 0.05:
            i = int(at * RATE)
            x[i:i + len(clk)] += clk[: n - i]
            keys.append(int(i * 1e9 / RATE))
            at += rng.uniform(0.09, 0.3)
    else:
        raise ValueError(kind)
    return x * rms / max(1e-9, float(np.sqrt(np.mean(x ** 2)))), keys


def scene(*, level_dbfs: float = -26.0, neighbour_db: float | None = None, noise: str | None = None,
          snr_db: float = 10.0, start_s: float = 1.0, pause_s: float = 1.5, seed: int = 3,
          turns: list[str] | None = None, dead_after: int = 2) -> Scene:
    """The candidate's turns (default: the five LibriVox sentences) at P.56 active level
    level_dbfs with pause_s pauses, a 9.6 s silence after turn dead_after; optional neighbour
    (relative dB) and noise (kind, SNR dB)."""
    parts, truth, t = [], [], start_s
    dead = (0, 0)
    for k, name in enumerate(turns or CANDIDATE):
        x, spans = load(name)
        parts.append((t, x.astype(np.float64) * gain_to(name, level_dbfs)))
        truth += [(int((t * 1000 + s) * MS), int((t * 1000 + e) * MS)) for s, e in spans]
        t += len(x) / RATE
        if k == dead_after:
            dead = (int(t * 1e9), int((t + DEAD_AIR_S) * 1e9))
            t += DEAD_AIR_S
        else:
            t += pause_s
    total = t + 0.5
    mic = np.zeros(int(total * RATE))
    for at, x in parts:
        i = int(round(at * RATE))
        mic[i:i + len(x)] += x[: len(mic) - i]
    if neighbour_db is not None:
        # the neighbour talks in the candidate's silences: the dead air and the pauses
        gaps = intervals.complement(intervals.normalize(truth), int(start_s * 1e9), int(total * 1e9))
        others = itertools.cycle(OTHERS)
        for g0, g1 in gaps:
            at = g0 / 1e9 + 0.15
            while True:
                o = next(others)
                x = load(o)[0].astype(np.float64) * gain_to(o, level_dbfs + neighbour_db)
                if at + len(x) / RATE > g1 / 1e9 - 0.15:
                    break
                i = int(at * RATE)
                mic[i:i + len(x)] += x
                at += len(x) / RATE + 0.2
    if noise is not None:
        rms = 32768 * 10 ** ((level_dbfs - snr_db) / 20)
        x, keys = _noise(noise, len(mic), rms, seed)
        mic += x
    else:
        keys = []
    return Scene(mic, intervals.normalize(truth), dead, level_dbfs, start_s, np.array(keys, dtype=np.int64))


def smooth(iv, padding_ms: int = 300, min_spurt_ms: int = 100) -> np.ndarray:
    """The engine's talk-spurt rule: bridge gaps < padding, drop spurts < min_spurt."""
    iv = intervals.bridge(intervals.normalize(iv), padding_ms * MS)
    return intervals.at_least(iv, min_spurt_ms * MS)


def score(truth: np.ndarray, got: np.ndarray, lo: int, hi: int, dead_air: tuple[int, int] | None = None) -> dict:
    """Frame F1 (10 ms grid), talk time error (%), onset/offset errors (ms) of matched spurts,
    and whether the dead-air span stayed free of speech (a 3 s silence left inside it)."""
    truth, got = intervals.clip(truth, lo, hi), intervals.clip(got, lo, hi)
    errs = []
    for s, e in truth:
        ov = [(min(e, ge) - max(s, gs), gs, ge) for gs, ge in got]
        best = max(ov, default=(0, 0, 0))
        errs += [1000.0, 1000.0] if best[0] <= 0 else [abs(best[1] - s) / MS, abs(best[2] - e) / MS]
    grid = np.arange(lo, hi, 10 * MS) + 5 * MS
    t_in, g_in = intervals._contains(truth, grid), intervals._contains(got, grid)
    f1 = 2 * int(np.sum(t_in & g_in)) / max(1, int(np.sum(t_in)) + int(np.sum(g_in)))
    tt, gt = intervals.measure(truth), intervals.measure(got)
    out = {"f1": round(f1, 3), "talk_err_pct": round(100 * (gt - tt) / max(1, tt), 1),
           "edge_p95_ms": round(float(np.percentile(errs, 95)), 1) if errs else 0.0,
           "edge_median_ms": round(float(np.median(errs)), 1) if errs else 0.0}
    if dead_air is not None:
        inside = intervals.clip(got, *dead_air)
        free = intervals.complement(inside, *dead_air)
        out["dead_air_kept"] = bool(len(free) and max(b - a for a, b in free) >= 3_000_000_000)
    return out


def evaluate(sc: Scene, make_classifier, block_frames: int = 20, click_window_ms: int = 60) -> dict:
    """Classify a scene's mic signal offline (make_classifier() -> FrameClassifier for channel 0,
    blocks of block_frames frames; frames within click_window_ms of a key press of the scene are
    offered as near one, as the live source does) and score its talk spurts against the truth."""
    clf = make_classifier()
    x = sc.int16()
    fl = clf.frame_len
    n = len(x) // fl
    frames = x[: n * fl].reshape(n, fl)
    t = np.arange(n, dtype=np.int64) * clf.dur_ns
    w = click_window_ms * MS
    near_key_press = (np.searchsorted(sc.key_ns, t + clf.dur_ns + w) > np.searchsorted(sc.key_ns, t - w)
                      if len(sc.key_ns) else None)
    speech = []
    for i in range(0, n, block_frames):
        near = None if near_key_press is None else near_key_press[i:i + block_frames]
        speech.append(clf.classify_block(frames[i:i + block_frames], t[i:i + block_frames],
                                         near_key_press=near)["speech"])
    sp = np.concatenate(speech)
    got = smooth([(int(a), int(a) + clf.dur_ns) for a in t[sp]])
    lo, hi = int((sc.start_s - 0.2) * 1e9), int(n * clf.dur_ns)
    out = score(smooth(sc.truth), got, lo, hi, sc.dead_air)
    out["classifier"] = clf
    return out
