"""Operator errors give one clear line and a non-zero exit, never a traceback (issue 18): a socket
directory or data directory that cannot be created, a configured audio device that does not
exist (said on stderr at start, not only as a gap), numbers out of range on the command line."""

import os
import signal
import subprocess
import threading

import pytest

from tests.support import station_cmd, wait_for


def _run(*argv, timeout=60):
    return subprocess.run(station_cmd(*argv, system_config=False), capture_output=True, text=True, timeout=timeout)


def _one_line(r, code, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_recorder_whose_socket_directory_cannot_be_made(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the socket's directory should be")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[handover]\nsocket = "{blocker}/run/capture.sock"\n[publisher]\nenabled = false\n')
    r = _run("--config", str(cfg), "recorder", "--data-dir", str(tmp_path / "data"), timeout=60)
    _one_line(r, 1, f"hand-over socket {blocker}/run/capture.sock: cannot create it", "handover.socket")


def test_data_directory_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[publisher]\nenabled = false\n")
    r = _run("--config", str(cfg), "run", "--sources", "scenario", "--data-dir", str(blocker / "data"))
    _one_line(r, 1, str(blocker))


@pytest.mark.parametrize("argv,words", [
    (["console", "--port", "70000"], ["--port", "70000"]),
    (["console", "--duration", "nan"], ["--duration", "nan"]),
    (["status", "--max-age", "-1"], ["--max-age"]),
    (["categories", "--seconds", "inf"], ["--seconds"]),
    (["calibrate", "level", "x.wav", "--channel", "-1"], ["--channel"]),
    (["demo", "--speed", "-2"], ["speed must be a finite number > 0"]),
])
def test_bad_numbers_are_one_usage_line(argv, words):
    r = _run(*argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert all(w in r.stderr.strip().splitlines()[-1] for w in words), r.stderr


def test_missing_audio_device_is_said_on_stderr_at_start(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[audio]\nagent_device = "Headset That Is Not Here"\n[publisher]\nenabled = false\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen(station_cmd("--config", str(cfg), "run", "--data-dir", str(tmp_path / "d"),
                                        system_config=False),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    t = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    t.start()
    try:
        line = wait_for(lambda: [x for x in err if "audio cannot start" in x], 30, "the audio warning")[0]
        assert "'Headset That Is Not Here'" in line and "station devices" in line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    t.join(timeout=5)
    assert "Traceback" not in "".join(err)
