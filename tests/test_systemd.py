"""systemd units (issue 7): `systemd-analyze verify` clean, exposure under a threshold, and the
notify protocol (READY, WATCHDOG, STOPPING) spoken by the real recorder process.

This machine has no systemd as PID 1; ``systemd-analyze verify`` and ``security --offline=yes``
work on unit files without it. The units are checked as ``station install`` writes them (the
ExecStart path must exist for verify).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.ops import install
from tests.support import REPO, require, station_cmd

# exposure ceilings (0 = locked down .. 10 = unprotected); capture and agent must reach the X
# server, the sound server and the audio devices of the candidate's session
THRESHOLDS = {"station-recorder.service": 1.5, "station-console.service": 1.5, "station-proxy.service": 1.5,
              "station-capture.service": 2.5, "station-agent.service": 2.5}
USER_UNITS = {"station-agent.service"}
EXE = str(Path(sys.executable).parent / "station")


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    require("systemd-analyze")
    d = tmp_path_factory.mktemp("units")
    plan = install.make_plan("system", "/", exe=EXE)
    out = {}
    for name in THRESHOLDS:
        p = d / name
        p.write_text(install.render_unit(name, plan))
        out[name] = p
    rt = tmp_path_factory.mktemp("xdg-runtime")
    os.chmod(rt, 0o700)
    return out, rt


def test_every_unit_in_systemd_dir_is_checked():
    assert {p.name for p in (REPO / "systemd").glob("*.service")} == set(THRESHOLDS)


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_verify_is_clean(units, name):
    paths, rt = units
    user = ["--user"] if name in USER_UNITS else []
    env = dict(os.environ, XDG_RUNTIME_DIR=str(rt), SYSTEMD_LOG_LEVEL="warning")
    r = subprocess.run(["systemd-analyze", *user, "verify", "--man=no", str(paths[name])],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_security_exposure_under_threshold(units, name):
    paths, _ = units
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(paths[name])],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    level = float(m.group(1))
    print(f"\n{name}: exposure {level} (threshold {THRESHOLDS[name]})")
    assert level <= THRESHOLDS[name]


def test_unit_contents_match_the_design():
    rec = (REPO / "systemd/station-recorder.service").read_text()
    for line in ("Type=notify", "User=station", "StateDirectoryMode=0700", "UMask=0077", "Restart=on-failure",
                 "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes",
                 "RuntimeDirectory=station"):
        assert re.search(rf"^{re.escape(line)}$", rec, re.M), line
    assert re.search(r"^WatchdogSec=\d+s$", rec, re.M)
    cap = (REPO / "systemd/station-capture.service").read_text()
    # the capture is a system service under its own account, never the candidate's
    for line in ("User=station-capture", "Group=station-capture", "SupplementaryGroups=station input",
                 "UMask=0077", "Restart=always", "NoNewPrivileges=yes", "WantedBy=graphical.target",
                 "Type=notify", "UnsetEnvironment=PYTHONPATH PYTHONHOME PYTHONSTARTUP", "ProtectHome=yes"):
        assert re.search(rf"^{re.escape(line)}$", cap, re.M), line
    assert "PULSE_SERVER=unix:/run/station-audio/native" in cap
    assert not re.search(r"^PrivateTmp=yes", cap, re.M), "the X socket lives in /tmp/.X11-unix"


@pytest.mark.timeout(60)
def test_recorder_speaks_the_notify_protocol(tmp_path):
    """READY=1 once serving, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM: what
    Type=notify and WatchdogSec= expect, over a real NOTIFY_SOCKET datagram socket."""
    sock_path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    s.settimeout(0.2)
    cfgp = tmp_path / "station.toml"
    cfgp.write_text('[station]\nid = "notify-01"\n[publisher]\nenabled = false\n')
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    p = subprocess.Popen(station_cmd("--no-system-config", "--config", str(cfgp), "recorder", "--data-dir",
                                     str(tmp_path / "data")), env=env, cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got: list[tuple[float, str]] = []
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                got.append((time.monotonic(), s.recv(4096).decode()))
            except socket.timeout:
                pass
            if any("READY=1" in m for _, m in got) and sum("WATCHDOG=1" in m for _, m in got) >= 4:
                break
        p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15
        while time.monotonic() < end and not any("STOPPING=1" in m for _, m in got):
            try:
                got.append((time.monotonic(), s.recv(4096).decode()))
            except socket.timeout:
                pass
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
        s.close()
    msgs = [m for _, m in got]
    assert any("READY=1" in m for m in msgs), msgs
    beats = [t for t, m in got if "WATCHDOG=1" in m]
    assert len(beats) >= 4
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert max(gaps) <= 0.9, gaps          # well inside the 1 s watchdog
    assert any("STOPPING=1" in m for m in msgs)
