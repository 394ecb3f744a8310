"""Active speech level per ITU-T P.56 method B (the "speech voltmeter").

This follows the algorithm of ITU-T P.56 (12/2011) Annex B and of its reference implementation,
``speech_voltmeter()`` in ITU-T G.191's ``sv-p56.c`` (``actlev``), step by step:

* samples are normalised to -1..+1 (int16 / 32768), so levels are in dBov, the same convention
  as ``station.vad.level_dbfs`` (a full-scale sine reads -3.01 dB);
* envelope: two cascaded first-order smoothers with time constant T = 0.03 s on |x|
  (``p = g p + (1-g)|x|``, ``q = g q + (1-g) p``, ``g = exp(-1/(f T))``);
* 15 thresholds c_j = 2^-15 .. 2^-1 (one every 6.02 dB); a sample counts as active for threshold
  c_j when the envelope is >= c_j or was so within the hangover H = 0.2 s
  (I = floor(H f + 0.5) samples);
* A_j = 10 log10(sum x^2 / a_j), C_j = 20 log10(c_j); the active level is where A - C crosses the
  margin M = 15.9 dB, found between the first threshold with A_j - C_j <= M and the one below it
  by the reference's binary interpolation (``bin_interp``, tolerance 0.5 dB, v2.3 with the 2005
  bound-update correction);
* activity factor = 10^((long-term level - active level) / 10).

The per-sample loop of the reference is vectorised (scipy.signal.lfilter for the envelope, a running
"last time above threshold" index for the hangover) but computes the same quantities.

Failure modes: an empty signal raises ValueError; digital silence or a signal that never reaches
15.9 dB above the lowest threshold gives ``active_dbov = SILENT`` (-100, as the reference) and
activity 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

T_S = 0.03          # envelope time constant (s)
H_S = 0.20          # hangover (s)
M_DB = 15.9         # margin between threshold and active level (dB)
THRES_NO = 15       # thresholds 2^-15 .. 2^-1
SILENT = -100.0     # level reported for silence (dBov), as in the reference
_MIN_LOG = 1.0e-20  # the reference's guard against log10(0)


@dataclass(frozen=True)
class P56Result:
    """Result of one measurement.

    active_dbov: active speech level (dBov; -100 when silent).
    activity: activity factor 0..1 (share of time counted as active speech).
    long_term_dbov: RMS level of the whole signal (dBov).
    peak_dbov: 20 log10(max |x|) (dBov; 0 = full scale). max_pos / max_neg: extremes (-1..1).
    dc: mean sample value (-1..1). samples: number of samples. sample_rate: Hz.
    """

    active_dbov: float
    activity: float
    long_term_dbov: float
    peak_dbov: float
    max_pos: float
    max_neg: float
    dc: float
    samples: int
    sample_rate: float

    @property
    def silent(self) -> bool:
        return self.active_dbov <= SILENT

    @property
    def active_peak_factor_db(self) -> float:
        """Peak level minus active level (dB); large for clicks, ~12-20 dB for speech."""
        return self.peak_dbov - self.active_dbov


def bin_interp(upcount: float, lwcount: float, upthr: float, lwthr: float, margin: float,
               tol: float) -> float:
    """The reference's binary interpolation (G.191 sv-p56.c v2.3), all values in dB."""
    tol = abs(tol)
    if abs((upcount - upthr) - margin) < tol:
        return upcount
    if abs((lwcount - lwthr) - margin) < tol:
        return lwcount
    midcount = (upcount + lwcount) / 2.0
    midthr = (upthr + lwthr) / 2.0
    iterno = 1
    while True:
        diff = (midcount - midthr) - margin
        if abs(diff) <= tol:
            break
        iterno += 1
        if iterno > 20:
            tol *= 1.1
        if diff > tol:
            midcount = (upcount + midcount) / 2.0
            midthr = (upthr + midthr) / 2.0
            lwcount, lwthr = midcount, midthr
        elif diff < -tol:
            midcount = (midcount + lwcount) / 2.0
            midthr = (midthr + lwthr) / 2.0
            upcount, upthr = midcount, midthr
    return midcount


def to_unit(samples: np.ndarray) -> np.ndarray:
    """int16 (or int32) PCM -> float64 in -1..1; float input is taken as already normalised."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        return x.astype(np.float64) / 32768.0
    if x.dtype == np.int32:
        return x.astype(np.float64) / 2147483648.0
    if x.dtype.kind in "iu":
        raise ValueError(f"unsupported integer sample type {x.dtype}")
    return x.astype(np.float64)


def envelope(x: np.ndarray, sample_rate: float) -> np.ndarray:
    """P.56 envelope q of normalised samples x (two cascaded smoothers, T = 0.03 s)."""
    g = math.exp(-1.0 / (sample_rate * T_S))
    p = lfilter([1.0 - g], [1.0, -g], np.abs(x))
    return lfilter([1.0 - g], [1.0, -g], p)


def activity_counts(q: np.ndarray, sample_rate: float) -> np.ndarray:
    """a_j for the 15 thresholds: samples with q >= c_j or within the hangover after one."""
    n = len(q)
    hang = int(math.floor(H_S * sample_rate + 0.5))
    idx = np.arange(n)
    counts = np.zeros(THRES_NO, dtype=np.int64)
    for j, c in enumerate(thresholds()):
        above = q >= c
        if not above.any():
            continue
        last = np.maximum.accumulate(np.where(above, idx, -(hang + 2)))
        counts[j] = int(np.count_nonzero(idx - last <= hang))
    return counts


def thresholds() -> np.ndarray:
    """c_j = 2^(j-15), j = 0..14 (linear, relative to full scale)."""
    return np.array([2.0 ** (j - THRES_NO) for j in range(THRES_NO)])


def measure(samples: np.ndarray, sample_rate: float) -> P56Result:
    """Active speech level of a mono recording (int16 PCM or float -1..1) at sample_rate Hz.

    Raises ValueError for an empty or multi-channel array or a non-positive sample rate.
    """
    x = to_unit(samples)
    if x.ndim != 1:
        raise ValueError("P.56 needs a mono signal (1-D array)")
    if len(x) == 0:
        raise ValueError("P.56 needs at least one sample")
    if not sample_rate > 0:
        raise ValueError(f"bad sample rate {sample_rate!r}")
    n = len(x)
    sq = float(np.dot(x, x))
    long_term = 10.0 * math.log10(sq / n + _MIN_LOG)
    peak = float(np.max(np.abs(x)))
    base = dict(long_term_dbov=long_term,
                peak_dbov=20.0 * math.log10(peak) if peak > 0 else SILENT,
                max_pos=float(np.max(x)), max_neg=float(np.min(x)), dc=float(np.mean(x)),
                samples=n, sample_rate=float(sample_rate))
    silent = P56Result(active_dbov=SILENT, activity=0.0, **base)
    a = activity_counts(envelope(x, sample_rate), sample_rate)
    c = thresholds()
    if a[0] == 0:
        return silent
    a_db = 10.0 * math.log10(sq / a[0] + _MIN_LOG)
    c_db = 20.0 * math.log10(c[0])
    if a_db - c_db < M_DB:
        return silent
    for j in range(1, THRES_NO):
        if a[j] == 0:
            continue
        a_db = 10.0 * math.log10(sq / a[j] + _MIN_LOG)
        c_db = 20.0 * math.log10(c[j] + _MIN_LOG)
        if a_db - c_db <= M_DB:
            am_db = 10.0 * math.log10(sq / a[j - 1] + _MIN_LOG)
            cm_db = 20.0 * math.log10(c[j - 1] + _MIN_LOG)
            level = bin_interp(a_db, am_db, c_db, cm_db, M_DB, 0.5)
            activity = 10.0 ** ((long_term - level) / 10.0)
            return P56Result(active_dbov=level, activity=activity, **base)
    # The reference leaves the level at -100 when no threshold is within the margin (a signal
    # whose envelope stays above 2^-1 throughout, i.e. heavy square-wave-like clipping).
    return silent
