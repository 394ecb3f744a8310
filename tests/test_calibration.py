"""Calibration measurements on arrays, profile writer, certificate, and the command line."""

import json
import math
import subprocess
import sys
import wave

import numpy as np
import pytest

from calibration import measure
from calibration.certificate import Certificate, Check
from calibration.cli import level_report
from calibration.profile_writer import write_profile
from station.config import load
from station.headset import HeadsetProfile, read_profile
from tests.support import station_cmd

FS = 16000


def test_a_weighting_reference_points():
    # IEC 61672-1 table: 1 kHz 0.0 dB, 100 Hz -19.1 dB, 4 kHz +1.0 dB
    for hz, expected in ((1000, 0.0), (100, -19.1), (4000, 1.0)):
        x = measure.tone(FS, 1.0, hz, -20.0, fade_ms=0)
        assert measure.a_weighted_dbfs(x, FS) - measure.level_dbfs(x) == pytest.approx(expected, abs=0.15)


def test_tone_band_level_and_coupling_below_the_noise():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 32768 * 10 ** (-50 / 20), FS)             # -50 dBFS broadband
    bleed = measure.tone(FS, 1.0, 1000, -20.0 - 40.0).astype(np.float64)   # 40 dB below, under the noise
    rec = np.clip(noise + bleed, -32768, 32767).astype(np.int16)
    c = measure.coupling(-20.0, rec, noise.astype(np.int16), FS, 1000)
    assert not c.lower_bound
    assert c.coupling_db == pytest.approx(40.0, abs=1.0)
    assert measure.level_dbfs(rec) > -60.0 + 5                          # broadband: the noise dominates
    # tone absent: only a lower bound can be given
    c2 = measure.coupling(-20.0, noise.astype(np.int16), noise.astype(np.int16), FS, 1000)
    assert c2.lower_bound and c2.coupling_db > 40


def test_find_delay_exact_and_not_found():
    sweep = measure.chirp(FS, 0.5, level_dbfs=-20)
    rec = np.zeros(FS * 2, np.int16)
    rec[1234:1234 + len(sweep)] = (sweep * 0.01).astype(np.int16)    # 40 dB down
    lat = measure.find_delay(sweep, rec, FS)
    assert lat.lag_samples == 1234 and lat.round_trip_ms == pytest.approx(77.125)
    noise = np.random.default_rng(1).normal(0, 300, FS * 2).astype(np.int16)
    from station.errors import UserError
    with pytest.raises(UserError, match="sweep was not found"):
        measure.find_delay(sweep, noise, FS)


def test_clipping_and_noise_floor():
    x = measure.tone(FS, 0.5, 440, -10.0)
    assert not measure.clipping(x).clips
    y = np.clip(x.astype(np.int32) * 4, -32768, 32767).astype(np.int16)
    assert measure.clipping(y).clips and measure.clipping(y).peak_dbfs > -0.1
    nf = measure.noise_floor(np.zeros(FS, np.int16), FS)
    assert nf.digital_silence and nf.dbfs == -127.0


def test_vad_stats_on_speechlike_noise_and_clicks():
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 30, FS * 2).astype(np.int16)                # ~ -61 dBFS
    clicks = measure.synth_clicks(noise, FS, -15.0)
    assert measure.clipping(clicks).peak_dbfs == pytest.approx(-15.0, abs=0.5)
    # a voiced-like signal: pulse train through a crude resonance
    t = np.arange(FS * 2) / FS
    voiced = (3000 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 700 * t))).astype(np.int16)
    mask = measure.active_frame_mask(voiced, FS, measure.level_dbfs(voiced))
    s = measure.vad_stats(2, -50.0, voiced, mask, noise, clicks, FS, load(system=False).audio)
    assert s.false_alarm == 0.0                                       # below the gate
    assert s.click_rejection >= 0.9
    assert 0.0 <= s.detected <= 1.0


def profile(**kw):
    base = dict(headset_id="hs1", station_id="st1", technician="Tess", created="2026-01-02T03:04:05Z",
                noise_floor_dbfs=-70.123, gate_dbfs=-60.0, vad_mode=2, input_latency_ms=12.5, round_trip_ms=40.0,
                coupling_db=41.0, speech_level_dbfs=-26.0, passed=True)
    base.update(kw)
    return HeadsetProfile(**base)


def test_profile_writer_round_trips_through_the_agents_reader(tmp_path):
    p = write_profile(profile(), tmp_path / "h" / "hs1.toml")
    got = read_profile(p)
    assert got == profile(noise_floor_dbfs=-70.12)
    assert got.sensitivity_dbspl_at_0dbfs is None
    p2 = write_profile(profile(sensitivity_dbspl_at_0dbfs=118.4), tmp_path / "h" / "hs1.toml")
    assert read_profile(p2).sensitivity_dbspl_at_0dbfs == 118.4
    assert [f.name for f in (tmp_path / "h").iterdir()] == ["hs1.toml"]   # no temp file left


def test_profile_keeps_the_calibrated_sources_identity(tmp_path):
    from station.config import ConfigError
    from station.hardware import Hardware
    from station.headset import SourceIdentity
    jabra = Hardware(bus="usb", vendor="0b0e", product="0300", serial="Jabra_Evolve_20_A1B2")
    mic = SourceIdentity(name="alsa_input.usb-Jabra_Evolve_20_A1B2-00.mono-fallback", hardware=jabra)
    ear = SourceIdentity(name="alsa_output.usb-Jabra_Evolve_20_A1B2-00.analog-stereo.monitor", hardware=jabra,
                         monitor=True)
    p = write_profile(profile(agent_source=mic, customer_source=ear), tmp_path / "hs1.toml")
    assert "[profile.agent_source]" in p.read_text()
    got = read_profile(p)
    assert got.agent_source == mic and got.customer_source == ear
    assert read_profile(write_profile(profile(), tmp_path / "old.toml")).agent_source is None   # older profiles
    bad = tmp_path / "bad.toml"
    bad.write_text(p.read_text().replace('bus = "usb"', 'bus = 3', 1))
    with pytest.raises(ConfigError, match=r"profile.agent_source.bus = 3"):
        read_profile(bad)


def test_profile_writer_refuses_values_the_agent_would_refuse(tmp_path):
    from station.config import ConfigError
    with pytest.raises(ConfigError, match="profile.input_latency_ms"):
        write_profile(profile(input_latency_ms=-5.0), tmp_path / "hs1.toml")
    assert not (tmp_path / "hs1.toml").exists()


def test_certificate_files(tmp_path):
    cert = Certificate("hs1", "st1", "Tess", "2026-01-02T03:04:05Z", "voice",
                       measurements={"noise_floor_dbfs": -70.0},
                       checks=[Check.of("speech SNR", 35.0, ">=", 30.0, "dB"),
                               Check.of("coupling loss", 25.0, ">=", 30.0, "dB")])
    assert not cert.passed
    paths = cert.write(tmp_path)
    assert paths["json"].name == "hs1-20260102T030405Z.json"
    data = json.loads(paths["json"].read_text())
    assert data["passed"] is False and data["checks"][1]["passed"] is False
    assert "[FAIL] coupling loss: 25.0 dB (limit >= 30 dB)" in paths["text"].read_text()
    assert "<span>FAIL</span>" in paths["html"].read_text()


def write_wav(path, x, rate=FS, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(x).tobytes())


def test_level_report_of_a_recording():
    rng = np.random.default_rng(0)
    burst = measure.tone(FS, 2.0, 500, -20.0)
    x = np.concatenate([burst, np.zeros(FS, np.int16), burst]) + rng.normal(0, 10, 5 * FS).astype(np.int16)
    rep = level_report(x.astype(np.int16), FS)
    assert rep["active_level_dbfs"] == pytest.approx(-20.0 - 10 * math.log10(4.3 / 4), abs=0.2)
    assert rep["noise_floor_dbfs"] == pytest.approx(20 * math.log10(10 / 32768), abs=1.5)
    assert rep["peak_dbfs"] == pytest.approx(-17.0, abs=0.1) and rep["clipped_samples"] == 0


def test_cli_level_and_bad_files(tmp_path):
    good = tmp_path / "tone.wav"
    write_wav(good, measure.tone(FS, 2.0, 1000, -26.0))
    r = subprocess.run(station_cmd("calibrate", "level", str(good), "--json"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["active_level_dbfs"] == pytest.approx(-26.0, abs=0.1)
    r = subprocess.run([sys.executable, "-m", "calibration", "level", str(good)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "active speech level" in r.stdout
    cases = {
        "missing.wav": (None, "file not found"),
        "text.wav": (b"hello", "not a WAV, FLAC or other audio file"),
        "empty.wav": ("empty", "contains no samples"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / name
        if content == "empty":
            write_wav(p, np.zeros(0, np.int16))
        elif content is not None:
            p.write_bytes(content)
        r = subprocess.run(station_cmd("calibrate", "level", str(p)), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(FS, np.int16))
    r = subprocess.run(station_cmd("calibrate", "level", str(silent)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no active speech" in r.stdout


def test_cli_usage_errors(tmp_path):
    r = subprocess.run(station_cmd("calibrate", "run", "--headset", "hs1", "--technician", "T", "--yes"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--yes needs a calibration rig" in r.stderr
    r = subprocess.run(station_cmd("calibrate", "run", "--headset", "../etc/x", "--technician", "T"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--headset" in r.stderr
    r = subprocess.run(station_cmd("calibrate"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2


def test_own_voice_margin_check_on_real_speech():
    """The calibration's own-voice check on real recorded speech (tests/data/corpus): with the
    default margin, the sentence 6 dB softer keeps >= 90 % of its talk time and the same speech
    20 dB quieter (a neighbour) loses >= 90 % of it; a margin that is too narrow gets widened."""
    from calibration.p56 import measure as p56
    from tests import corpus
    audio = load(system=False).audio
    for name in ("librivox_0870", "cmu_numbers"):
        x, _ = corpus.load(name)
        lev = p56(x, FS).active_dbov
        r = measure.own_voice_check(x, FS, audio, 2, lev, -54.0)
        print(name, r)
        assert r.margin_db == audio.own_margin_db and r.kept_soft >= 0.9 and r.rejected_distant >= 0.9, r
    x, _ = corpus.load("librivox_0870")
    narrow = load(system=False).replace(audio={"own_margin_db": 3.0}).audio
    r = measure.own_voice_check(x, FS, narrow, 2, p56(x, FS).active_dbov, -54.0)
    assert r.margin_db > 3.0 and r.kept_soft >= 0.9, r
