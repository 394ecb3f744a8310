"""P.56 method B (calibration.p56) against an independent published implementation: VOICEBOX's
``activlev`` (pyvoicebox-sap, a port of the MATLAB toolbox), without its optional band filters,
on espeak-ng speech recordings. The issue asks for agreement within 0.5 dB with the ITU-T
reference; the G.191 C code cannot be shipped here, so this independent implementation stands in
(the G.191 comparison done by hand is in docs/calibration.md)."""

import subprocess
import wave

import numpy as np
import pytest
from pyvoicebox.v_activlev import v_activlev  # test dependency (pyproject [test]): must be there

from calibration import p56
from tests.support import require

SENTENCES = ["Good morning, customer service, you are speaking with Anna. How can I help you?",
             "I would like to change the delivery address of my order. It is number four two seven."]


def speech(tmp_path, text, pause_s=0.0):
    require("espeak-ng", "sox")
    raw = tmp_path / "raw.wav"
    out = tmp_path / "16k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    cmd = ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)]
    if pause_s:
        cmd += ["pad", "0", str(pause_s)]
    subprocess.run(cmd, check=True, timeout=60)
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@pytest.mark.parametrize("text", SENTENCES)
@pytest.mark.parametrize("gain_db", [0.0, -20.0])
def test_active_level_agrees_with_voicebox_activlev(tmp_path, text, gain_db):
    x = speech(tmp_path, text, pause_s=2.0)
    y = np.round(x * 10 ** (gain_db / 20)).astype(np.int16)
    ours = p56.measure(y, 16000)
    lev, af = v_activlev(y / 32768.0, 16000, "d0h")
    diff = abs(ours.active_dbov - float(lev))
    print(f"gain {gain_db:+.0f} dB: ours {ours.active_dbov:.3f} dBov / {ours.activity:.4f}, "
          f"activlev {float(lev):.3f} dB / {float(af):.4f}, difference {diff:.3f} dB")
    assert diff <= 0.5
    assert abs(ours.activity - float(af)) <= 0.02


def test_agreement_holds_with_background_noise(tmp_path):
    x = speech(tmp_path, SENTENCES[0], pause_s=1.0).astype(np.float64)
    rng = np.random.default_rng(3)
    noisy = np.clip(x + rng.normal(0, 30, len(x)), -32768, 32767).astype(np.int16)   # about -60 dBFS
    ours = p56.measure(noisy, 16000)
    lev, _ = v_activlev(noisy / 32768.0, 16000, "d0h")
    assert abs(ours.active_dbov - float(lev)) <= 0.5
