"""The capture account gets the candidate's display and sound server from the login-time grant
that `station install` lays, and nothing without it (issue 14, item 1).

Real servers owned by the real `candidate` account: Xvfb with an authorization cookie (so only
its holders, and whom the candidate's xhost admits, may connect) and a PulseAudio server. The
candidate runs the installed grant script, as the XDG autostart entry does at login; then:

- the `station-capture` account reaches the display (python-xlib, as the focus source does) and
  the sound server (pactl over the grant's socket);
- an account that is not the capture account (`station`) reaches neither;
- when the candidate revokes the display grant, the capture account is locked out again (what
  the capture then reports as a lost source).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.accounts import CANDIDATE, CAPTURE, STATION, ExamPC, gid, other_user_python, uid
from tests.support import require, wait_for

XLIB_PROBE = r"""
import sys
from Xlib import display
try:
    d = display.Display(sys.argv[1])
    print("ok", d.screen().root.id)
except Exception as e:
    print("refused", type(e).__name__)
"""


def _as(user, env, *argv):
    return ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()], *argv]


def _free_display() -> int:
    n = 60
    while Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
        n += 1
    return n


@pytest.mark.timeout(120)
def test_login_grant_gives_the_capture_account_display_and_sound_and_nobody_else(tmp_path, request):
    require("Xvfb", "xauth", "xhost", "mcookie", "pulseaudio", "pactl")
    pc = ExamPC(request)
    grant = pc.root / "usr/local/lib/station/session-grant"
    audio_dir = pc.root / "run/station-audio"                    # what /etc/tmpfiles.d/station.conf makes
    audio_dir.mkdir(parents=True)
    os.chown(audio_dir, 0, gid(CAPTURE))
    os.chmod(audio_dir, 0o1733)
    home = Path(f"/tmp/station-candidate-{os.getpid()}")
    runtime = home / "run"
    runtime.mkdir(parents=True)
    for d in (home, runtime):
        os.chown(d, uid(CANDIDATE), gid(CANDIDATE))
        os.chmod(d, 0o700)
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    n = _free_display()
    cookie = home / "Xauthority"
    cand_env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "DISPLAY": f":{n}", "XAUTHORITY": str(cookie),
                "STATION_AUDIO_SOCKET": str(audio_dir / "native"), "PATH": os.environ["PATH"]}
    procs = []
    try:
        mc = subprocess.run(["mcookie"], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(_as(CANDIDATE, cand_env, "xauth", "-f", str(cookie), "add", f":{n}", ".", mc), check=True,
                       capture_output=True)
        procs.append(subprocess.Popen(_as(CANDIDATE, cand_env, "Xvfb", f":{n}", "-auth", str(cookie), "-nolisten", "tcp",
                                              "-noreset"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), 20, "the candidate's X server")
        procs.append(subprocess.Popen(_as(CANDIDATE, cand_env, "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1",
                                          "--disable-shm=yes", "-L", "module-native-protocol-unix",
                                          "-L", "module-null-sink sink_name=headset"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: subprocess.run(_as(CANDIDATE, cand_env, "pactl", "info"), capture_output=True).returncode == 0,
                 20, "the candidate's sound server")
        python = other_user_python()

        def x_as(user):
            r = subprocess.run(_as(user, {"PYTHONPATH": os.pathsep.join(_site()), "PATH": os.environ["PATH"]},
                                   python, "-c", XLIB_PROBE, f":{n}"), capture_output=True, text=True, timeout=30)
            return r.stdout.strip().split()[0] if r.stdout.strip() else "error: " + r.stderr[-200:]

        def pulse_as(user):
            return subprocess.run(_as(user, {"PATH": os.environ["PATH"]}, "pactl", "-s", f"unix:{audio_dir / 'native'}",
                                      "list", "short", "sinks"), capture_output=True, text=True, timeout=30)

        # before the login grant: the capture account has neither
        assert x_as(CAPTURE) == "refused"
        assert pulse_as(CAPTURE).returncode != 0
        # the candidate logs in: the autostart entry runs the grant (the session keeps the X server
        # from resetting: -noreset here, as a desktop session would)
        r = subprocess.run(_as(CANDIDATE, cand_env, "/bin/sh", str(grant)), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert x_as(CAPTURE) == "ok"
        sinks = pulse_as(CAPTURE)
        assert sinks.returncode == 0 and "headset" in sinks.stdout, sinks.stderr
        # ... and no one else gets anything
        assert x_as(STATION) == "refused"
        assert pulse_as(STATION).returncode != 0
        # running it again (a second login) changes nothing and still works
        subprocess.run(_as(CANDIDATE, cand_env, "/bin/sh", str(grant)), check=True, timeout=30)
        assert pulse_as(CAPTURE).returncode == 0
        # the candidate revokes the display grant: the capture account is locked out again
        subprocess.run(_as(CANDIDATE, cand_env, "xhost", f"-si:localuser:{CAPTURE}"), check=True, capture_output=True)
        assert x_as(CAPTURE) == "refused"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _site():
    import site
    return site.getsitepackages()


@pytest.mark.timeout(120)
def test_pipewire_pulse_listens_for_the_capture_account_through_the_installed_drop_in(tmp_path, request):
    """On PipeWire desktops (Ubuntu, newer Debian) the sound grant is the drop-in `station
    install` lays for pipewire-pulse: the candidate's own pipewire-pulse then also listens on the
    station's socket, and the capture account reaches it there."""
    require("pipewire", "pipewire-pulse", "pactl")
    pc = ExamPC(request)
    dropin = (pc.root / "etc/pipewire/pipewire-pulse.conf.d/station.conf").read_text()
    audio_dir = pc.root / "run/station-audio"
    audio_dir.mkdir(parents=True)
    os.chown(audio_dir, 0, gid(CAPTURE))
    os.chmod(audio_dir, 0o1733)
    home = Path(f"/tmp/station-candidate-pw-{os.getpid()}")
    conf = home / "config/pipewire/pipewire-pulse.conf.d"
    conf.mkdir(parents=True)
    (conf / "station.conf").write_text(dropin.replace("/run/station-audio", str(audio_dir)))
    runtime = home / "run"
    runtime.mkdir()
    for d in [home, *home.rglob("*")]:
        os.chown(d, uid(CANDIDATE), gid(CANDIDATE))
    os.chmod(runtime, 0o700)
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(home / "config"),
           "PATH": os.environ["PATH"]}
    procs = [subprocess.Popen(_as(CANDIDATE, env, "pipewire"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(lambda: (runtime / "pipewire-0").exists(), 20, "the candidate's pipewire")
        procs.append(subprocess.Popen(_as(CANDIDATE, env, "pipewire-pulse"), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        sock = audio_dir / "native"
        wait_for(lambda: sock.exists(), 20, "pipewire-pulse listening on the station's socket")
        r = subprocess.run(_as(CAPTURE, {"PATH": os.environ["PATH"]}, "pactl", "-s", f"unix:{sock}", "info"),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "Server Name: PulseAudio (on PipeWire" in r.stdout, r.stdout + r.stderr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
