"""Journal and replay at the stress profile (issue 2 performance).

Stress profile: 2 audio channels of 20 ms VAD frames (100 frames/s), mouse bins at 100 Hz,
20 key events/s, a focus change every 2 s; batches of 500 ms as the recorder makes them.

Prints: journal bytes per hour and the projected 6-hour size; journal write CPU per second of
data (% of one core); the live engine's CPU (it journals the engine's messages, as the recorder
does); fast replay (final figures) and exact replay (every journaled message recomputed and
compared: the report's integrity check) of the whole session: seconds and x real time.

Usage: python benchmarks/replay_bench.py [--hours 6] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from station import __version__, config
from station.clock import wall_anchor
from station.engine import Engine
from station.events import Batch
from station.protocol import packb
from station.recorder.journal import Journal, SessionHeader
from station.recorder.replay import replay

S = 1_000_000_000
MS = 1_000_000
BATCH_NS = 500 * MS
CATS = ["crm", "knowledge", "script", "chat", "other", "crm", "email", "typing_task"]


def stress_batch(k: int, t0: int, rng: np.random.Generator) -> Batch:
    """The k-th 500 ms batch of a stress-profile session starting at t0."""
    lo = t0 + k * BATCH_NS
    frames = lo - BATCH_NS + np.arange(25, dtype=np.int64) * 20 * MS
    # speech: calls of ~3 min separated by 30 s; turns of ~4 s alternating
    sec = (frames - t0) // S
    in_call = (sec % 210) < 180
    turn = (sec // 4) % 2
    t_all = np.concatenate([frames, frames])
    ch = np.concatenate([np.zeros(25, np.int64), np.ones(25, np.int64)])
    voiced = np.concatenate([in_call & (turn == 0), in_call & (turn == 1)]) & (rng.random(50) > 0.1)
    speech = {"t_ns": t_all, "channel": ch, "dur_ns": np.full(50, 20 * MS, np.int64),
              "level_dbfs_x10": np.where(voiced, -250, -650).astype(np.int64), "vad": voiced,
              "speech": voiced, "flags": np.zeros(50, np.int64)}
    mt = lo - BATCH_NS + np.arange(50, dtype=np.int64) * 10 * MS
    mouse = {"t_ns": mt, "count": rng.integers(1, 10, 50), "distance_px": rng.integers(1, 40, 50),
             "injected": np.zeros(50, np.int64)}
    kt = lo - BATCH_NS + np.sort(rng.integers(0, BATCH_NS, 10))
    key = {"t_ns": kt, "key_class": rng.integers(1, 8, 10), "down": np.arange(10) % 2 == 0,
           "repeat": np.zeros(10, bool), "injected": np.zeros(10, bool), "char": [""] * 10}
    streams = {"speech": speech, "mouse": mouse, "key": key}
    if k % 4 == 0:
        streams["focus"] = {"t_ns": np.array([lo - BATCH_NS], np.int64), "window_id": np.array([k], np.int64),
                            "wm_class": ["app"], "title": [""], "pid": np.array([1], np.int64),
                            "process": ["app"], "category": [CATS[(k // 4) % len(CATS)]]}
    return Batch(lo, streams, lo - S)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--dir", help="where to write the journal (default: a temp dir)")
    args = ap.parse_args()
    cfg = config.load(system=False).replace(station={"id": "bench-01"})
    root = Path(args.dir or tempfile.mkdtemp(prefix="station-bench-"))
    mono, wall = wall_anchor()
    t0 = 10 * S
    header = SessionHeader("bench-01", f"bench-01-{wall}", t0, wall, "bench", __version__, cfg.hash, cfg.as_dict())
    j = Journal.create(root, header)
    j.set_meta("reference_text", "")
    rng = np.random.default_rng(1)
    n = int(args.hours * 3600 * S // BATCH_NS)
    eng = Engine(cfg)
    batches_cpu = engine_cpu = 0.0
    events = messages = 0
    for k in range(1, n + 1):
        b = stress_batch(k, t0, rng)
        events += b.count()
        e0 = time.process_time()
        outputs = eng.ingest(b)     # the live engine, as the recorder runs it
        packed = [(kind, tt, packb(body)) for kind, tt, body in outputs]
        engine_cpu += time.process_time() - e0
        c0 = time.process_time()
        j.append_batch(b)
        for kind, tt, body in packed:
            j.append_message(kind, tt, body)
        j.append_message("health", b.t_ns, packb({"t": b.t_ns})) if k % 2 == 0 else None
        j.commit()
        if k % 2 == 0:
            j.sync()
        batches_cpu += time.process_time() - c0
        messages += len(packed)
    end = t0 + n * BATCH_NS
    for kind, tt, body in eng.finish(end):
        j.append_message(kind, tt, packb(body))
    j.commit()
    j.end(end)
    j.close()
    hours = n * BATCH_NS / S / 3600
    secs = hours * 3600
    size = sum(p.stat().st_size for p in root.rglob("*.journal*"))
    print(f"stress profile, {hours:.2f} h: {n} batches, {events} events ({events / secs:.0f} events/s), "
          f"{messages} engine messages")
    print(f"journal size: {size / 1e6:.1f} MB = {size / hours / 1e6:.1f} MB/hour -> 6 h: {size / hours * 6 / 1e6:.0f} MB (limit 300 MB)")
    print(f"journal write CPU: {batches_cpu / secs * 100:.3f} % of one core (limit 1 %), "
          f"commit every 500 ms, fsync every 1 s")
    print(f"live engine at the stress profile: {engine_cpu / secs * 100:.2f} % of one core")
    path = next(root.rglob("*.journal"))
    with Journal.open(path) as jr:
        t = time.perf_counter()
        res = replay(jr, exact=False)
        took = time.perf_counter() - t
    print(f"fast replay (final figures): {took:.1f} s for {hours:.2f} h = {secs / took:.0f}x real time "
          f"(goal: 6 h in <= 10 s, 2000x); contacts {len(res.engine.contacts)}; identical: {not res.mismatches}")
    with Journal.open(path) as jr:
        t, c = time.perf_counter(), time.process_time()
        res2 = replay(jr, exact=True)
        took2, cpu2 = time.perf_counter() - t, time.process_time() - c
    print(f"exact replay (the report's integrity check: every message): {took2:.1f} s for {hours:.2f} h = "
          f"{secs / took2:.0f}x real time ({cpu2:.1f} s CPU; goal: 6 h in <= 30 s); identical: "
          f"{not res2.mismatches} ({res2.compared} messages)")


if __name__ == "__main__":
    main()
