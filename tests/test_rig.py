"""Serial rig drivers against a simulated device on a real pseudo-terminal (and pyserial loop://)."""

import subprocess
import sys
import time

import pytest
import serial

from calibration.rig import Calibrator, RigError, SoundLevelMeter

TIMEOUT = 0.8


@pytest.fixture
def sim():
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", "calibration.simulator", *args], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        path = p.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        return path
    yield start
    for p in procs:
        p.kill()
        p.wait(5)


def timed(fn):
    t = time.monotonic()
    with pytest.raises(RigError) as e:
        fn()
    return str(e.value), time.monotonic() - t


def test_protocol_round_trip(sim):
    with Calibrator(sim(), timeout=TIMEOUT) as rig:
        assert rig.identify() == "StationLab,SIM-1,0001,1.0"
        assert rig.spl() == 35.0                     # quiet room while nothing plays
        rig.tone(1000, 94)
        rig.play()
        assert rig.spl() == 94.0
        rig.stop()
        rig.speech(89)
        with pytest.raises(RigError, match="refused 'TONE 5 94.0': out of range"):
            rig.tone(5, 94)
        with pytest.raises(RigError, match="unknown command"):
            rig.command("FOO")


def test_dead_device_times_out(sim):
    path = sim("--mode", "dead")
    msg, took = timed(lambda: Calibrator(path, timeout=TIMEOUT).identify())
    assert "no reply to 'ID?' within 0.8 s" in msg
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 0.5


def test_garbage_reply(sim):
    path = sim("--mode", "garbage")
    msg, took = timed(lambda: Calibrator(path, timeout=TIMEOUT).identify())
    assert "unexpected reply to 'ID?'" in msg and took < TIMEOUT + 0.5


def test_babbling_device(sim):
    path = sim("--mode", "babble")
    msg, took = timed(lambda: Calibrator(path, timeout=TIMEOUT).identify())
    assert "unexpected reply" in msg and took < TIMEOUT + 0.5


def test_endless_line(sim):
    path = sim("--mode", "noeol")
    msg, took = timed(lambda: Calibrator(path, timeout=TIMEOUT).identify())
    assert "without a line end" in msg and took < TIMEOUT + 0.5


def test_disconnect(sim):
    path = sim("--mode", "disconnect", "--after", "1")
    rig = Calibrator(path, timeout=TIMEOUT)
    assert rig.identify().startswith("StationLab")
    msg, took = timed(lambda: [rig.spl() for _ in range(3)])
    assert ("disconnected" in msg or "no reply" in msg) and took < TIMEOUT + 0.5
    rig.close()


def test_port_that_does_not_exist():
    msg, _ = timed(lambda: Calibrator("/dev/does-not-exist", timeout=TIMEOUT))
    assert msg.startswith("cannot open serial port /dev/does-not-exist")


def test_echoing_loop_is_not_a_calibrator():
    # pyserial's loop:// echoes what we send: a wrongly wired port (TX to RX) must be named as such
    port = serial.serial_for_url("loop://", timeout=0.1)
    msg, _ = timed(lambda: Calibrator("loop://", timeout=TIMEOUT, port=port).identify())
    assert "unexpected reply to 'ID?': 'ID?'" in msg


def test_sound_level_meter(sim):
    with SoundLevelMeter(sim("--meter", "94"), timeout=TIMEOUT) as m:
        assert m.reading() == pytest.approx(94.0, abs=0.3)
        assert m.average(5) == pytest.approx(94.0, abs=0.3)


def test_sound_level_meter_garbage_and_silence(sim):
    msg, _ = timed(lambda: SoundLevelMeter(sim("--mode", "babble"), timeout=TIMEOUT).reading())
    assert "lines without a reading" in msg
    msg, took = timed(lambda: SoundLevelMeter(sim("--mode", "dead"), timeout=TIMEOUT).reading())
    # it waited its timeout and then gave up (a bound, not a benchmark: a busy machine adds latency)
    assert "no reading within 0.8 s" in msg and TIMEOUT * 0.9 <= took < TIMEOUT + 5
