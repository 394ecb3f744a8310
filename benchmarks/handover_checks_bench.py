"""Cost of the hand-over's checks (issue 14) at the stress profile, side by side with no checks.

The stress profile of ``journal_bench.StressProfile`` (2 x 50 speech frames/s, 100 mouse bins/s,
20 key events/s, a focus change every 2 s) in the capture's 250 ms batches (200 ms here: a bound
from above), encoded as the capture sends them. The recorder's side is timed per batch with this
thread's CPU clock:

- without checks: ``decode_batch(payload)`` (what the recorder did before);
- with checks: ``decode_batch(payload, max_decoded_bytes=..., max_rows=...)`` plus
  ``LinkChecks.check`` (streams, stamps, rates).

Prints both as % of one core over the data's duration, and the difference (goal <= 0.1 %).

    .venv/bin/python benchmarks/handover_checks_bench.py             # 30 minutes of data
    .venv/bin/python benchmarks/handover_checks_bench.py --minutes 360
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.journal_bench import StressProfile  # noqa: E402
from station.events import Batch, decode_batch, encode_batch  # noqa: E402
from station.recorder.plausibility import LinkChecks  # noqa: E402

BATCH_BLOCKS = 2          # 2 x 100 ms per hand-over batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args(argv)
    prof = StressProfile(10_000_000_000)
    n = int(args.minutes * 60 * 10 / BATCH_BLOCKS)
    payloads = []
    for _ in range(n):
        blocks = [prof.next_batch() for _ in range(BATCH_BLOCKS)]
        b = Batch.concat(blocks)
        payloads.append((b.t_ns, encode_batch(Batch(b.t_ns, b.streams, b.t_ns - 1_000_000_000))))
    data_s = n * BATCH_BLOCKS * 0.1
    rows = 0
    t = time.thread_time()
    for _, p in payloads:
        rows += decode_batch(p).count()
    plain = time.thread_time() - t
    checks = LinkChecks(frame_ms=20)
    dropped = 0
    t = time.thread_time()
    for now, p in payloads:
        limit = min(8 * 1024 * 1024, max(64 * 1024, 64 * len(p)))
        batch = decode_batch(p, max_decoded_bytes=limit, max_rows=100_000)
        out, problems = checks.check(batch, now)
        dropped += sum(e.count for e in problems)
    checked = time.thread_time() - t
    print(f"stress profile, {args.minutes:g} min of data, {n} batches, {rows} rows ({rows / data_s:.0f}/s)")
    print(f"{'':24s}{'CPU s':>10s}{'% of one core':>16s}")
    print(f"{'decode, no checks':24s}{plain:10.2f}{100 * plain / data_s:16.3f}")
    print(f"{'decode + checks':24s}{checked:10.2f}{100 * checked / data_s:16.3f}")
    print(f"{'checks alone':24s}{checked - plain:10.2f}{100 * (checked - plain) / data_s:16.3f}   (goal <= 0.1 %)")
    print(f"rows dropped by the checks: {dropped} (the profile is honest: expected 0)")
    return 0 if dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
