"""Web console test harness: demo stations, web consoles and a headless chromium, all real.

- ``assessor_key(root, name)``: a console key pair for an assessor (``<root>/keys/<name>``).
- ``DemoStation(root, id, seed, speed, assessors)``: ``station run --sources scenario`` (the whole
  agent: the simulated exam, the journal, the engine, the publisher) with a CURVE publisher on two
  free loopback ports; ``assessors`` = [(assessor id, name)] whose keys it authorises, each bound
  to that assessor (``station keys authorize --assessor-id``); ``readers`` = key names it lets
  follow without an assessor.
- ``CurveStation(root, id)``: the light test station of tests/streaming_station.py with CURVE
  keys, for the "wrong key" case (the console presents a key the station has not authorised).
- ``WebConsole(root, name, stations, ...)``: ``station console`` (web mode) on a free port; its
  config follows the given stations; ``.get()`` / ``.post()`` call its JSON API as the page does
  (session cookie, Origin, CSRF token); ``.raw()`` sends exactly the headers given.
- ``browser()``: Playwright driving the system chromium (/usr/bin/chromium; never downloads one).

Every process is started with a deadline and stopped by its own pid in ``stop()``.
"""

from __future__ import annotations

import contextlib
import functools
import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.streaming_station import Rig  # noqa: E402
from tests.support import console_config, console_station, free_port, station_config, wait_for  # noqa: E402,F401
from tests.support import station_cmd as _station_cmd  # noqa: E402

station_cmd = functools.partial(_station_cmd, system_config=False)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


def _stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except OSError:
        pass
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def assessor_key(root: Path, name: str) -> Path:
    """The secret key file of console/assessor ``name`` under ``root/keys`` (created once)."""
    from station import keys
    kdir = Path(root) / "keys"
    secret = kdir / f"{name}.key_secret"
    if not secret.exists():
        keys.generate(kdir, name)
    return secret


class DemoStation:
    def __init__(self, root: Path, station_id: str, seed: int = 1, speed: float = 10.0,
                 assessors: list[tuple[str, str]] = (), readers: list[str] = ()):
        from station import keys
        self.id, self.seed, self.speed = station_id, seed, speed
        self.root = Path(root) / station_id
        self.root.mkdir(parents=True, exist_ok=True)
        self.pub_port, self.req_port = free_port(), free_port()
        kdir, allow = self.root / "keys", self.root / "authorized"
        keys.generate(kdir, "station")
        self.station_key = kdir / "station.key"
        for aid, name in assessors:
            assessor_key(root, aid)
            keys.authorize(Path(root) / "keys" / f"{aid}.key", allow, assessor_id=aid, assessor_name=name)
        for r in readers:
            assessor_key(root, r)
            keys.authorize(Path(root) / "keys" / f"{r}.key", allow)
        self.cfg = self.root / "station.toml"
        station_config(self.cfg, station_id=station_id, data_dir=self.root / "data", pub_port=self.pub_port,
                       req_port=self.req_port, secret_key_file=kdir / "station.key_secret", authorized_keys_dir=allow)
        self.proc: subprocess.Popen | None = None

    def console_entry(self) -> dict:
        return console_station(self.id, self.pub_port, self.req_port, self.station_key)

    def start(self) -> "DemoStation":
        log = open(self.root / "station.log", "ab")
        self.proc = subprocess.Popen(
            station_cmd("--config", str(self.cfg), "run", "--sources", "scenario", "--seed", str(self.seed),
                        "--speed", str(self.speed), "--data-dir", str(self.root / "data")),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self

    def stop(self) -> None:
        _stop(self.proc)


class CurveStation:
    """A CURVE station that has NOT authorised the console's key ("intruder")."""

    def __init__(self, root: Path, station_id: str = "st-badkey"):
        self.rig = Rig(Path(root) / station_id, station_id)
        self.id = station_id
        self.proc: subprocess.Popen | None = None
        self.console_secret = self.rig.kdir / "intruder.key_secret"

    def console_entry(self) -> dict:
        r = self.rig
        return console_station(self.id, r.pub_port, r.req_port, r.kdir / "station.key")

    def start(self) -> "CurveStation":
        self.proc, _ = self.rig.start_station(rate=2.0)
        return self

    def stop(self) -> None:
        _stop(self.proc)


class WebConsole:
    def __init__(self, root: Path, name: str, stations: list, assessor_name: str = "",
                 secret_key_file: Path | None = None, port: int | None = None, extra: str = "",
                 tls: tuple[Path, Path] | None = None):
        self.name = name
        self.root = Path(root) / f"console-{name}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.cfg = self.root / "console.toml"
        tls_keys = {"tls_cert_file": str(tls[0]), "tls_key_file": str(tls[1])} if tls else {}
        console_config(self.cfg, data_dir=self.root / "data", store=self.root / "console.sqlite",
                       assessor_id=name, assessor_name=assessor_name or name.title(), secret_key_file=secret_key_file,
                       stations=[s.console_entry() for s in stations], extra=extra, allow_plaintext_loopback=True,
                       http_host="127.0.0.1", http_port=self.port, resync_ms=2000, **tls_keys)
        self.proc: subprocess.Popen | None = None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.jar)]
        if tls:   # the test's self-signed certificate
            import ssl
            handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
        self.opener = urllib.request.build_opener(*handlers)
        self.csrf: str | None = None

    def start(self, timeout: float = 20) -> "WebConsole":
        log = open(self.root / "console.log", "ab")
        self.proc = subprocess.Popen(station_cmd("--config", str(self.cfg), "console"),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("console exited: " + (self.root / "console.log").read_text()[-2000:])
            try:
                self.get("/api/session")       # open even when logins are configured
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError("web console did not answer in time")

    def stop(self) -> None:
        _stop(self.proc)

    def raw(self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None,
            timeout: float = 15, opener=None) -> tuple[int, object, dict]:
        """One HTTP request with exactly ``headers`` (plus this console's cookies when ``opener``
        is None): (status, JSON or text body, response headers)."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {},
                                     method=method or ("POST" if data is not None else "GET"))
        try:
            with (opener or self.opener).open(req, timeout=timeout) as r:
                raw, status, hdrs = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, e.headers
        ctype = hdrs.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in ctype else raw.decode()), dict(hdrs)

    def session(self) -> dict:
        """GET /api/session as the page does (cookie kept): the CSRF token for later POSTs."""
        status, body, _ = self.raw("/api/session")
        if status != 200:
            raise AssertionError(f"/api/session: {status} {body}")
        self.csrf = body["csrf"]
        return body

    def request(self, path: str, body: dict | bytes | None = None, timeout: float = 15) -> tuple[int, object]:
        """GET (body None) or POST (JSON) as the page does: session cookie, Origin, CSRF token."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        if data is None:
            status, out, _ = self.raw(path, timeout=timeout)
            return status, out
        for attempt in (1, 2):
            if self.csrf is None:
                self.session()
            status, out, _ = self.raw(path, data, {"Content-Type": "application/json", "Origin": self.url,
                                                   "X-CSRF-Token": self.csrf}, timeout=timeout)
            if status == 403 and isinstance(out, dict) and out.get("code") == "csrf" and attempt == 1:
                self.csrf = None     # the console restarted: it forgot the session
                continue
            return status, out

    def get(self, path: str):
        status, body = self.request(path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body}")
        return body

    def post(self, path: str, body) -> tuple[int, object]:
        return self.request(path, body)


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
            "--disable-extensions", "--no-first-run", "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


def page_errors(page) -> list[str]:
    """Collect JavaScript errors of a page (uncaught exceptions and console.error)."""
    errs: list[str] = []
    page.on("pageerror", lambda e: errs.append(str(e)))
    page.on("console", lambda m: errs.append(m.text) if m.type == "error" else None)
    return errs
