"""Soak: an accelerated 6-hour exam with every part running; prints RSS growth, journal size, CPU
and message counts (issue 7; goal: RSS growth <= 10 MB).

    .venv/bin/python benchmarks/soak.py [--hours 6] [--speed 60] [--sample-s 10]

Parts: ``station run --sources scenario --speed S`` (capture sources, recorder with journal and
engine, CURVE publisher: one process, since scenario time runs S x faster than the recorder's real
clock would in the split deployment) and ``station console --plain`` (its own process, CURVE,
storing every message). Exam time = wall time x speed: 6 h at speed 60 take 6 minutes.

RSS growth is measured from the first sample after a warm-up (10 % of the run, at least one
sample: imports, first contact, SQLite page cache) to the end, and as the slope of a least-squares
line through all later samples (MB per exam hour), which is less sensitive to a single sample.
Exit status 1 when the growth exceeds --max-growth-mb (default 10).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support import free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def journal_stats(data: Path) -> tuple[int, int, int]:
    """(bytes on disk, last seq, blocks) of the newest session (read-only)."""
    from station.recorder.journal import list_sessions
    infos = list_sessions(data)
    if not infos:
        return 0, 0, 0
    p = infos[-1].path
    size = sum(q.stat().st_size for q in (p, Path(str(p) + "-wal")) if q.exists())
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        seq = con.execute("SELECT max(seq) FROM messages").fetchone()[0] or 0
        blocks = con.execute("SELECT count(*) FROM blocks").fetchone()[0]
    finally:
        con.close()
    return size, seq, blocks


def console_count(store: Path) -> int:
    if not store.exists():
        return 0
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=6.0, help="exam length (exam hours)")
    ap.add_argument("--speed", type=float, default=60.0, help="scenario speed (x real time)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling period (wall s)")
    ap.add_argument("--max-growth-mb", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    from station import keys
    tmp = Path(tempfile.mkdtemp(prefix="station-soak-"))
    kdir, allow = tmp / "keys", tmp / "allow"
    keys.generate(kdir, "station")
    keys.generate(kdir, "console")
    keys.authorize(kdir / "console.key", allow)
    pub, req = free_port(), free_port()
    data = tmp / "data"
    st_cfg = tmp / "station.toml"
    st_cfg.write_text(f"""[station]\nid = "soak-01"\ndata_dir = "{data}"\n[publisher]
pub_bind = "tcp://127.0.0.1:{pub}"\nreq_bind = "tcp://127.0.0.1:{req}"
secret_key_file = "{kdir / 'station.key_secret'}"\nauthorized_keys_dir = "{allow}"\n""")
    store = tmp / "console.sqlite"
    co_cfg = tmp / "console.toml"
    co_cfg.write_text(f"""[station]\ndata_dir = "{tmp / 'console'}"\n[console]
secret_key_file = "{kdir / 'console.key_secret'}"\nstore = "{store}"
[[console.station]]\nid = "soak-01"\npub_endpoint = "tcp://127.0.0.1:{pub}"
req_endpoint = "tcp://127.0.0.1:{req}"\npublic_key = "{kdir / 'station.key'}"\n""")
    wall_s = args.hours * 3600 / args.speed
    py = [sys.executable, "-m", "station", "--no-system-config"]
    station = subprocess.Popen(py + ["--config", str(st_cfg), "run", "--sources", "scenario", "--speed", str(args.speed)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp / "station.log", "wb"))
    console = subprocess.Popen(py + ["--config", str(co_cfg), "console", "--plain"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "console.log", "wb"))
    print(f"soak: {args.hours:g} exam hours at speed {args.speed:g} = {wall_s / 60:.1f} min wall; dir {tmp}", flush=True)
    print(f"{'wall s':>7} {'exam h':>7} {'RSS st MB':>10} {'RSS co MB':>10} {'CPU st %':>9} {'CPU co %':>9} "
          f"{'journal MB':>10} {'seq':>8} {'console':>8}", flush=True)
    samples = []
    t0 = time.monotonic()
    cpu0 = (0.0, 0.0)
    last = (t0, 0.0, 0.0)
    try:
        while True:
            time.sleep(args.sample_s)
            now = time.monotonic()
            if station.poll() is not None or console.poll() is not None:
                print("a process ended early: see", tmp, file=sys.stderr)
                return 2
            c_st, c_co = cpu_s(station.pid), cpu_s(console.pid)
            dt = now - last[0]
            size, seq, blocks = journal_stats(data)
            s = dict(t=now - t0, exam_h=(now - t0) * args.speed / 3600, rss=rss_mb(station.pid), rss_co=rss_mb(console.pid),
                     cpu=(c_st - last[1]) / dt * 100, cpu_co=(c_co - last[2]) / dt * 100, size=size, seq=seq,
                     blocks=blocks, console=console_count(store), cpu_total=c_st, cpu_co_total=c_co)
            last = (now, c_st, c_co)
            samples.append(s)
            print(f"{s['t']:7.0f} {s['exam_h']:7.2f} {s['rss']:10.1f} {s['rss_co']:10.1f} {s['cpu']:9.1f} "
                  f"{s['cpu_co']:9.1f} {s['size'] / 1e6:10.1f} {s['seq']:8d} {s['console']:8d}", flush=True)
            if now - t0 >= wall_s:
                break
    finally:
        for p in (station, console):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (station, console):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    warm = max(1, len(samples) // 10)
    base, end = samples[warm - 1], samples[-1]
    growth = end["rss"] - base["rss"]
    growth_co = end["rss_co"] - base["rss_co"]
    xs = [s["exam_h"] for s in samples[warm - 1:]]
    ys = [s["rss"] for s in samples[warm - 1:]]
    n = len(xs)
    slope = 0.0
    if n >= 2:
        mx, my = sum(xs) / n, sum(ys) / n
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0
    size, seq, blocks = journal_stats(data)
    wall = end["t"]
    print()
    print(f"exam time       {end['exam_h']:.2f} h in {wall / 60:.1f} min wall (speed {args.speed:g})")
    print(f"station RSS     {base['rss']:.1f} MB after warm-up -> {end['rss']:.1f} MB at the end: growth {growth:+.1f} MB "
          f"(max {max(s['rss'] for s in samples):.1f} MB; slope {slope:+.2f} MB per exam hour)")
    print(f"console RSS     {base['rss_co']:.1f} -> {end['rss_co']:.1f} MB: growth {growth_co:+.1f} MB")
    print(f"station CPU     {end['cpu_total']:.0f} s = {end['cpu_total'] / wall * 100:.1f} % of one core at speed "
          f"{args.speed:g} (~{end['cpu_total'] / wall * 100 / args.speed:.2f} % per real-time exam)")
    print(f"console CPU     {end['cpu_co_total']:.0f} s = {end['cpu_co_total'] / wall * 100:.1f} % of one core")
    print(f"journal         {size / 1e6:.1f} MB, {blocks} blocks, {seq} messages (seq 1..{seq})")
    print(f"console store   {console_count(store)} messages")
    ok = growth <= args.max_growth_mb
    print(f"RSS growth {'OK' if ok else 'TOO HIGH'}: {growth:+.1f} MB (limit {args.max_growth_mb:g} MB)")
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
