"""Calibration against real audio: a private PulseAudio server (tests/pulse_harness.py).

Set-up, as a headset on a test head: the earpiece is the null sink ``earpiece`` (played through
ALSA PCM ``earpiece_sink``; the customer channel records its monitor ``earpiece_monitor``); the
microphone is the monitor of the null sink ``mic`` (``mic_monitor``). ``module-loopback`` carries
the earpiece into the microphone with a known latency and attenuation (the bleed); a quiet noise
plays into ``mic`` (the room); the rig simulator plays its tone and sentence into ``mic`` (the
artificial mouth).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from calibration import p56
from station.config import load
from station.headset import read_profile
from tests.support import require, station_cmd

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]

FS = 16000
BLEED_DB = 40.0
SENSITIVITY = 120.0      # the simulated microphone: 120 dB SPL reads 0 dBFS
ROOM_DBFS = -70.0


@pytest.fixture(scope="module")
def pa():
    require("pulseaudio", "pactl", "pacat", "parec", "espeak-ng", "sox")
    from tests.pulse_harness import PulseServer
    with PulseServer(sinks=("earpiece", "mic")) as server:
        yield server


def loopback(pa, latency_ms: int, gain_db: float) -> int:
    """earpiece.monitor -> mic with latency (ms) and gain (dB); returns the module index."""
    idx = pa.load_module("module-loopback", "source=earpiece.monitor", "sink=mic",
                         f"latency_msec={latency_ms}", "adjust_time=0", "source_dont_move=true", "sink_dont_move=true")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in pa.pactl("list", "short", "sink-inputs").splitlines():
            cols = line.split("\t")
            if len(cols) > 3 and "loopback" in cols[3]:
                # a linear amplitude factor (pactl refuses negative "dB" values)
                pa.pactl("set-sink-input-volume", cols[0], f"{10 ** (gain_db / 20):.6f}")
                time.sleep(0.3)
                return idx
        time.sleep(0.05)
    raise AssertionError("loopback sink input did not appear")


def room_noise(pa, level_dbfs=ROOM_DBFS, seconds=150):
    x = np.random.default_rng(5).normal(0, 32768 * 10 ** (level_dbfs / 20), seconds * FS)
    return pa.play("mic", np.clip(x, -32768, 32767).astype(np.int16))


def write_config(tmp_path, **calib):
    c = {"noise_seconds": 1.5, "speech_seconds": 5.5, "tone_seconds": 0.8, "output_device": "earpiece_sink",
         "rig_timeout_s": 3.0, **calib}
    lines = ['[station]', 'id = "station-07"', f'headset_dir = "{tmp_path / "headsets"}"', '[audio]',
             'agent_device = "mic_monitor"', 'customer_device = "earpiece_monitor"', '[calibration]']
    for k, v in c.items():
        lines.append(f"{k} = {json.dumps(v)}")
    p = tmp_path / "calib.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def simulator(pa, *args):
    proc = subprocess.Popen([sys.executable, "-m", "calibration.simulator", "--sink", "mic",
                             "--sensitivity", str(SENSITIVITY), *args],
                            stdout=subprocess.PIPE, text=True, env=pa.child_env())
    return proc, proc.stdout.readline().strip()


def calibrate(pa, cfg, *args, timeout=90):
    """``station calibrate run`` against the private sound server. A stream that stalls once
    (the busy machine's sound server, about once in 400 streams) is measured again by the
    calibration itself; these tests see what a technician would."""
    cmd = station_cmd("--no-system-config", "--config", str(cfg), "calibrate", "run", *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=pa.child_env())


def test_espeak_at_two_gains_through_the_sound_server(pa, tmp_path):
    from calibration.audio import SoundDeviceIO
    from station import config
    from tests.pulse_harness import espeak
    pa.activate()
    try:
        speech = espeak("Please tell me your customer number and the date of your last order.",
                        tmp_path / "s.wav", rate=FS)
        cfg = config.load(system=False).replace(audio={"agent_device": "mic_monitor"})
        io = SoundDeviceIO(cfg)
        levels = []
        for gain in (0.0, -15.0):
            rec = {}
            import threading
            t = threading.Thread(target=lambda: rec.setdefault("x", io.record(len(speech) / FS + 1.5)))
            t.start()
            time.sleep(0.3)
            pa.play("mic", speech, gain).wait()
            t.join(30)
            levels.append(p56.measure(rec["x"], FS).active_dbov)
        ref = p56.measure(speech, FS).active_dbov
        assert levels[0] == pytest.approx(ref, abs=0.3)           # the server passes samples untouched
        assert levels[0] - levels[1] == pytest.approx(15.0, abs=0.3)
    finally:
        pa.deactivate()


def test_sound_server_names_are_recorded_and_their_identity_goes_into_the_profile(pa, tmp_path):
    """Devices given by the sound server's names (as the capture records them natively) are
    recorded through ALSA's pulse PCM routed by name, and their identity is what calibration
    stores in the profile."""
    from calibration.audio import SoundDeviceIO
    from calibration.sources import calibrated_sources
    from station import config
    from tests.pulse_harness import espeak
    pa.activate()
    try:
        speech = espeak("Good morning, this is the service desk.", tmp_path / "s.wav", rate=FS)
        cfg = config.load(system=False).replace(audio={"agent_device": "mic.monitor",
                                                       "customer_device": "earpiece.monitor"})
        io = SoundDeviceIO(cfg)
        assert io.mic_source == "mic.monitor" and io.customer_source == "earpiece.monitor"
        rec = {}
        import threading
        t = threading.Thread(target=lambda: rec.setdefault("x", io.record(len(speech) / FS + 1.0)))
        t.start()
        time.sleep(0.3)
        pa.play("mic", speech, 0.0).wait()
        t.join(30)
        assert p56.measure(rec["x"], FS).active_dbov == pytest.approx(p56.measure(speech, FS).active_dbov, abs=0.3)
        agent, customer = calibrated_sources(cfg)
        assert (agent.name, agent.monitor, customer.name, customer.monitor) == ("mic.monitor", True,
                                                                               "earpiece.monitor", True)
    finally:
        pa.deactivate()


def reference_round_trip(pa, cfg_path) -> float:
    """The set-up's round trip measured without the calibration code path: a 2 ms click on the
    earpiece, its first sample above -50 dBFS in the microphone (median of 3), in ms."""
    from calibration.audio import SoundDeviceIO
    from station import config
    pa.activate()
    try:
        io = SoundDeviceIO(config.load([cfg_path], system=False))
        click = np.zeros(int(0.05 * FS), np.int16)
        click[:32] = 16000
        out = []
        for _ in range(3):
            mic = io.playrec(click, tail_s=0.5).mic.astype(np.int32)
            onset = int(np.argmax(np.abs(mic) > 32768 * 10 ** (-50 / 20)))
            assert onset > 0, "click not found"
            out.append(1000.0 * onset / FS)
        return float(np.median(out))
    finally:
        pa.deactivate()


def test_full_yes_run_with_rig_writes_profile_and_certificate(pa, tmp_path):
    noise = room_noise(pa)
    lb = loopback(pa, 120, -BLEED_DB)
    sim, port = simulator(pa)
    try:
        cfg = write_config(tmp_path)
        r2 = calibrate(pa, cfg, "--headset", "hs-b", "--technician", "Tess", "--rig", port, "--yes")
        assert r2.returncode == 0, r2.stderr + r2.stdout
        ref_rt = reference_round_trip(pa, cfg)
    finally:
        sim.kill()
        sim.wait()
        noise.kill()
        pa.unload_module(lb)
    prof = read_profile(tmp_path / "headsets" / "hs-b.toml")
    assert prof.passed and prof.station_id == "station-07" and prof.technician == "Tess"
    # coupling within 2 dB of the loopback's attenuation
    assert prof.coupling_db == pytest.approx(BLEED_DB, abs=2.0)
    # latency: the calibration's round trip matches the set-up's, measured independently, within
    # 10 ms; it contains the loopback's 120 ms (plus PortAudio/ALSA buffering)
    assert prof.round_trip_ms == pytest.approx(ref_rt, abs=10.0), (prof, ref_rt)
    assert 120.0 - 10.0 <= prof.input_latency_ms <= prof.round_trip_ms
    # noise floor and sensitivity from the rig's tone
    assert prof.noise_floor_dbfs == pytest.approx(ROOM_DBFS, abs=1.5)
    assert prof.sensitivity_dbspl_at_0dbfs == pytest.approx(SENSITIVITY, abs=1.0)
    # the rig speaks at 89 dB SPL: active level 89 - 120 = -31 dBFS
    assert prof.speech_level_dbfs == pytest.approx(89.0 - SENSITIVITY, abs=1.0)
    assert prof.noise_floor_dbfs < prof.gate_dbfs < prof.speech_level_dbfs
    # own-voice margin checked on the sentence and written (docs/vad.md): the default 12 dB holds
    assert prof.own_margin_db == pytest.approx(load(system=False).audio.own_margin_db)
    certs = sorted((tmp_path / "headsets").glob("hs-b-*.json"))
    assert len(certs) == 1
    cert = json.loads(certs[0].read_text())
    assert cert["passed"] and cert["source"] == "rig" and cert["rig_id"].startswith("StationLab")
    assert {c["name"] for c in cert["checks"]} >= {"speech SNR", "coupling loss", "round-trip latency"}
    assert "PASS" in certs[0].with_suffix(".html").read_text()
    assert "[3/7]" in r2.stderr and "100%" in r2.stderr    # steps and progress bars were shown


def test_silent_microphone_aborts_without_profile(pa, tmp_path):
    # nothing plays into the mic sink: the microphone delivers digital silence
    cfg = write_config(tmp_path)
    sim, port = simulator(pa)
    try:
        r = calibrate(pa, cfg, "--headset", "hs-s", "--technician", "T", "--rig", port, "--yes")
    finally:
        sim.kill()
        sim.wait()
    assert r.returncode == 1
    assert "digital silence" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "headsets" / "hs-s.toml").exists()


def test_clipping_speech_aborts_without_profile(pa, tmp_path):
    noise = room_noise(pa)
    lb = loopback(pa, 20, -BLEED_DB)
    cfg = write_config(tmp_path, speech_dbspl=118.0)   # -2 dBFS active: the peaks clip
    sim, port = simulator(pa)
    try:
        r = calibrate(pa, cfg, "--headset", "hs-c", "--technician", "T", "--rig", port, "--yes")
    finally:
        sim.kill()
        sim.wait()
        noise.kill()
        pa.unload_module(lb)
    assert r.returncode == 1, r.stderr
    assert "clips" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "headsets" / "hs-c.toml").exists()


def test_missing_input_device(pa, tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "bad.toml").write_text('[audio]\nagent_device = "no_such_microphone"\n')
    r = subprocess.run(station_cmd("--no-system-config", "--config", str(cfg), "--config", str(tmp_path / "bad.toml"),
                                   "calibrate", "run", "--headset", "hs-x", "--technician", "T"),
                       capture_output=True, text=True, timeout=60, env=pa.child_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "microphone device 'no_such_microphone' (audio.agent_device) not found" in r.stderr
    assert not (tmp_path / "headsets").exists() or not list((tmp_path / "headsets").iterdir())


def test_no_audio_devices_at_all(tmp_path):
    require("pulseaudio")  # the machine's own ALSA set-up, no card and no routing to a server
    # without the sound server's ALSA routing this machine has no sound card: PortAudio lists nothing
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_"))}
    r = subprocess.run(station_cmd("--no-system-config", "calibrate", "run", "--headset", "hs-x", "--technician", "T"),
                       capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    assert "no input device for the microphone" in r.stderr and "Traceback" not in r.stderr


def _frozen_server_recording(pa, tmp_path, freeze_s: float | None):
    """Record 4 s while the sound server is frozen (SIGSTOP) from 1 s on, for ``freeze_s`` s
    (None: until the recording has returned or failed). Returns (samples or the UserError,
    seconds from the freeze to the end, the notices given)."""
    import signal
    import threading

    from calibration.audio import SoundDeviceIO
    from station import config
    from station.errors import UserError
    cfg = config.load([write_config(tmp_path)], system=False)
    server = pa._daemons["mic"].proc
    notices: list[str] = []
    stopped: list[float] = []

    def freeze():
        stopped.append(time.monotonic())
        server.send_signal(signal.SIGSTOP)

    pa.activate()
    timers = [threading.Timer(1.0, freeze)]
    if freeze_s is not None:
        timers.append(threading.Timer(1.0 + freeze_s, lambda: server.send_signal(signal.SIGCONT)))
    try:
        io = SoundDeviceIO(cfg, notice=notices.append)
        for t in timers:
            t.start()
        try:
            out = io.record(4.0)
        except UserError as e:
            out = e
        return out, time.monotonic() - stopped[0], notices
    finally:
        for t in timers:
            t.cancel()
        server.send_signal(signal.SIGCONT)
        pa.deactivate()


def test_a_stuck_sound_server_is_reported_after_five_seconds_without_samples(pa, tmp_path):
    """The sound server is frozen (SIGSTOP) 1 s into a 4 s recording, for 10 s: the stream stalls
    after 5 s without samples, the server does not answer either, and the recording fails with a
    clear message (no second attempt, whose opening would hang on the frozen server). The
    watchdog looks at progress, not at the total time. The stalled stream closes once the
    server runs again; then a normal recording completes."""
    from calibration.audio import SERVER_PROBE_S, STALL_S, SoundDeviceIO
    from station import config
    from station.errors import UserError
    out, took, notices = _frozen_server_recording(pa, tmp_path, STALL_S + 5.0)
    assert isinstance(out, UserError), "a recording from a frozen sound server succeeded"
    assert "stopped delivering audio (no samples for 5 s" in str(out) and "does not answer" in str(out)
    assert notices == []
    # stall + probe, then the stream's close waits for the thaw (10 s after the freeze)
    assert STALL_S + SERVER_PROBE_S - 0.5 <= took <= STALL_S + 5.0 + 4.0, took
    pa.activate()
    try:
        assert len(SoundDeviceIO(config.load([write_config(tmp_path)], system=False)).record(0.5)) == 8000
    finally:
        pa.deactivate()


def test_a_sound_server_that_stalls_once_is_recorded_again(pa, tmp_path):
    """The sound server is frozen 1 s into a 4 s recording for 6.5 s, then runs again: the first
    stream stalls, the server answers the probe (sent while frozen, answered on the thaw), the
    technician is told, and the recording is made once more from the start: 4 s of samples come back, none of the stalled stream's (the room noise has no run of
    zeros, which the frozen stream's unfilled buffer would leave)."""
    from calibration.audio import STALL_S
    noise = room_noise(pa)
    try:
        # thawed within the probe's 2 s after the stall is seen (5-5.5 s after the freeze)
        out, took, notices = _frozen_server_recording(pa, tmp_path, STALL_S + 1.5)
    finally:
        noise.kill()
    assert isinstance(out, np.ndarray), out
    assert len(out) == 4 * FS
    assert len(notices) == 1 and "measuring again" in notices[0], notices
    assert took >= STALL_S + 1.5 + 3.5        # the second recording ran after the thaw
    frame = 160
    silent = np.all(out[:len(out) // frame * frame].reshape(-1, frame) == 0, axis=1)
    assert not silent.any(), f"{int(silent.sum())} frames of 10 ms are all zeros"
