"""Real accounts for the exam-PC tests (root only): the recorder's ``station``, the capture's
``station-capture`` (both as ``station install`` makes them) and a ``candidate`` who is in no
station group; running commands as them (runuser); an exam PC laid out by ``station install``
into a temporary root.

Under CI a missing root / useradd / runuser is a failure, elsewhere a skip (``need_root``).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from station.ops import install
from tests.support import IN_CI, REPO

CANDIDATE = "candidate"
CAPTURE = install.CAPTURE_ACCOUNT
STATION = install.ACCOUNT


def need_root() -> None:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        msg = "needs root, useradd and runuser (accounts for the station, its capture and the candidate)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def other_user_python() -> str:
    """An interpreter other accounts can execute (the venv's may live under /root, mode 0700)."""
    cand = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    return str(cand) if cand.exists() else sys.executable


def let_others_traverse(path: Path, request) -> None:
    """Let other accounts import the checkout (its code and venv), as an installed station's code
    can be: ``path`` needs read and search for others (Python lists a sys.path directory), its
    parents search (a clone in ``mktemp -d`` is mode 0700). Restores the modes after the test."""
    changed = []
    for d, bits in [(path, stat.S_IROTH | stat.S_IXOTH)] + [(d, stat.S_IXOTH) for d in path.parents]:
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & bits != bits:
            os.chmod(d, mode | bits)
            changed.append((d, mode))
    request.addfinalizer(lambda: [os.chmod(d, m) for d, m in changed])


def as_user(user: str, *argv: str) -> list[str]:
    """argv running this checkout's Python code as ``user``."""
    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    return ["runuser", "-u", user, "--", "env", f"PYTHONPATH={path}", "PYTHONDONTWRITEBYTECODE=1",
            other_user_python(), *argv]


def ensure_candidate() -> None:
    """The candidate's account: an ordinary login, in no station group (``station install``
    takes it out of group ``station`` where an older test or install put it)."""
    try:
        pwd.getpwnam(CANDIDATE)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", CANDIDATE], check=True)


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def gid(group: str) -> int:
    return grp.getgrnam(group).gr_gid


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (runuser's child is the account's interpreter)."""
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def stop(procs) -> None:
    """SIGTERM every process (and runuser's child, which runuser does not pass SIGTERM on to)."""
    for p in reversed(procs):
        if p.poll() is None:
            for pid in children(p.pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


class ExamPC:
    """``station install`` into a temporary root, with the real accounts: data in
    ROOT/var/lib/station (station, 0700), the hand-over in ROOT/run/station (0750
    station:station, what RuntimeDirectory= makes), a site config for the test's ports."""

    def __init__(self, request, station_id: str = "exam-07"):
        need_root()
        ensure_candidate()
        let_others_traverse(REPO, request)
        self.root = Path(tempfile.mkdtemp(prefix="station-exam-", dir="/tmp"))
        os.chmod(self.root, 0o755)                 # others may traverse the root: only modes protect
        request.addfinalizer(lambda: shutil.rmtree(self.root, ignore_errors=True))
        self.plan = install.make_plan("system", self.root, exe=str(Path(sys.executable).parent / "station"),
                                      station_id=station_id)
        self.steps = install.install(self.plan)
        self.data = self.plan.data_dir
        self.run = self.root / "run/station"
        self.run.mkdir(parents=True)
        os.chmod(self.run, 0o750)
        os.chown(self.run, uid(STATION), gid(STATION))
        self.socket = self.run / "capture.sock"

    def authorize(self, public_key: Path, assessor_id: str = "assessor-1", assessor_name: str = "A. Assessor") -> None:
        """Authorise a console key on the station, bound to one assessor (files owned by station)."""
        from station import keys
        auth = keys.authorize(public_key, self.data / "keys" / "authorized", assessor_id=assessor_id,
                              assessor_name=assessor_name)
        for f in auth.parent.iterdir():
            os.chown(f, uid(STATION), gid(STATION))

    def site_config(self, text: str, mode: str = "exam") -> list[str]:
        """Write the site's overrides (``text``: further tables, e.g. [publisher]); returns the
        config arguments for ``python -m station``."""
        site_cfg = self.root / "etc/station/site.toml"
        site_cfg.write_text(f'[station]\ndata_dir = "{self.data}"\nmode = "{mode}"\n'
                            f'[handover]\nsocket = "{self.socket}"\n' + text)
        os.chmod(site_cfg, 0o644)
        return ["-m", "station", "--no-system-config", "--config", str(self.plan.config_path), "--config", str(site_cfg)]
