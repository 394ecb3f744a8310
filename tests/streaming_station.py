"""A test station process: real Journal + real Publisher, messages at a steady rate.

    python tests/streaming_station.py --config FILE [--config FILE] --ready FILE
        [--rate 20] [--resume JOURNAL] [--commit-ms 100]

Journals a "summary" message ``rate`` times per second and a "health" beat every second (body
carries the publisher's counters), publishes each right after journaling it, and commits every
``commit-ms`` (so replays also hit not-yet-committed messages, served from the publisher's
memory). Assessor commands are journaled as "mark" / "contact" / "exam" messages, committed, then
acknowledged. ``--resume`` continues an existing session (station restart). Writes ``--ready``
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

from station import __version__, clock, config, journal  # noqa: E402
from station.publisher import Publisher  # noqa: E402


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
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
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


if __name__ == "__main__":
    sys.exit(main())
