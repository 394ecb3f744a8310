"""The console store under a steady load: its write-ahead log stays bounded.

Real parts: SQLite in WAL mode, the store's own checkpoint thread, a writer committing one
message per transaction without pause (as the console's I/O thread does at 1000 messages/s).
"""

from __future__ import annotations

import os
import time

from station.console.store import ConsoleStore
from station.protocol import Message


def test_the_log_restarts_under_a_steady_load(tmp_path):
    store = ConsoleStore(tmp_path / "console.sqlite")
    store.start_checkpoints(every_s=0.05)
    wal = tmp_path / "console.sqlite-wal"
    body = b"x" * 300
    commits, biggest, end = 0, 0, time.monotonic() + 1.5
    try:
        while time.monotonic() < end:
            station = f"st-{commits % 100:03d}"
            store.add([Message(station, f"{station}-s", commits // 100, "summary", commits, commits,
                               body, {})], time.time_ns())
            store.commit()
            commits += 1
            if store.tail_checkpoint_due:       # what Console._iteration does after a delivery
                store.checkpoint_tail()
            if commits % 200 == 0:
                biggest = max(biggest, os.path.getsize(wal))
    finally:
        store.close()
    # each commit adds 2-3 pages of 4 KiB to the log: without a restart it would hold them all
    assert commits > 2000, "the writer was too slow to make the point"
    assert biggest < commits * 8192 / 4, (
        f"the log grew to {biggest} bytes over {commits} commits: it did not restart")
    reader = ConsoleStore(tmp_path / "console.sqlite", readonly=True)
    try:
        assert len(reader.seqs("st-007", "st-007-s")) == len(range(7, commits, 100))
    finally:
        reader.close()
