"""Shared test helpers (import as ``from tests.support import require``).

Real parts (Xvfb, PulseAudio, espeak-ng, socat, chromium, ...) must run in CI: ``require`` skips a
test when a part is missing on a developer machine, but fails it when the ``CI`` environment
variable is set, so CI can never go green by skipping.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
IN_CI = bool(os.environ.get("CI"))


def require(*binaries: str) -> None:
    """Skip (or, under CI, fail) unless every binary is on PATH."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        msg = "missing real part(s): " + ", ".join(missing)
        if IN_CI:
            pytest.fail(msg + " (CI is set: real parts must be installed, see scripts/quickstart)")
        pytest.skip(msg)


def station_cmd(*args: str, system_config: bool = True) -> list[str]:
    """argv that runs the station command line of this checkout with this interpreter
    (``system_config=False``: without /etc/station, as the harnesses run it)."""
    return [sys.executable, "-m", "station", *([] if system_config else ["--no-system-config"]), *args]




def wait_for(pred, timeout: float, what: str = "the condition", interval: float = 0.05):
    """Call ``pred`` every ``interval`` s until it returns something truthy, and return that.
    After ``timeout`` s: AssertionError naming ``what`` and the last value."""
    end = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})"[:2000])
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP connections on host:port?"""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class SocatRelay:
    """socat TCP relays 127.0.0.1:<new port> -> 127.0.0.1:<target>, one per target, in their own
    process group, so that ``cut()`` kills the listener and every forked connection at once: a
    network cut between a console and a station. ``ports``: the relays' ports, in target order."""

    def __init__(self, targets):
        self.targets = list(targets)
        self.ports = [free_port() for _ in self.targets]
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 10.0) -> "SocatRelay":
        for lp, target in zip(self.ports, self.targets):
            self.procs.append(subprocess.Popen(
                ["socat", f"TCP-LISTEN:{lp},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{target}"],
                start_new_session=True, stderr=subprocess.DEVNULL))
        for lp in self.ports:
            wait_for(lambda: port_open(lp), timeout, f"socat listening on port {lp}")
        return self

    def cut(self) -> None:
        for p in self.procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.procs = []
