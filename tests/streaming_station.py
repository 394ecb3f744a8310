"""A test station process: real Journal + real Publisher, messages at a steady rate.

    python tests/streaming_station.py --config FILE [--config FILE] --ready FILE
        [--rate 20] [--resume JOURNAL] [--commit-ms 100]

Journals a "summary" message ``rate`` times per second and a "health" beat every second (body
carries the publisher's counters), publishes each right after journaling it, and commits every
``commit-ms`` (so replays also hit not-yet-committed messages, served from the publisher's
memory). Assessor commands are journaled as "mark" / "contact" / "exam" messages, committed, then
acknowledged. ``--resume`` continues an existing session (station restart). SIGUSR1: journal nothing
more but keep serving (the session's final content is then fixed). Writes ``--ready``
(JSON: session, journal, pub, req, pid) once bound, and the publisher's counters to
``<ready>.stats`` twice a second. SIGTERM: clean stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402

from station import __version__, clock, config
from station.recorder import journal  # noqa: E402
from station.recorder.publisher import Publisher  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--ready", required=True, type=Path)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--commit-ms", type=int, default=100)
    ap.add_argument("--body-bytes", type=int, default=200)
    a = ap.parse_args()
    cfg = config.load(a.config, system=False)
    if a.resume:
        j = journal.Journal.open(a.resume, writable=True)
        header = j.header
    else:
        mono, wall = clock.wall_anchor()
        sid = journal.new_session_id(cfg.station.id, wall)
        header = journal.SessionHeader(cfg.station.id, sid, mono, wall, clock.boot_id(), __version__,
                                       cfg.hash, {})
        j = journal.Journal.create(config.data_dir(cfg), header)
    lock = threading.Lock()
    pub: Publisher

    def emit(kind: str, body: dict) -> tuple[int, int]:
        t = clock.monotonic_ns()
        raw = msgpack.packb(body, use_bin_type=True)
        with lock:  # seq order == publish order
            seq = j.append_message(kind, t, raw)
            pub.publish(seq, kind, t, raw)
        return seq, t

    def on_command(cmd: dict) -> dict:
        kind = {"mark": "mark", "contact": "contact", "exam": "exam"}[cmd["type"]]
        seq, t = emit(kind, cmd)
        with lock:
            j.commit()
        return {"journaled_seq": seq, "t_ns": t}

    pub = Publisher(cfg, header, j.path, on_command)
    pub.start()
    stop = threading.Event()
    quiet = threading.Event()  # SIGUSR1: journal nothing more (the session is complete), keep serving
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    signal.signal(signal.SIGUSR1, lambda *x: quiet.set())
    tmp = a.ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"session": header.session_id, "journal": str(j.path),
                               "pub": pub.pub_endpoint, "req": pub.req_endpoint, "pid": os.getpid()}))
    os.replace(tmp, a.ready)
    period = 1.0 / a.rate
    nxt = time.monotonic()
    next_health = nxt
    next_commit = nxt
    next_stats = nxt
    n = 0
    pad = "x" * max(0, a.body_bytes - 60)
    while not stop.is_set():
        now = time.monotonic()
        if quiet.is_set():
            nxt = next_health = now + 3600
        if now >= nxt:
            n += 1
            emit("summary", {"n": n, "talk_share": (n % 100) / 100, "pad": pad})
            nxt += period
            if nxt < now - 5:  # far behind (e.g. after SIGSTOP): do not burst forever
                nxt = now
        if now >= next_health:
            emit("health", {"state": "ok", "publisher": pub.stats()})
            next_health += 1.0
        if now >= next_commit:
            with lock:
                j.commit()
            next_commit = now + a.commit_ms / 1000
        if now >= next_stats:
            st = a.ready.with_suffix(".stats.tmp")
            st.write_text(json.dumps(pub.stats()))
            os.replace(st, a.ready.with_suffix(".stats"))
            next_stats = now + 0.5
        stop.wait(max(0.0, min(nxt, next_health, next_commit) - time.monotonic()))
    with lock:
        j.commit()
    pub.stop()
    j.close()
    return 0


# ------------------------------------------------------------------------- helpers for the tests
from tests.support import console_config, console_station, free_port, station_config  # noqa: E402,F401


class Rig:
    """Keys and config files for one station and its consoles under ``root``.

    Keys: station, console-a, console-b (authorized, each bound to the assessor of its name),
    intruder (not authorized), proxy (authorized, bound to no assessor).
    """

    def __init__(self, root: Path, station_id: str = "st-1"):
        from station import keys
        self.root = Path(root)
        self.station_id = station_id
        self.kdir = self.root / "keys"
        self.allow = self.root / "allow"
        for name in ("station", "console-a", "console-b", "intruder", "proxy"):
            keys.generate(self.kdir, name)
        for name in ("console-a", "console-b"):
            keys.authorize(self.kdir / f"{name}.key", self.allow, assessor_id=name, assessor_name=f"Assessor {name}")
        keys.authorize(self.kdir / "proxy.key", self.allow)
        self.pub_port, self.req_port = free_port(), free_port()
        self.station_cfg = self.root / "station.toml"
        station_config(self.station_cfg, station_id=station_id, data_dir=self.root / "data",
                       pub_port=self.pub_port, req_port=self.req_port,
                       secret_key_file=self.kdir / "station.key_secret", authorized_keys_dir=self.allow)

    def console_cfg(self, name: str, key: str | None = None, pub_port: int | None = None,
                    req_port: int | None = None, extra: str = "", station_key: str = "station") -> Path:
        key = key or name
        path = self.root / f"{name}.toml"
        console_config(path, data_dir=self.root / name, store=self.root / (name + ".sqlite"),
                       assessor_id=name, assessor_name=f"Assessor {name}",
                       secret_key_file=self.kdir / (key + ".key_secret"), extra=extra,
                       stations=[console_station(self.station_id, pub_port or self.pub_port, req_port or self.req_port,
                                                 self.kdir / (station_key + ".key"))])
        return path

    def start_station(self, rate: float = 20.0, resume: Path | None = None, **kw):
        """Start tests/streaming_station.py; returns (Popen, ready dict)."""
        import subprocess
        ready = self.root / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--config", str(self.station_cfg), "--ready", str(ready),
               "--rate", str(rate)]
        if resume:
            cmd += ["--resume", str(resume)]
        for k, v in kw.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        log = open(self.root / "station.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("test station did not start: "
                                   + (self.root / "station.log").read_text()[-2000:])
            time.sleep(0.05)
        return proc, json.loads(ready.read_text())

    def station_stats(self) -> dict:
        try:
            return json.loads((self.root / "ready.stats").read_text())
        except (OSError, ValueError):
            return {}


def journal_messages(path: Path) -> list[tuple]:
    """(seq, kind, t_ns, body) of every committed message of a journal."""
    with journal.Journal.open(path) as j:
        return [(m.seq, m.kind, m.t_ns, m.body) for m in j.iter_messages(0)]


def store_messages(store: Path, station: str, session: str) -> list[tuple]:
    """(seq, kind, t_ns, body) of every message a console store holds for a session, read as any
    reader does (the recent log and the database)."""
    from station.console.store import ConsoleStore
    reader = ConsoleStore(store, readonly=True)
    try:
        return [(m.seq, m.kind, m.t_ns, bytes(m.body)) for m in reader.messages(station, session)]
    finally:
        reader.close()


if __name__ == "__main__":
    sys.exit(main())
