"""Streaming benchmark: prints figures (not a test). See docs/protocol.md for recorded results.

1. Fan-in: ``--stations`` simulated stations (default 100), each a real Journal + Publisher with
   CURVE, publishing ``--rate`` messages/s (default 10) for ``--duration`` s (default 60), hosted in
   ``--hosts`` station processes; one Console (CURVE, SQLite store) in this process follows all.
   Prints: messages expected / delivered / missing / needing replay, end-to-end latency p50/p99/max
   (stamped with CLOCK_MONOTONIC in the station host just before ``publish()``, taken again on
   the same clock when the application thread of this process gets the message, after the
   store's write), console CPU share (this process's CPU time / wall time, in % of one core:
   the console's I/O and checkpoint threads, ZeroMQ's I/O thread and the application thread),
   and what counts the work: the console's I/O wake-ups, store writes and SQLite commits per second, the process's
   context switches per second and CPU per thread. A raw pyzmq CURVE SUB in a process of its
   own, connected to the same stations, is measured over the same seconds (latency at receipt,
   it stores nothing) and printed beside it; with several runs, the range over them.
   ``--cycle-ms 0 2`` repeats every run once per console pacing (``Console.cycle_ns``), in turn.
   ``--app asyncio`` takes the messages with ``Console.apoll()`` in an asyncio event loop, as the
   web console does, instead of ``Console.poll()`` in a thread.
2. Gap fill: a journal holding 1 hour of messages (``--gap-rate`` msg/s, default 10, ~300-byte
   bodies) served by one station process to a console that starts empty. Prints the seconds until
   the console has stored and delivered all of them.

    .venv/bin/python benchmarks/streaming_bench.py [--stations 100] [--seconds 60] [--runs 1]
        [--cycle-ms MS ...] [--app thread|asyncio] [--skip-fanin] [--skip-gapfill]

   ``--seconds 10 --skip-gapfill`` is a quick run (about 25 s). Each fan-in run prints the load
   average (1 min) before and after: the machine is shared, so compare console and raw within
   a run.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402

from station import __version__, clock, config, keys
from station.console.follower import Console, StationSpec  # noqa: E402
from station.recorder import journal  # noqa: E402
from station.recorder.publisher import Publisher  # noqa: E402

BODY_PAD = "x" * 220


def _cfg(root: Path, station_id: str):
    return config.load(system=False).replace(
        station={"id": station_id, "data_dir": str(root / "data")},
        publisher={"pub_bind": "tcp://127.0.0.1:*", "req_bind": "tcp://127.0.0.1:*",
                   "secret_key_file": str(root / "keys" / "station.key_secret"),
                   "authorized_keys_dir": str(root / "allow")})


def _new_journal(cfg, station_id: str):
    mono, wall = clock.wall_anchor()
    h = journal.SessionHeader(station_id, journal.new_session_id(station_id, wall), mono, wall,
                              clock.boot_id(), __version__, cfg.hash, {})
    return journal.Journal.create(Path(cfg.station.data_dir), h)


def host_main(a) -> int:
    """A station host process: a.count stations, or the gap-fill station (a.gapfill)."""
    root = Path(a.root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    stations = []
    for i in range(a.count):
        sid = f"sim-{a.index:02d}-{i:03d}" if not a.gapfill else "gapfill"
        cfg = _cfg(root, sid)
        j = _new_journal(cfg, sid)
        if a.gapfill:  # one hour of history, 1/rate s apart
            t = j.header.created_mono_ns - 3600 * clock.NS_PER_S
            step = int(clock.NS_PER_S / a.rate)
            for n in range(int(3600 * a.rate)):
                j.append_message("summary", t + n * step,
                                 msgpack.packb({"n": n, "share": 0.5, "pad": BODY_PAD}))
            j.commit()
        p = Publisher(cfg, j.header, j.path, lambda c: {})
        p.start()
        stations.append((sid, j, p))
        print(json.dumps({"id": sid, "pub": p.pub_endpoint, "req": p.req_endpoint,
                          "session": j.header.session_id, "journal": str(j.path)}), flush=True)
    print("READY", flush=True)
    if a.gapfill:
        stop.wait()
    else:
        period = 1.0 / a.rate
        t0 = time.monotonic()
        heap = [(t0 + period * k / len(stations), k) for k in range(len(stations))]
        heapq.heapify(heap)
        counts = [0] * len(stations)
        next_commit = t0
        while not stop.is_set():
            due, k = heap[0]
            now = time.monotonic()
            if now >= next_commit:
                for _, j, _ in stations:
                    j.commit()
                next_commit = now + 0.1
            if due > now:
                stop.wait(min(due, next_commit) - now)
                continue
            heapq.heapreplace(heap, (due + period, k))
            sid, j, p = stations[k]
            counts[k] += 1
            kind = "health" if counts[k] % 10 == 0 else "summary"
            body = msgpack.packb({"n": counts[k], "share": 0.25, "pad": BODY_PAD})
            t = clock.monotonic_ns()
            seq = j.append_message(kind, t, body)
            p.publish(seq, kind, t, body)
    for _, j, p in stations:
        j.commit()
        p.stop()
        j.close()
    return 0


def raw_main(a) -> int:
    """The raw pyzmq subscriber (its own process, so that both CPU figures are per process): one
    CURVE SUB socket connected to every station, receiving for a.duration s after a 3 s warm-up;
    per message it only unpacks the header for t_ns. Prints one JSON line of figures."""
    import zmq
    infos = json.loads(Path(a.root, "raw-endpoints.json").read_text())
    pub, sec = keys.load_secret(Path(a.root, "keys", "console.key_secret"))
    server = keys.load_public(Path(a.root, "keys", "station.key"))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.curve_serverkey, sub.curve_publickey, sub.curve_secretkey = server, pub, sec
    sub.rcvhwm = 100_000
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    for i in infos:
        sub.connect(i["pub"])
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    lat: list[float] = []
    warm = time.monotonic() + 3
    r0 = w0 = None
    end = warm + a.duration
    while time.monotonic() < end:
        if r0 is None and time.monotonic() >= warm:
            r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            lat.clear()
        if not poller.poll(100):
            continue
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.monotonic_ns()
            lat.append((now - msgpack.unpackb(frames[1])["t_ns"]) / 1e6)
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (w1 - w0) * 100
    print(json.dumps({"messages": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
                      "max_ms": max(lat) if lat else None, "cpu_pct_of_core": cpu,
                      "switches_per_s": (_switches(r1) - _switches(r0)) / (w1 - w0)}), flush=True)
    sub.close(0)
    ctx.term()
    return 0


def _spawn_host(root: Path, index: int, count: int, rate: float, gapfill: bool = False):
    cmd = [sys.executable, __file__, "--host", "--root", str(root), "--index", str(index),
           "--count", str(count), "--rate", str(rate)] + (["--gapfill"] if gapfill else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    infos = []
    for line in p.stdout:
        if line.strip() == "READY":
            return p, infos
        infos.append(json.loads(line))
    p.kill()
    p.wait(10)
    raise RuntimeError("a station host failed to start (see its messages above)")


def _console(root: Path, infos: list[dict], name: str, cycle_ms: float | None = None) -> Console:
    cfg = config.load(system=False).replace(
        station={"data_dir": str(root / name)},
        console={"secret_key_file": str(root / "keys" / "console.key_secret"),
                 "store": str(root / f"{name}.sqlite")})
    pk = keys.load_public(root / "keys" / "station.key")
    specs = [StationSpec(i["id"], i["pub"], i["req"], pk) for i in infos]
    con = Console(cfg, specs=specs)
    if cycle_ms is not None:
        con.cycle_ns = int(cycle_ms * 1e6)
    return con


def _setup_keys(root: Path) -> None:
    keys.generate(root / "keys", "station")
    keys.generate(root / "keys", "console")
    keys.authorize(root / "keys" / "console.key", root / "allow")


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) per thread of this process, summed by thread name (the
    console's threads are named: console-io, console-ckpt; ZeroMQ's are ZMQbg/...), from
    /proc/self/task/*/stat. Threads that end meanwhile are missing (none do while measuring)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _switches(r) -> int:
    """Context switches (voluntary: the process waited; involuntary: preempted) in a getrusage."""
    return r.ru_nvcsw + r.ru_nivcsw


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def fanin(root: Path, stations: int, hosts: int, rate: float, duration: float,
          cycle_ms: float | None = None, app: str = "thread") -> dict:
    procs: list[subprocess.Popen] = []
    try:
        return _fanin(root, stations, hosts, rate, duration, procs, cycle_ms, app)
    finally:
        for p in procs:   # on any error too: no station host or raw subscriber left behind
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _fanin(root: Path, stations: int, hosts: int, rate: float, duration: float, procs: list,
           cycle_ms: float | None, app: str) -> dict:
    per = [stations // hosts + (1 if k < stations % hosts else 0) for k in range(hosts)]
    infos = []
    for k, n in enumerate(per):
        p, inf = _spawn_host(root, k, n, rate)
        procs.append(p)
        infos += inf
    Path(root, "raw-endpoints.json").write_text(json.dumps(infos))
    raw = subprocess.Popen([sys.executable, __file__, "--raw", "--root", str(root), "--duration", str(duration)],
                           stdout=subprocess.PIPE, text=True)   # warms up and measures with the console
    procs.append(raw)
    con = _console(root, infos, "console-fanin", cycle_ms)
    lat: list[float] = []
    delivered = 0
    con.start()

    def note(batch: list) -> None:
        nonlocal delivered
        now = time.monotonic_ns()
        delivered += len(batch)
        lat.extend((now - m.t_ns) / 1e6 for m in batch)

    async def consume_async(until: float, record: bool) -> None:
        while time.monotonic() < until:
            batch = await con.apoll(100)
            if record:
                note(batch)

    def consume(until: float, record: bool) -> None:
        """Take messages until ``until`` (monotonic s): Console.poll() in this thread, or
        Console.apoll() in an asyncio event loop, as the web console does."""
        if app == "asyncio":
            import asyncio
            asyncio.run(consume_async(until, record))
            return
        while time.monotonic() < until:
            batch = con.poll(100)
            if record:
                note(batch)

    consume(time.monotonic() + 3, record=False)  # connect, first snapshot, clock probes
    st0, th0 = con.stats(), _thread_cpu_s()
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    consume(w0 + duration, record=True)
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    st1, th1 = con.stats(), _thread_cpu_s()
    span = w1 - w0
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / span * 100
    threads = {name: (th1[name] - th0.get(name, 0.0)) / span * 100 for name in th1}
    work = {"wakeups_per_s": (st1.get("wakeups", 0) - st0.get("wakeups", 0)) / span,
            "commits_per_s": (st1.get("commits", 0) - st0.get("commits", 0)) / span,
            "writes_per_s": (st1.get("store_writes", 0) - st0.get("store_writes", 0)) / span,
            "switches_per_s": (_switches(r1) - _switches(r0)) / span}
    raw_out, _ = raw.communicate(timeout=60)
    try:
        raw_fig = json.loads(raw_out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"the raw subscriber gave no figures (exit code {raw.returncode})") from None
    hosts_ = procs[:-1]
    for p in hosts_:
        p.send_signal(signal.SIGTERM)
    for p in hosts_:
        p.wait(60)
    settle = time.monotonic() + 10
    while time.monotonic() < settle:  # anything the console still lacks comes by replay now
        con.poll(100)
        if all(s["next_seq"] and s["known_last"] is not None and s["next_seq"] > s["known_last"]
               for s in con.states().values()):
            break
    expected = 0
    for i in infos:
        with journal.Journal.open(Path(i["journal"])) as j:
            expected += j.last_seq()
    states = con.states()
    stored = sum(len(con.reader.seqs(i["id"], i["session"])) for i in infos)
    replayed = sum(s["counts"].get("replayed", 0) for s in states.values())
    con.stop()
    return {"stations": stations, "rate": rate, "duration_s": duration, "expected": expected,
            "stored": stored, "missing": expected - stored, "needed_replay": replayed,
            "measured_msgs": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "max_ms": max(lat) if lat else float("nan"), "console_cpu_pct_of_core": cpu, "raw": raw_fig,
            "threads_pct": threads, **work}


def gapfill(root: Path, rate: float) -> dict:
    t0 = time.monotonic()
    p, infos = _spawn_host(root, 0, 1, rate, gapfill=True)
    prep = time.monotonic() - t0
    n = int(3600 * rate)
    con = _console(root, infos, "console-gap")
    got = 0
    t1 = time.monotonic()
    con.start()
    while got < n and time.monotonic() - t1 < 120:
        got += len(con.poll(100))
    took = time.monotonic() - t1
    con.stop()
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    return {"messages": n, "delivered": got, "seconds": took, "journal_prep_s": prep}


def _print_spread(results: list[dict], label: str = "") -> None:
    """The range (lowest-highest) of each figure over the runs, console beside raw."""
    def rng(vals: list[float], fmt: str) -> str:
        return f"{format(min(vals), fmt)}-{format(max(vals), fmt)}"
    print(f"  over {len(results)} runs{label} (lowest-highest):")
    for label, get in (("station console", lambda r: (r["p50_ms"], r["p99_ms"], r["max_ms"],
                                                       r["console_cpu_pct_of_core"])),
                       ("raw pyzmq SUB", lambda r: (r["raw"]["p50_ms"], r["raw"]["p99_ms"],
                                                    r["raw"]["max_ms"], r["raw"]["cpu_pct_of_core"]))):
        cols = list(zip(*(get(r) for r in results)))
        print(f"    {label:<16} p50 {rng(cols[0], '.2f')} ms, p99 {rng(cols[1], '.2f')} ms, "
              f"max {rng(cols[2], '.1f')} ms, CPU {rng(cols[3], '.1f')} % of a core")
    print(f"    missing messages in all runs: {sum(r['missing'] for r in results)}", flush=True)


def main() -> int:
    try:
        return _main()
    except KeyboardInterrupt:
        print("streaming_bench: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"streaming_bench: {e}", file=sys.stderr)
        return 1


def _main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gapfill", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--duration", "--seconds", dest="duration", type=float, default=60.0,
                    help="fan-in measuring time in s (default 60; e.g. --seconds 10 for a quick run)")
    ap.add_argument("--runs", type=int, default=1, help="fan-in runs, one table row pair each")
    ap.add_argument("--cycle-ms", type=float, nargs="+", default=None, metavar="MS",
                    help="the console's pacing under load (Console.cycle_ns, default its own); "
                         "several values: each run is repeated with each, in turn, for a comparison "
                         "under the same machine load")
    ap.add_argument("--gap-rate", type=float, default=10.0)
    ap.add_argument("--skip-fanin", action="store_true")
    ap.add_argument("--skip-gapfill", action="store_true")
    ap.add_argument("--app", choices=("thread", "asyncio"), default="thread",
                    help="how the application takes messages: Console.poll() in a thread, or "
                         "Console.apoll() in an asyncio event loop (as the web console does)")
    a = ap.parse_args()
    if a.host:
        return host_main(a)
    if a.raw:
        return raw_main(a)
    with tempfile.TemporaryDirectory(prefix="streaming-bench-") as tmp:
        root = Path(tmp)
        _setup_keys(root)
        print(f"machine: {os.cpu_count()} cores; station hosts and console on the same machine")
        if not a.skip_fanin:
            print(f"fan-in: {a.stations} stations x {a.rate:g} msg/s for {a.duration:g} s per run, "
                  f"application taking messages with {'Console.apoll() in asyncio' if a.app == 'asyncio' else 'Console.poll() in a thread'} "
                  f"(CURVE, real journals), {a.runs} run(s)")
            print("  side by side, same load, same run (latency: station publish -> received;"
                  " the console's: stored and delivered to the application):")
            print(f"  {'run':<4}{'subscriber':<26} {'messages':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
                  f"{'CPU % of a core':>16}  load avg (1 min) before/after")
            print(f"  {'':<4}{'station console (goal)':<26} {'all':>9} {'':>7} {'<= 5':>7} {'':>7} {'<= 20':>16}")
            results: dict[float | None, list[dict]] = {c: [] for c in (a.cycle_ms or [None])}
            for run, cycle in ((run, c) for run in range(1, a.runs + 1) for c in results):
                load0 = os.getloadavg()[0]
                run_root = root / f"run{run}-{cycle}"
                run_root.mkdir()
                _setup_keys(run_root)
                if cycle is not None:
                    print(f"  (console cycle {cycle:g} ms)")
                r = fanin(run_root, a.stations, a.hosts, a.rate, a.duration, cycle, a.app)
                load1 = os.getloadavg()[0]
                w = r["raw"]
                print(f"  {run:<4}{'station console':<26} {r['measured_msgs']:>9} {r['p50_ms']:>7.2f} "
                      f"{r['p99_ms']:>7.2f} {r['max_ms']:>7.1f} {r['console_cpu_pct_of_core']:>16.1f}  "
                      f"{load0:.2f} / {load1:.2f}")
                print(f"  {'':<4}{'raw pyzmq SUB (no store)':<26} {w['messages']:>9} {w['p50_ms']:>7.2f} "
                      f"{w['p99_ms']:>7.2f} {w['max_ms']:>7.1f} {w['cpu_pct_of_core']:>16.1f}")
                print(f"  {'':<4}messages journaled {r['expected']}, stored by the console {r['stored']}, "
                      f"missing {r['missing']}, fetched by replay {r['needed_replay']}")
                msgs_s = r["measured_msgs"] / r["duration_s"]
                print(f"  {'':<4}console work: {r['wakeups_per_s']:.0f} I/O wake-ups/s, "
                      f"{r['writes_per_s']:.0f} store writes/s ({msgs_s / max(r['writes_per_s'], 1e-9):.1f} "
                      f"messages each), {r['commits_per_s']:.0f} SQLite commits/s, "
                      f"{r['switches_per_s']:.0f} context switches/s "
                      f"(raw SUB {w['switches_per_s']:.0f}/s); CPU by thread: "
                      + ", ".join(f"{n} {v:.1f} %" for n, v in sorted(r["threads_pct"].items(),
                                                                      key=lambda kv: -kv[1]) if v >= 0.05),
                      flush=True)
                results[cycle].append(r)
            for cycle, rs in results.items():
                if len(rs) > 1:
                    _print_spread(rs, "" if cycle is None else f", console cycle {cycle:g} ms")
        if not a.skip_gapfill:
            g = gapfill(root, a.gap_rate)
            print(f"gap fill: 1 hour at {a.gap_rate:g} msg/s = {g['messages']} messages to an empty "
                  f"console: {g['seconds']:.2f} s (delivered {g['delivered']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
