"""``station doctor`` as an operator runs it (a subprocess), on a real Xvfb display."""

import json
import os
import subprocess

import pytest

from station.capture import platform
from tests.support import REPO, require, station_cmd
from tests.x11_harness import X11Session

X11_CHECKS = ("display", "xrecord", "window manager")


def doctor(env_extra, *args, drop=("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"), tmp=None):
    env = {k: v for k, v in os.environ.items() if k not in drop and k != platform.ENV_OVERRIDE}
    if tmp is not None:
        env["STATION_DATA_DIR"] = str(tmp / "data")
    env.update(env_extra)
    r = subprocess.run(station_cmd("--no-system-config", "doctor", *args), env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    return r


def checks_of(r):
    out = json.loads(r.stdout)
    return out, {c["name"]: c for c in out["checks"]}


@pytest.mark.real
def test_x11_checks_pass_on_xvfb_with_openbox(tmp_path):
    require("Xvfb", "openbox", "xdotool")
    with X11Session() as x:
        r = doctor({"DISPLAY": x.display}, "--json", tmp=tmp_path)
    out, c = checks_of(r)
    for name in X11_CHECKS + ("config", "journal dir", "zmq curve"):
        assert c[name]["ok"], c[name]
    assert "openbox" in c["window manager"]["detail"].lower()
    assert r.returncode == (0 if out["ok"] else 1)
    assert out["ok"] == all(ch["ok"] for ch in out["checks"] if ch["required"])   # warnings do not fail


@pytest.mark.real
def test_window_manager_missing_fails(tmp_path):
    require("Xvfb", "xdotool")
    with X11Session(wm=False) as x:
        r = doctor({"DISPLAY": x.display}, "--json", tmp=tmp_path)
    out, c = checks_of(r)
    assert c["display"]["ok"] and c["xrecord"]["ok"]
    assert not c["window manager"]["ok"] and "_NET_SUPPORTING_WM_CHECK" in c["window manager"]["detail"]
    assert r.returncode == 1 and out["ok"] is False


def test_without_display_exit_1(tmp_path):
    r = doctor({}, tmp=tmp_path)
    assert r.returncode == 1
    line = next(l for l in r.stdout.splitlines() if l.startswith("display"))
    assert "FAIL" in line and "DISPLAY is not set" in line
    assert "some required checks FAILED" in r.stdout


def test_wayland_fails_with_clear_message(tmp_path):
    r = doctor({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, tmp=tmp_path)
    assert r.returncode == 1
    assert platform.WAYLAND_MESSAGE in r.stdout
    r = doctor({"XDG_SESSION_TYPE": "wayland"}, "--json", tmp=tmp_path)
    out, c = checks_of(r)
    assert r.returncode == 1 and not c["display"]["ok"]
    assert c["display"]["detail"] == platform.WAYLAND_MESSAGE


def test_unreachable_display_and_bad_override(tmp_path):
    r = doctor({"DISPLAY": ":87"}, "--json", tmp=tmp_path)
    out, c = checks_of(r)
    assert r.returncode == 1 and "unreachable" in c["display"]["detail"]
    r = doctor({platform.ENV_OVERRIDE: "quartz"}, "--json", tmp=tmp_path)
    out, c = checks_of(r)
    assert r.returncode == 1 and "quartz" in c["display"]["detail"]


def test_invalid_config_and_unwritable_journal_dir(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio]\nframe_ms = 25\n")
    r = subprocess.run(station_cmd("--no-system-config", "--config", str(bad), "doctor", "--json"),
                       env={**os.environ, "STATION_DATA_DIR": str(tmp_path)}, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    out, c = checks_of(r)
    assert r.returncode == 1 and not c["config"]["ok"] and "audio.frame_ms" in c["config"]["detail"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = doctor({"STATION_DATA_DIR": str(blocker)}, "--json")
    out, c = checks_of(r)
    assert not c["journal dir"]["ok"] and "not a directory" in c["journal dir"]["detail"]


@pytest.mark.real
def test_doctor_says_which_input_backend_and_why(tmp_path):
    """evdev where /dev/input is readable by this account, XInput 2 otherwise, with the reason;
    forcing evdev where it cannot read /dev/input fails the check with why."""
    require("Xvfb", "openbox", "xdotool")
    readable, why = platform.evdev_probe()
    with X11Session() as x:
        base = {"DISPLAY": x.display}
        r = doctor(base, "--json", tmp=tmp_path, drop=("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", platform.INPUT_ENV_OVERRIDE))
        _, c = checks_of(r)
        check = c["input backend"]
        assert check["ok"], check
        assert check["detail"].startswith("evdev" if readable else "xi2"), check
        assert why in check["detail"]          # e.g. "no evdev nodes in /dev/input" here
        assert c["xinput2"]["required"] is (not readable)
        allow = c["input allow-list"]
        assert not allow["ok"] and not allow["required"] and "station input devices" in allow["detail"]
        if not readable:
            r = doctor({**base, platform.INPUT_ENV_OVERRIDE: "evdev"}, tmp=tmp_path)
            line = next(l for l in r.stdout.splitlines() if l.startswith("input backend"))
            assert "FAIL" in line and "evdev chosen, but" in line and why in line
            assert r.returncode == 1
            # how it would follow hot-plug: this machine runs no udev, so by rescanning (a warning)
            hot = next(l for l in r.stdout.splitlines() if l.startswith("input hot-plug"))
            assert "rescan of the device directory every 0.5 s" in hot and "/run/udev/control" in hot, hot
