"""Journal benchmark: size and write cost at the stress profile, read-back speed.

Stress profile (issue 2): 2 audio channels of 20 ms VAD frames (100 frames/s), mouse bins at
100 Hz, 20 key events/s, a focus change every 2 s. Batches of 100 ms, as the recorder makes them.
Writes go through ``Journal.append_batch``, ``commit()`` after every batch (every 100 ms of data)
and ``sync()`` every 500 ms of data (``--batch-ms 500``: 500 ms batches, as the recorder
now ingests), as fast as the machine allows; the CPU time (this thread's
``time.thread_time``) spent in the journal calls is divided by the seconds of data written.

    .venv/bin/python benchmarks/journal_bench.py              # 10 minutes of data
    .venv/bin/python benchmarks/journal_bench.py --hours 6    # a full exam

Prints bytes per hour, the projected 6-hour size, write CPU as % of one core, read-back speed of
``iter_batches`` (events/s) and the time ``verify()`` takes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from station import __version__, clock  # noqa: E402
from station.events import Batch  # noqa: E402
from station.recorder.journal import Journal, SessionHeader, new_session_id  # noqa: E402

BLOCK_NS = 100_000_000
FRAME_NS = 20_000_000
CATS = ["crm", "knowledge", "script", "chat", "email", "other"]


class StressProfile:
    """Reproducible synthetic batches of the stress profile (vectorised; no dataclass events)."""

    def __init__(self, t0_ns: int, seed: int = 1):
        self.rng = np.random.default_rng(seed)
        self.t = t0_ns
        self.level = np.array([-450, -500], dtype=np.int64)  # tenths of dBFS per channel
        self.talk = np.array([False, True])
        self.focus_i = 0

    def next_batch(self) -> Batch:
        rng, t0 = self.rng, self.t
        self.t += BLOCK_NS
        # speech: 5 frames per channel per 100 ms, interleaved by time
        ts, ch, lv, vad, sp, fl = [], [], [], [], [], []
        for c in (0, 1):
            if rng.random() < 0.05:
                self.talk[c] = not self.talk[c]
            steps = rng.integers(-30, 31, 5)
            levels = np.clip(self.level[c] + np.cumsum(steps), -900, -50)
            self.level[c] = levels[-1]
            v = rng.random(5) < (0.9 if self.talk[c] else 0.1)
            ts.append(t0 + np.arange(5, dtype=np.int64) * FRAME_NS + c * 37_000)
            ch.append(np.full(5, c))
            lv.append(levels)
            vad.append(v)
            sp.append(v & (levels > -600))
            fl.append(np.where(levels <= -600, 1, 0))
        order = np.argsort(np.concatenate(ts), kind="stable")
        speech = {
            "t_ns": np.concatenate(ts)[order], "channel": np.concatenate(ch)[order].astype(np.int64),
            "dur_ns": np.full(10, FRAME_NS, dtype=np.int64), "level_dbfs_x10": np.concatenate(lv)[order],
            "vad": np.concatenate(vad)[order], "speech": np.concatenate(sp)[order],
            "flags": np.concatenate(fl)[order].astype(np.int64),
        }
        # mouse: 10 bins of 10 ms
        counts = rng.integers(0, 6, 10)
        mouse = {"t_ns": t0 + np.arange(10, dtype=np.int64) * 10_000_000,
                 "count": counts.astype(np.int64),
                 "distance_px": (counts * rng.integers(0, 25, 10)).astype(np.int64),
                 "injected": np.zeros(10, dtype=np.int64)}
        # keys: 2 events per 100 ms (a press and its release)
        kt = t0 + np.sort(rng.integers(0, BLOCK_NS, 2))
        kc = int(rng.choice([1, 1, 1, 1, 2, 4, 5]))
        key = {"t_ns": kt.astype(np.int64), "key_class": np.array([kc, kc], dtype=np.int64),
               "down": np.array([True, False]), "repeat": np.zeros(2, dtype=bool),
               "injected": np.zeros(2, dtype=bool), "char": ["", ""]}
        streams = {"speech": speech, "mouse": mouse, "key": key}
        if (t0 // BLOCK_NS) % 20 == 0:  # a focus change every 2 s
            self.focus_i += 1
            cat = CATS[self.focus_i % len(CATS)]
            streams["focus"] = {
                "t_ns": np.array([t0 + 1_000], dtype=np.int64),
                "window_id": np.array([0x2000000 + self.focus_i % 7], dtype=np.int64),
                "wm_class": [f"{cat}-app"], "title": [f"{cat} window {self.focus_i % 7}"],
                "pid": np.array([4000 + self.focus_i % 7], dtype=np.int64),
                "process": [f"{cat}-app"], "category": [cat]}
        return Batch(t0 + BLOCK_NS, streams)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of data (default 10)")
    ap.add_argument("--hours", type=float, help="hours of data (overrides --minutes)")
    ap.add_argument("--dir", help="where to write (default: a temporary directory, removed after)")
    ap.add_argument("--batch-ms", type=int, default=100, choices=(100, 200, 500, 1000),
                    help="recorder batch length: 100 ms sub-batches concatenated (default 100)")
    ap.add_argument("--messages", action="store_true",
                    help="also journal a 300-byte summary message every 500 ms")
    args = ap.parse_args(argv)
    seconds = args.hours * 3600 if args.hours else args.minutes * 60
    per = args.batch_ms // 100  # 100 ms generator batches per journal block
    n_blocks = int(seconds * 1e9 // (BLOCK_NS * per))
    every = max(1, 5 // per)  # blocks per 500 ms: sync (and summary message) cadence
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="journal-bench-"))
    try:
        mono, wall = clock.wall_anchor()
        sid = new_session_id("bench", wall)
        header = SessionHeader("bench", sid, mono, wall, clock.boot_id(), __version__, "0" * 64, {})
        gen = StressProfile(mono)
        j = Journal.create(tmp, header)
        cpu = 0.0
        events = 0
        wall0 = time.perf_counter()
        for i in range(n_blocks):
            batch = gen.next_batch() if per == 1 else Batch.concat([gen.next_batch() for _ in range(per)])
            events += batch.count()
            c0 = time.thread_time()
            j.append_batch(batch)
            if args.messages and i % every == every - 1:
                j.append_message("summary", batch.t_ns, bytes(300))
            j.commit()
            if i % every == every - 1:
                j.sync()
            cpu += time.thread_time() - c0
        c0 = time.thread_time()
        j.close()
        cpu += time.thread_time() - c0
        wall_s = time.perf_counter() - wall0
        size = j.path.stat().st_size
        hours = seconds / 3600
        per_hour = size / hours
        print(f"data written:        {seconds:.0f} s of stress profile, {n_blocks} blocks, "
              f"{events} events ({events / seconds:.0f} events/s)")
        print(f"journal size:        {human(size)} ({size} bytes), {size / n_blocks:.0f} bytes/block")
        print(f"bytes per hour:      {per_hour:.0f} ({human(per_hour)}/h)")
        print(f"projected 6 h size:  {human(per_hour * 6)} (limit 300 MB)")
        print(f"write CPU:           {cpu:.2f} s for {seconds:.0f} s of data = "
              f"{100 * cpu / seconds:.3f} % of one core (limit 1 %); "
              f"{1e6 * cpu / n_blocks:.0f} us per block incl. commit")
        print(f"write wall time:     {wall_s:.1f} s ({seconds / wall_s:.0f}x real time, incl. generation)")
        r = Journal.open(j.path)
        t0, c0 = time.perf_counter(), time.thread_time()
        n_read = sum(b.count() for b in r.iter_batches())
        dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        print(f"read-back:           {n_read} events in {dt:.2f} s wall, {dc:.2f} s CPU = "
              f"{n_read / dc:,.0f} events/s, {n_blocks / dc:,.0f} blocks/s of CPU "
              f"({seconds / dc:,.0f}x real time)")
        t0, c0 = time.perf_counter(), time.thread_time()
        problems = r.verify()
        dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        print(f"verify():            {dt:.2f} s wall, {dc:.2f} s CPU, "
              f"{'intact' if not problems else problems[:3]}")
        r.close()
        if n_read != events:
            print("ERROR: read back a different number of events", file=sys.stderr)
            return 1
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
