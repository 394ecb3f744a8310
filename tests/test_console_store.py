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


def _msgs(seqs, session="st-1-s"):
    return [Message("st-1", session, q, "summary", q, q, b"\x81\xa1q" + bytes([q % 128]), {})
            for q in seqs]


_WRITER = """
import os, resource, signal, sys
from station.console.store import ConsoleStore
from station.protocol import Message
store = ConsoleStore(sys.argv[1])
msgs = lambda seqs: [Message("st-1", "st-1-s", q, "summary", q, q, b"\\x81\\xa1q" + bytes([q % 128]), {})
                     for q in seqs]
store.add(msgs(range(0, 5)), 1)
store.move_recent()                       # 0-4 in the database
store.add(msgs(range(5, 10)), 2)          # 5-9 in the recent log only
if sys.argv[2] == "full":                 # the next write does not fit: as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = os.path.getsize(sys.argv[1] + "-recent")
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 60, size + 60))   # one record and a part
    try:
        store.add(msgs(range(10, 20)), 3)
    except OSError as e:
        print("refused", e.errno)
sys.stdout.flush()
os._exit(0)                               # killed: no close, no move
"""


def _run_writer(path, mode):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _WRITER, str(path), mode], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_messages_of_a_killed_console_are_read_from_the_recent_log_and_taken_in(tmp_path):
    path = tmp_path / "console.sqlite"
    _run_writer(path, "kill")
    reader = ConsoleStore(path, readonly=True)
    try:   # stored, though only in the recent log
        assert reader.seqs("st-1", "st-1-s") == list(range(10))
        assert [m.seq for m in reader.messages("st-1", "st-1-s", from_seq=3, limit=4)] == [3, 4, 5, 6]
        assert reader.resume_seq("st-1", "st-1-s", 2) == 10
    finally:
        reader.close()
    import sqlite3
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 5
    db.close()
    ConsoleStore(path).close()          # the next console takes them into the database
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT seq FROM messages ORDER BY seq")] == list(range(10))
    db.close()
    assert (tmp_path / "console.sqlite-recent").stat().st_size == 0


def test_a_write_that_does_not_fit_stores_nothing_of_it_and_keeps_the_rest(tmp_path):
    path = tmp_path / "console.sqlite"
    assert _run_writer(path, "full").startswith("refused")
    reader = ConsoleStore(path, readonly=True)
    try:    # the refused write's part that fitted was cut off: nothing of it, all of the rest
        assert reader.seqs("st-1", "st-1-s") == list(range(10))
    finally:
        reader.close()


def test_a_record_cut_short_ends_the_recent_log(tmp_path):
    path = tmp_path / "console.sqlite"
    store = ConsoleStore(path)
    store.add(_msgs(range(3)), 1)
    store.add(_msgs([3]), 1)
    recent = tmp_path / "console.sqlite-recent"
    whole = recent.read_bytes()
    reader = ConsoleStore(path, readonly=True)
    try:
        recent.write_bytes(whole[:-3])              # the last record torn
        assert reader.seqs("st-1", "st-1-s") == [0, 1, 2]
        damaged = bytearray(whole)
        damaged[30] ^= 0xFF                         # a bit flipped in the first record
        recent.write_bytes(bytes(damaged))
        assert reader.seqs("st-1", "st-1-s") == []
    finally:
        reader.close()
        recent.write_bytes(whole)
        store.close()
