"""`station install` / `station uninstall` into a temporary root (issue 7): the files, modes and
owners of an exam PC; a second run changes nothing and says so; edits of the admin are kept;
uninstall keeps journals unless --purge. Also `station status` against a running agent."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station import config
from tests.support import IN_CI, REPO, station_cmd, wait_for

EXE = str(Path(sys.executable).parent / "station")


def _root_only():
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("install tests need root (accounts, chown)")
        pytest.skip("needs root")


def _run(*args, env=None):
    return subprocess.run(station_cmd(*args), capture_output=True, text=True, cwd=REPO, timeout=120, env=env)


def _mode(p: Path) -> str:
    return oct(stat.S_IMODE(p.stat().st_mode))


def test_system_install_layout_idempotence_and_uninstall(tmp_path):
    _root_only()
    root = tmp_path / "root"
    r = _run("install", "--root", str(root), "--exec", EXE, "--station-id", "pc-12")
    assert r.returncode == 0, r.stderr
    assert "change(s)" in r.stdout
    station = pwd.getpwnam("station")
    data = root / "var/lib/station"
    expect = {
        data: ("0o700", station.pw_uid), data / "sessions": ("0o700", station.pw_uid),
        data / "keys": ("0o700", station.pw_uid), data / "keys/authorized": ("0o700", station.pw_uid),
        data / "keys/station.key_secret": ("0o600", station.pw_uid),
        root / "etc/station/station.toml": ("0o644", 0),
        root / "etc/systemd/system/station-recorder.service": ("0o644", 0),
        root / "etc/systemd/system/station-console.service": ("0o644", 0),
        root / "etc/systemd/system/station-proxy.service": ("0o644", 0),
        root / "etc/systemd/system/station-capture.service": ("0o644", 0),
        root / "usr/local/lib/station/session-grant": ("0o755", 0),
        root / "etc/xdg/autostart/station-session-grant.desktop": ("0o644", 0),
        root / "etc/tmpfiles.d/station.conf": ("0o644", 0),
    }
    for p, (mode, uid) in expect.items():
        assert (_mode(p), p.stat().st_uid) == (mode, uid), p
    unit = (root / "etc/systemd/system/station-recorder.service").read_text()
    assert f"ExecStart={EXE} recorder" in unit
    # the written configuration is valid and says what the units expect
    cfg = config.load([root / "etc/station/station.toml"], system=False)
    assert cfg.station.id == "pc-12" and cfg.handover.socket == "/run/station/capture.sock"
    assert cfg.station.data_dir == "/var/lib/station"
    assert cfg.station.mode == "exam" and cfg.handover.capture_user == "station-capture"
    # the capture runs as its own account: in group station (socket) and input (evdev), the
    # group's only member besides the recorder; no exam account is in it
    capture = pwd.getpwnam("station-capture")
    assert capture.pw_shell.endswith("nologin")
    assert "station-capture" in grp.getgrnam("station").gr_mem
    assert set(grp.getgrnam("station").gr_mem) == {"station-capture"}
    cap_unit = (root / "etc/systemd/system/station-capture.service").read_text()
    assert f"ExecStart={EXE} capture" in cap_unit and "User=station-capture" in cap_unit
    assert "xhost +si:localuser:" in (root / "usr/local/lib/station/session-grant").read_text()

    # second run: nothing to change, and it says so
    secret = (data / "keys/station.key_secret").read_bytes()
    r2 = _run("install", "--root", str(root), "--exec", EXE, "--station-id", "pc-12")
    assert r2.returncode == 0 and "nothing to change" in r2.stdout, r2.stdout
    assert all(line.startswith("unchanged") for line in r2.stdout.splitlines()[:-1]), r2.stdout
    assert (data / "keys/station.key_secret").read_bytes() == secret, "the key is never regenerated"

    # drift is repaired: a loosened mode is put back; an edited config is kept
    os.chmod(data / "sessions", 0o755)
    cfgf = root / "etc/station/station.toml"
    cfgf.write_text(cfgf.read_text().replace('id = "pc-12"', 'id = "pc-13"'))
    r3 = _run("install", "--root", str(root), "--exec", EXE)
    assert f"updated   {data / 'sessions'}" in r3.stdout
    assert f"kept      {cfgf}" in r3.stdout and 'id = "pc-13"' in cfgf.read_text()
    assert _mode(data / "sessions") == "0o700"

    # uninstall: units go, journals/keys and the edited config stay
    (data / "sessions/some.journal").write_bytes(b"x")
    u = _run("uninstall", "--root", str(root), "--exec", EXE)
    assert u.returncode == 0, u.stderr
    assert not (root / "etc/systemd/system/station-recorder.service").exists()
    assert not (root / "etc/systemd/system/station-capture.service").exists()
    assert not (root / "usr/local/lib/station/session-grant").exists()
    assert (data / "sessions/some.journal").exists() and cfgf.exists()
    u2 = _run("uninstall", "--root", str(root), "--exec", EXE)
    assert "nothing to remove" in u2.stdout
    u3 = _run("uninstall", "--root", str(root), "--exec", EXE, "--purge")
    assert not data.exists() and not cfgf.exists()
    assert "removed" in u3.stdout


def test_install_takes_exam_accounts_out_of_group_station_and_removes_the_old_user_unit(tmp_path):
    """An older install told admins to add exam accounts to group station and laid a capture user
    unit running as the candidate: a new install undoes both."""
    _root_only()
    root = tmp_path / "root"
    assert _run("install", "--root", str(root), "--exec", EXE).returncode == 0
    try:
        pwd.getpwnam("exam-old")
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "exam-old"], check=True)
    subprocess.run(["usermod", "-aG", "station", "exam-old"], check=True)
    old_unit = root / "etc/systemd/user/station-capture.service"
    old_unit.parent.mkdir(parents=True, exist_ok=True)
    old_unit.write_text("[Service]\nExecStart=/usr/local/bin/station capture\n")
    r = _run("install", "--root", str(root), "--exec", EXE)
    assert r.returncode == 0, r.stderr
    assert "removed exam-old" in r.stdout and f"removed   {old_unit}" in r.stdout, r.stdout
    assert "exam-old" not in grp.getgrnam("station").gr_mem and not old_unit.exists()
    subprocess.run(["userdel", "exam-old"], check=False)


def test_user_scope_install(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    r = _run("install", "--scope", "user", "--exec", EXE, "--station-id", "practice-1", env=env)
    assert r.returncode == 0, r.stderr
    unit = home / ".config/systemd/user/station-agent.service"
    cfgf = home / ".config/station/station.toml"
    assert f"ExecStart={EXE} --no-system-config --config {cfgf} run" in unit.read_text()
    assert _mode(cfgf) == "0o600"
    data = home / ".local/share/station"
    assert _mode(data) == "0o700" and _mode(data / "keys/station.key_secret") == "0o600"
    cfg = config.load([cfgf], system=False)
    assert cfg.station.data_dir == str(data)
    r2 = _run("install", "--scope", "user", "--exec", EXE, "--station-id", "practice-1", env=env)
    assert "nothing to change" in r2.stdout


def test_install_refuses_bad_input_cleanly(tmp_path):
    r = _run("install", "--root", str(tmp_path), "--exec", "relative/station")
    assert r.returncode == 2 and "absolute path" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/station").write_text("a file where a directory belongs")
    if os.geteuid() == 0:
        r = _run("install", "--root", str(tmp_path), "--exec", EXE)
        assert r.returncode == 1 and "not a directory" in r.stderr and "Traceback" not in r.stderr
        # units that would run code another account can change: refused (the candidate could replace it)
        home = tmp_path / "home-of-someone"
        home.mkdir()
        os.chown(home, 65534, 65534)
        r = _run("install", "--root", str(tmp_path / "r2"), "--exec", str(home / "station"))
        assert r.returncode == 2 and "could be changed by an account other than root" in r.stderr, r.stderr
        assert str(home) in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "r2").exists()


@pytest.mark.timeout(90)
def test_status_of_a_running_agent_and_of_a_stopped_one(tmp_path):
    data = tmp_path / "data"
    cfgp = tmp_path / "station.toml"
    cfgp.write_text(f'[station]\nid = "status-01"\ndata_dir = "{data}"\n[publisher]\nenabled = false\n')
    base = ("--no-system-config", "--config", str(cfgp))
    r = _run(*base, "status")
    assert r.returncode == 1 and "not running" in r.stderr
    p = subprocess.Popen(station_cmd(*base, "run", "--sources", "scenario", "--speed", "2"), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import json
        end = time.monotonic() + 40
        while time.monotonic() < end:   # the first status is written before anything is journaled
            js = _run(*base, "status", "--json")
            if js.returncode == 0 and json.loads(js.stdout)["status"]["journal"]["last_seq"] >= 1:
                break
            time.sleep(0.5)
        r = _run(*base, "status")
        assert r.returncode == 0, r.stdout + r.stderr
        for word in ("state      running", "station    status-01", "session    status-01-", "sequence",
                     "journal", "disk free", "source     scenario: ok"):
            assert word in r.stdout, (word, r.stdout)
        js = _run(*base, "status", "--json")
        doc = json.loads(js.stdout)
        assert doc["state"] == "running" and doc["status"]["journal"]["last_seq"] >= 1
        # privacy: the status holds health, not candidate content
        assert "char" not in js.stdout and "title" not in js.stdout
        # a hung agent (no update) is not "running"
        p.send_signal(signal.SIGSTOP)
        hung = wait_for(lambda: (h := _run(*base, "status", "--max-age", "2")).returncode == 1 and h, 20,
                        "the status of the frozen agent to go stale")
        assert "stale" in hung.stdout
        p.send_signal(signal.SIGCONT)
    finally:
        p.send_signal(signal.SIGCONT)
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    r = _run(*base, "status")
    assert r.returncode == 1 and "stopped" in r.stdout


@pytest.mark.timeout(90)
def test_logs_are_levelled_lines_without_secrets(tmp_path):
    """The agent's log (stderr -> journald under systemd) at debug level: every line starts with a
    level and a logger name, and neither the station's nor the console's secret key appears."""
    from tests.streaming_station import Rig
    rig = Rig(tmp_path)
    p = subprocess.Popen(station_cmd("--no-system-config", "--config", str(rig.station_cfg), "-vv", "run",
                                     "--sources", "scenario", "--speed", "5"),
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "wb"))
    # running (its session journal open, the publisher up) before it is asked to stop and logs that too
    wait_for(lambda: "agent running" in (tmp_path / "log").read_text(), 40, "the agent's start in its log", 0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0
    log = (tmp_path / "log").read_text()
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert lines, "the agent logs at least its start"
    import re
    pat = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    bad = [ln for ln in lines if not pat.match(ln) and not ln.startswith((" ", "\t"))]
    assert not bad, bad[:5]
    for name in ("station", "console-a"):
        secret = (rig.kdir / f"{name}.key_secret").read_text()
        m = re.search(r'secret-key = "([^"]+)"', secret)
        assert m and m.group(1) not in log
