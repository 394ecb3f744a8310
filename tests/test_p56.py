"""ITU-T P.56 method B: hand-worked values on synthetic signals, and espeak-ng speech.

The implementation follows G.191's sv-p56.c step by step; these tests pin its results to values
worked out by hand from the algorithm (envelope time constant 0.03 s, hangover 0.2 s, margin
15.9 dB). An independent check against the reference C code is recorded in docs/calibration.md.
"""

import math
import subprocess

import numpy as np
import pytest

from calibration import p56
from tests.support import require

FS = 16000


def sine(amp, seconds, hz=1000.0, fs=FS):
    return amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * fs)) / fs)


def db(x):
    return 20 * math.log10(x)


def test_steady_sine_active_level_is_its_rms_level():
    # A steady sine is active all the time except the ~19 ms the envelope needs to rise to the
    # selected threshold (2^-5): activity (4 - 0.019)/4 = 0.995, level = RMS + 0.02 dB.
    r = p56.measure(sine(0.3, 4.0), FS)
    rms = db(0.3 / math.sqrt(2))                     # -13.47 dBov
    assert r.long_term_dbov == pytest.approx(rms, abs=0.01)
    assert r.activity == pytest.approx(0.995, abs=0.002)
    assert r.active_dbov == pytest.approx(rms + 10 * math.log10(1 / 0.995), abs=0.03)


def test_bursts_with_known_pauses():
    # two 4 s bursts in 16 s. Each counts as active for 4 s + envelope decay to the threshold
    # (q = m(1+u)e^-u falls 17 dB in u = 3.45 time constants = 0.10 s) + 0.2 s hangover
    # - 0.02 s rise: activity = 2 * 4.28 / 16 = 0.535; level = burst RMS + 10 log10(0.5/0.535).
    x = np.zeros(16 * FS)
    for start in (0, 8):
        x[start * FS:(start + 4) * FS] = sine(0.1, 4.0)
    r = p56.measure(x, FS)
    burst_rms = db(0.1 / math.sqrt(2))
    assert r.activity == pytest.approx(0.535, abs=0.004)
    assert r.active_dbov == pytest.approx(burst_rms + 10 * math.log10(0.5 / 0.535), abs=0.05)
    assert r.long_term_dbov == pytest.approx(burst_rms + 10 * math.log10(0.5), abs=0.01)


def test_level_follows_gain_and_activity_does_not():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 0.05, FS * 2), np.zeros(FS), rng.normal(0, 0.05, FS)])
    a = p56.measure(x, FS)
    b = p56.measure(x * 10 ** (-10 / 20), FS)
    c = p56.measure(x * 0.5, FS)                     # exactly one threshold step (6.02 dB)
    assert a.active_dbov - b.active_dbov == pytest.approx(10.0, abs=0.3)
    assert a.active_dbov - c.active_dbov == pytest.approx(20 * math.log10(2), abs=1e-9)
    assert c.activity == pytest.approx(a.activity, abs=1e-9)


def test_int16_and_float_input_agree():
    x = sine(0.25, 2.0)
    i16 = np.round(x * 32768).astype(np.int16)
    assert p56.measure(i16, FS).active_dbov == pytest.approx(p56.measure(x, FS).active_dbov, abs=0.01)


def test_silence_and_too_quiet_signals_are_silent():
    assert p56.measure(np.zeros(FS), FS).silent
    assert p56.measure(np.zeros(FS), FS).activity == 0.0
    # 2 LSB of noise: never 15.9 dB above the lowest threshold (2^-15)
    tiny = np.random.default_rng(1).integers(-2, 3, FS).astype(np.int16)
    assert p56.measure(tiny, FS).silent


def test_bad_input():
    with pytest.raises(ValueError):
        p56.measure(np.zeros(0), FS)
    with pytest.raises(ValueError):
        p56.measure(np.zeros((10, 2)), FS)
    with pytest.raises(ValueError):
        p56.measure(np.zeros(10), 0)


def test_bin_interp_tolerance_and_extremes():
    # upper bound already within tolerance: returned as is
    assert p56.bin_interp(-20.0, -21.0, -36.0, -42.0, 15.9, 0.5) == -20.0
    # otherwise the result satisfies |(level - threshold) - margin| <= 0.5 between the bounds
    v = p56.bin_interp(-20.0, -20.5, -30.1, -36.1, 15.9, 0.5)
    assert -20.5 <= v <= -20.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    require("espeak-ng", "sox")
    d = tmp_path_factory.mktemp("speech")
    subprocess.run(["espeak-ng", "-w", str(d / "s.wav"), "Good morning, you are speaking with the customer "
                    "service desk. How can I help you today?"], check=True, timeout=30)
    raw = subprocess.run(["sox", str(d / "s.wav"), "-r", str(FS), "-c", "1", "-b", "16", "-t", "raw", "-"],
                         check=True, capture_output=True, timeout=30).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def test_speech_with_known_pauses(speech):
    base = p56.measure(speech, FS)
    assert -40 < base.active_dbov < -3 and 0.6 < base.activity <= 1.0
    x = np.concatenate([speech, np.zeros(2 * FS, np.int16), speech, np.zeros(3 * FS, np.int16), speech])
    r = p56.measure(x, FS)
    # pauses longer than envelope decay + hangover add inactive time and nothing else
    expected = base.activity * 3 * len(speech) / len(x)
    assert r.activity == pytest.approx(expected, rel=0.01)
    assert r.active_dbov == pytest.approx(base.active_dbov, abs=0.05)


def test_speech_at_two_gains(speech):
    quiet = np.round(speech.astype(np.float64) * 10 ** (-12 / 20)).astype(np.int16)
    diff = p56.measure(speech, FS).active_dbov - p56.measure(quiet, FS).active_dbov
    assert diff == pytest.approx(12.0, abs=0.3)
