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


# ------------------------------------------------------------------ configuration files

# Tests drive keyboard and mouse with xdotool, i.e. through the X server's XTEST devices, which
# never give evidence on a station (docs/operations.md "Input devices"). A test whose xdotool input
# must count as a candidate's puts them on its own allow-list, and reads X input (XInput 2: evdev
# would not see XTEST; a machine where /dev/input is readable would otherwise choose it):
# ``xtest_input(cfg)`` for an in-process Config, ``XTEST_INPUT_TOML`` for a config file.
XTEST_ALLOW = [{"name": "Virtual core XTEST keyboard"}, {"name": "Virtual core XTEST pointer"}]
XTEST_INPUT_TOML = ('[input]\nbackend = "xi2"\nallow = [{ name = "Virtual core XTEST keyboard" }, '
                    '{ name = "Virtual core XTEST pointer" }]\n')


def xtest_input(cfg, allow: bool = True):
    """``cfg`` reading input through XInput 2, with xdotool's XTEST devices on the allow-list
    (``allow=False``: off it, as on an exam PC: their input is flagged injected)."""
    return cfg.replace(input={"backend": "xi2", "allow": XTEST_ALLOW if allow else []})


def _merge(base: dict, more: dict) -> dict:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif isinstance(v, list) and isinstance(base.get(k), list):
            base[k] = base[k] + v
        else:
            base[k] = v
    return base


def write_toml(path: Path, data: dict, extra: str = "", extra_table: str | None = None) -> Path:
    """Write ``data`` as TOML (tomli_w). ``extra``: TOML text merged in, read inside
    ``[extra_table]`` when given (so ``resync_ms = 1000`` lands in [console])."""
    import tomllib

    import tomli_w
    data = _merge(_merge({}, data), tomllib.loads((f"[{extra_table}]\n" if extra_table else "") + extra)) if extra else data
    Path(path).write_text(tomli_w.dumps(data))
    return Path(path)


def station_config(path: Path, *, station_id: str, data_dir: Path, pub_port: int, req_port: int,
                   secret_key_file: Path, authorized_keys_dir: Path, extra: str = "") -> Path:
    """A station streaming over CURVE on loopback: the harnesses' station.toml."""
    return write_toml(path, {
        "station": {"id": station_id, "data_dir": str(data_dir)},
        "publisher": {"pub_bind": f"tcp://127.0.0.1:{pub_port}", "req_bind": f"tcp://127.0.0.1:{req_port}",
                      "secret_key_file": str(secret_key_file), "authorized_keys_dir": str(authorized_keys_dir)}},
        extra)


def console_station(station_id: str, pub_port: int, req_port: int, public_key: Path | str) -> dict:
    """One [[console.station]] entry (public_key "" = plaintext, loopback only)."""
    return {"id": station_id, "pub_endpoint": f"tcp://127.0.0.1:{pub_port}",
            "req_endpoint": f"tcp://127.0.0.1:{req_port}", "public_key": str(public_key)}


def console_config(path: Path, *, data_dir: Path, store: Path, stations: list[dict], assessor_id: str = "",
                   assessor_name: str = "", secret_key_file: Path | None = None, extra: str = "",
                   **console: object) -> Path:
    """A console following ``stations`` (``console_station`` entries); ``console``: further
    [console] keys; ``extra``: TOML text read inside [console]."""
    c: dict = {"store": str(store), **{k: v for k, v in console.items()}}
    if assessor_id:
        c.update(assessor_id=assessor_id, assessor_name=assessor_name or assessor_id)
    if secret_key_file:
        c["secret_key_file"] = str(secret_key_file)
    c["station"] = list(stations)
    return write_toml(path, {"station": {"data_dir": str(data_dir)}, "console": c}, extra, "console")
