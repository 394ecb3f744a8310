"""Web console benchmark: 60 stations at the demo rate on one console. Prints figures (not a test).

How the stations are simulated: one real demo station (``station run --sources scenario``) runs
for ``--record`` s first, and every message it publishes (summary, health, evidence, contact,
alert) is recorded through a Console. Then ``--stations`` light stations (real Journal + real
Publisher each, plaintext loopback, hosted in ``--hosts`` processes) replay those real bodies at
the demo rate: a summary every 0.5 s and a health beat every 1 s per station, an evidence and a
contact message every 30 s, with every ``*_ns`` time and span shifted to "now". The console is
the real ``station console`` (web mode) in its own process; this process polls it like the page
does (room view every 400 ms, one open station view every 400 ms, its whole-session timeline
every 2 s) for ``--duration`` s.

Prints: time to apply one tick of updates (all messages of 0.5 s of 60 stations) measured in the
console (its /api/stats) and offline on the same bodies; room-view response time and the page
update rate achieved; console CPU share (its process CPU time / wall time, % of one core).

    .venv/bin/python benchmarks/console_bench.py [--stations 60] [--duration 30] [--hosts 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgpack  # noqa: E402

from station import __version__, clock, config
from station.recorder import journal  # noqa: E402
from tests.support import free_port  # noqa: E402

TICK_S = 0.5


def _shift(o, d: int):
    """Every *_ns value and every [start, end] span / [t, category] focus point moved by d ns."""
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            if k.endswith("_ns") and isinstance(v, int) and v > 10**9:
                out[k] = v + d
            elif k in ("agent", "customer", "typing", "mouse") and isinstance(v, list):
                out[k] = [[s + d, e + d] for s, e in v]
            elif k == "focus" and isinstance(v, list):
                out[k] = [[t + d, c] for t, c in v]
            else:
                out[k] = _shift(v, d)
        return out
    return o


# ------------------------------------------------------------------------------ 1. record
def record(root: Path, seconds: float) -> list[tuple[str, int, dict]]:
    from station.console.follower import Console
    pp, rp = free_port(), free_port()
    scfg = root / "rec-station.toml"
    scfg.write_text(f'[station]\nid = "rec"\ndata_dir = "{root / "rec"}"\n[publisher]\n'
                    f'pub_bind = "tcp://127.0.0.1:{pp}"\nreq_bind = "tcp://127.0.0.1:{rp}"\n'
                    'allow_plaintext_loopback = true\n')
    p = subprocess.Popen([sys.executable, "-m", "station", "--no-system-config", "--config", str(scfg), "run",
                          "--sources", "scenario", "--speed", "20", "--data-dir", str(root / "rec")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    ccfg = root / "rec-console.toml"
    ccfg.write_text(f'[station]\ndata_dir = "{root / "recc"}"\n[console]\nallow_plaintext_loopback = true\n'
                    f'store = "{root / "rec.sqlite"}"\n[[console.station]]\nid = "rec"\n'
                    f'pub_endpoint = "tcp://127.0.0.1:{pp}"\nreq_endpoint = "tcp://127.0.0.1:{rp}"\npublic_key = ""\n')
    con = Console(config.load([ccfg], system=False))
    con.start()
    out = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            out += [(m.kind, m.t_ns, m.data) for m in con.poll(200)]
    finally:
        con.stop()
        p.send_signal(signal.SIGTERM)
        p.wait(15)
    return out


# ------------------------------------------------------------------------------ 2. fleet host
def host_main(a) -> int:
    from station.recorder.publisher import Publisher
    root = Path(a.root)
    templates = json.loads(Path(a.templates).read_text())
    by_kind: dict[str, list] = {}
    for kind, t, body in templates:
        by_kind.setdefault(kind, []).append((t, body))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    stations = []
    for i in range(a.count):
        sid = f"sim-{a.index:02d}-{i:03d}"
        cfg = config.load(system=False).replace(
            station={"id": sid, "data_dir": str(root / "fleet")},
            publisher={"pub_bind": "tcp://127.0.0.1:*", "req_bind": "tcp://127.0.0.1:*",
                       "allow_plaintext_loopback": True})
        mono, wall = clock.wall_anchor()
        h = journal.SessionHeader(sid, journal.new_session_id(sid, wall), mono, wall, clock.boot_id(),
                                  __version__, cfg.hash, {})
        j = journal.Journal.create(root / "fleet", h)
        p = Publisher(cfg, h, j.path, lambda c: {"journaled": False})
        p.start()
        stations.append((sid, j, p))
        print(json.dumps({"id": sid, "pub": p.pub_endpoint, "req": p.req_endpoint}), flush=True)
    print("READY", flush=True)
    t0 = time.monotonic()
    base = by_kind["summary"][0][0]
    n = 0
    while not stop.is_set():
        n += 1
        due = t0 + n * TICK_S
        stop.wait(max(0.0, due - time.monotonic()))
        kinds = ["summary"] + (["health"] if n % 2 == 0 else []) + (["evidence", "contact"] if n % 60 == 0 else [])
        for k, (sid, j, p) in enumerate(stations):
            for kind in kinds:
                pool = by_kind.get(kind)
                if not pool:
                    continue
                t_rec, body = pool[(n + k) % len(pool)]
                now = clock.monotonic_ns()
                raw = msgpack.packb(_shift(body, now - t_rec), use_bin_type=True)
                seq = j.append_message(kind, now, raw)
                p.publish(seq, kind, now, raw)
        for _, j, _ in stations:
            j.commit()
    for _, j, p in stations:
        p.stop()
        j.close()
    return 0


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def offline_tick(templates, stations: int) -> dict:
    """Apply one tick (60 summaries + 60 health beats) to a Room of N stations, in process."""
    from station.console.web.state import Room
    from station.protocol import Message
    cfg = config.load(system=False)
    room = Room(cfg, [f"s{i}" for i in range(stations)])
    summ = [b for k, _, b in templates if k == "summary"]
    health = [b for k, _, b in templates if k == "health"]
    seq = 0
    times, card_times = [], []
    for rep in range(40):
        batch = []
        for i in range(stations):
            for kind, pool in (("summary", summ), ("health", health)):
                seq += 1
                body = pool[(rep + i) % len(pool)]
                batch.append(Message(f"s{i}", "sess", seq, kind, body.get("t_ns", 0), 0, b"", data=body))
        t = time.perf_counter()
        room.apply(batch)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        json.dumps([room.card(f"s{i}", {"state": "connected", "last_rx_age_s": 0.1}) for i in range(stations)])
        card_times.append(time.perf_counter() - t)
    return {"apply_ms_median": _pct(times, 0.5) * 1e3, "apply_ms_p90": _pct(times, 0.9) * 1e3,
            "messages": len(batch), "room_json_ms_median": _pct(card_times, 0.5) * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=60)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--record", type=float, default=30.0)
    ap.add_argument("--host", action="store_true")
    ap.add_argument("--root")
    ap.add_argument("--templates")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--count", type=int, default=0)
    a = ap.parse_args()
    if a.host:
        return host_main(a)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        root = Path(tmp)
        print(f"recording a real demo station for {a.record:.0f} s (speed 20) ...", flush=True)
        templates = record(root, a.record)
        kinds = {}
        for k, _, _ in templates:
            kinds[k] = kinds.get(k, 0) + 1
        print(f"recorded {len(templates)} messages {kinds}")
        tp = root / "templates.json"
        tp.write_text(json.dumps(templates))
        off = offline_tick(templates, a.stations)
        hosts, infos = [], []
        try:
            per = [a.stations // a.hosts + (1 if k < a.stations % a.hosts else 0) for k in range(a.hosts)]
            for k, n in enumerate(per):
                p = subprocess.Popen([sys.executable, __file__, "--host", "--root", str(root), "--templates", str(tp),
                                      "--index", str(k), "--count", str(n)], stdout=subprocess.PIPE, text=True)
                hosts.append(p)
                for line in p.stdout:
                    if line.strip() == "READY":
                        break
                    infos.append(json.loads(line))
            port = free_port()
            ccfg = root / "console.toml"
            ccfg.write_text(f'[station]\ndata_dir = "{root / "con"}"\n[console]\nassessor_id = "bench"\n'
                            f'allow_plaintext_loopback = true\nstore = "{root / "console.sqlite"}"\nhttp_port = {port}\n'
                            + "".join(f'[[console.station]]\nid = "{i["id"]}"\npub_endpoint = "{i["pub"]}"\n'
                                      f'req_endpoint = "{i["req"]}"\npublic_key = ""\n' for i in infos))
            con = subprocess.Popen([sys.executable, "-m", "station", "--no-system-config", "--config", str(ccfg),
                                    "console"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
            hosts.append(con)
            url = f"http://127.0.0.1:{port}"
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    room = _get(url + "/api/room")
                    if sum(c["state"] == "connected" for c in room["stations"]) == a.stations:
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            time.sleep(3)  # warm-up: catch-up replays done
            st0 = _get(url + "/api/stats")
            cpu0, w0 = _cpu_s(con.pid), time.monotonic()
            lat_room, lat_station, lat_session, red = [], [], [], []
            updates, sid = 0, infos[0]["id"]
            next_session = 0.0
            end = time.monotonic() + a.duration
            while time.monotonic() < end:
                t = time.monotonic()
                room = _get(url + "/api/room")
                lat_room.append(time.monotonic() - t)
                red.append(sum(c["red"] for c in room["stations"]))
                t2 = time.monotonic()
                _get(url + f"/api/station/{sid}?window=last5")
                lat_station.append(time.monotonic() - t2)
                if t2 >= next_session:
                    next_session = t2 + 2
                    t3 = time.monotonic()
                    _get(url + f"/api/station/{sid}?window=session")
                    lat_session.append(time.monotonic() - t3)
                updates += 1
                time.sleep(max(0.0, 0.4 - (time.monotonic() - t)))
            wall = time.monotonic() - w0
            cpu = _cpu_s(con.pid) - cpu0
            st1 = _get(url + "/api/stats")
        finally:
            for p in hosts:
                p.send_signal(signal.SIGTERM)
            for p in hosts:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        msgs = st1["messages"] - st0["messages"]
        batches = max(1, st1["batches"] - st0["batches"])
        per_msg_ms = (st1["apply_ns_total"] - st0["apply_ns_total"]) / max(1, msgs) / 1e6
        per_tick = a.stations * (1 + TICK_S)  # summaries + health beats in 0.5 s (+ rare evidence/contact)
        print(f"\n{a.stations} stations, {a.duration:.0f} s measured, console = `station console` process")
        print(f"messages applied by the console: {msgs} ({msgs / wall:.0f}/s) in {batches} batches "
              f"(console counters: {json.dumps({k: v for k, v in st1['console'].items()})})")
        print(f"time to apply one tick ({per_tick:.0f} messages) in the console: {per_msg_ms * per_tick:.2f} ms "
              f"({per_msg_ms * 1000:.1f} us/message; largest batch {st1['apply_ns_max'] / 1e6:.1f} ms)")
        print(f"offline, same bodies: apply {off['messages']} messages (a summary and a health beat per station): median {off['apply_ms_median']:.2f} ms, "
              f"p90 {off['apply_ms_p90']:.2f} ms; room JSON for {a.stations} cards: {off['room_json_ms_median']:.2f} ms")
        print(f"page updates achieved: {updates / wall:.2f}/s (room + station view each poll; target >= 2/s)")
        print(f"room view response: p50 {_pct(lat_room, .5) * 1e3:.1f} ms, p99 {_pct(lat_room, .99) * 1e3:.1f} ms; "
              f"station view p50 {_pct(lat_station, .5) * 1e3:.1f} ms; whole-session timeline p50 "
              f"{_pct(lat_session, .5) * 1e3:.1f} ms")
        print(f"cards red (false alarms) per poll: max {max(red) if red else 0}, polls with any red: "
              f"{sum(1 for r in red if r)} of {len(red)}")
        print(f"console CPU: {100 * cpu / wall:.1f} % of one core (load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
