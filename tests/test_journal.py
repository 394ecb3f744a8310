"""The session journal on real SQLite files: round trips, resume, concurrency, SIGKILL, bad input,
tampering. ``make_session`` is reused by tests/test_sessions_cli.py."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station import __version__, clock
from station import events as E
from station.errors import JournalError
from station.recorder.journal import (
    Journal,
    SessionHeader,
    list_sessions,
    new_session_id,
    resolve_session,
    sessions_dir,
    writer_active,
)
from tests.support import REPO

DAY_NS = 86_400 * 1_000_000_000


def header_for(station_id: str = "st-test", age_days: float = 0.0, **kw) -> SessionHeader:
    mono, wall = clock.wall_anchor()
    wall -= int(age_days * DAY_NS)
    return SessionHeader(station_id, kw.pop("session_id", new_session_id(station_id, wall)),
                         mono, wall, clock.boot_id(), __version__, "c0ffee", {"station": {"id": station_id}})


def key_batch(i: int, base: int = 10**12) -> E.Batch:
    """Batch number i: one key press at base + i ms and a mouse bin; its t_ns identifies it."""
    t = base + i * 100_000_000
    return E.Batch.from_events(t + 100_000_000, [E.KeyEvent(t + 1, E.KeyClass.PRINTABLE, True),
                                                 E.MouseBin(t + 2, i % 7, 3 * i)])


def make_session(data_dir: Path, n_blocks: int = 5, n_messages: int = 5, *, ended: bool = True,
                 age_days: float = 0.0, station_id: str = "st-test") -> Path:
    """A closed journal with n_blocks key batches and n_messages "summary" messages."""
    h = header_for(station_id, age_days)
    with Journal.create(data_dir, h) as j:
        for i in range(n_blocks):
            j.append_batch(key_batch(i))
        for i in range(n_messages):
            j.append_message("summary", 10**12 + i, f'{{"n": {i}}}'.encode())
        if ended:
            j.end(10**12 + 10**9)
        return j.path


def fingerprint(path: Path) -> tuple:
    """Content hash, size and mtime of a file and its -wal (None when absent)."""
    out = []
    for p in (path, Path(str(path) + "-wal")):
        if p.exists():
            st_ = p.stat()
            out.append((hashlib.sha256(p.read_bytes()).hexdigest(), st_.st_size, st_.st_mtime_ns))
        else:
            out.append(None)
    return tuple(out)


# --------------------------------------------------------------------------- round trips

ints = st.integers(0, 2**40)
small = st.integers(-(2**31), 2**31)
text = st.text(max_size=12)
event_strategy = st.one_of(
    st.builds(E.SpeechFrame, ints, st.integers(0, 1), st.sampled_from([10, 20, 30]).map(lambda m: m * 10**6),
              st.integers(-1270, 0), st.booleans(), st.booleans(), st.integers(0, 15)),
    st.builds(E.KeyEvent, ints, st.integers(1, 7), st.booleans(), st.booleans(), st.booleans(), text),
    st.builds(E.MouseBin, ints, st.integers(0, 100), st.integers(0, 5000), st.integers(0, 3)),
    st.builds(E.MouseClick, ints, st.integers(1, 9), st.booleans(), st.booleans()),
    st.builds(E.MouseScroll, ints, small, small, st.booleans()),
    st.builds(E.FocusChange, ints, st.integers(0, 2**32), text, text, st.integers(0, 2**22), text,
              st.sampled_from(["crm", "knowledge", "other", "typing_task"])),
    st.builds(E.AssessorMark, ints, text, text, st.sampled_from(["S1", "C3"]), st.just("note"), text, text),
    st.builds(E.SourceHealth, ints, text, st.sampled_from(["ok", "lost"]), text),
)


@pytest.fixture(scope="module")
def shared_journal(tmp_path_factory):
    j = Journal.create(tmp_path_factory.mktemp("rt"), header_for())
    yield j
    j.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(evs=st.lists(event_strategy, max_size=40), t=ints,
       msgs=st.lists(st.tuples(st.sampled_from(["summary", "beat", "mark"]), ints, st.binary(max_size=64)),
                     max_size=4))
def test_round_trip_random_batches_and_messages(shared_journal, evs, t, msgs):
    j = shared_journal
    batch = E.Batch.from_events(t, evs)
    idx = j.append_batch(batch)
    seqs = [j.append_message(k, tn, body) for k, tn, body in msgs]
    j.commit()
    back = list(j.iter_batches(idx))
    assert len(back) == 1 and back[0] == batch
    assert back[0].count() == len(evs)
    got = list(j.iter_messages(seqs[0], seqs[-1])) if seqs else []
    assert [(m.seq, m.kind, m.t_ns, m.body) for m in got] == \
        [(s, k, tn, body) for s, (k, tn, body) in zip(seqs, msgs)]


def test_messages_filters_meta_and_counts(tmp_path):
    j = Journal.create(tmp_path, header_for())
    assert j.last_seq() == 0 and j.block_count() == 0 and j.last_message("summary") is None
    kinds = ["summary", "beat", "summary", "mark", "beat"]
    assert [j.append_message(k, 100 + i, bytes([i])) for i, k in enumerate(kinds)] == [1, 2, 3, 4, 5]
    assert j.last_seq() == 5  # uncommitted appends count
    reader = Journal.open(j.path)
    assert reader.last_seq() == 0 and list(reader.iter_messages()) == []  # not committed yet
    j.set_meta("candidate", "C-17")
    j.commit()
    assert [m.seq for m in reader.iter_messages(kinds=["summary"])] == [1, 3]
    assert [m.seq for m in reader.iter_messages(2, 4)] == [2, 3, 4]
    assert [m.seq for m in reader.iter_messages(2, 4, kinds=["beat", "mark"])] == [2, 4]
    assert list(reader.iter_messages(kinds=[])) == []
    assert reader.last_message("beat").seq == 5 and reader.last_message("beat").body == bytes([4])
    assert reader.get_meta("candidate") == "C-17" and reader.get_meta("nope") is None
    assert not reader.ended
    j.end(999)
    assert reader.ended and reader.get_meta("ended_ns") == "999"
    with pytest.raises(ValueError):
        j.set_meta("journal.header", "x")
    with pytest.raises(JournalError, match="read-only"):
        reader.append_message("x", 1, b"")
    reader.close()
    j.close()
    h = Journal.open(j.path).header
    assert h == j.header and h.wall_ns(h.created_mono_ns + 5) == h.created_wall_ns + 5


def test_create_permissions_and_refuses_overwrite(tmp_path):
    data = tmp_path / "data"
    h = header_for()
    j = Journal.create(data, h)
    assert j.path == sessions_dir(data) / f"{h.session_id}.journal"
    assert stat.S_IMODE(sessions_dir(data).stat().st_mode) == 0o700
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o600
    j.append_message("m", 1, b"x")
    j.commit()
    assert stat.S_IMODE(Path(str(j.path) + "-wal").stat().st_mode) == 0o600
    j.close()
    before = fingerprint(j.path)
    with pytest.raises(JournalError, match="exists already"):
        Journal.create(data, h)
    assert fingerprint(j.path) == before


def test_session_id_sortable_and_unique():
    a = new_session_id("station-01", 1_795_000_000 * 10**9)
    b = new_session_id("station-01", 1_795_000_001 * 10**9)
    assert re.fullmatch(r"station-01-20261118T\d{6}Z-[0-9a-f]{4}", a), a
    assert a < b
    assert len({new_session_id("s", 0) for _ in range(50)}) >= 45


def test_reopen_continues_blocks_and_seq(tmp_path):
    path = make_session(tmp_path, n_blocks=3, n_messages=4, ended=False)
    j = Journal.open(path, writable=True)
    assert (j.block_count(), j.last_seq()) == (3, 4)
    assert j.append_batch(key_batch(3)) == 3
    assert j.append_message("summary", 5, b"five") == 5
    j.close()
    r = Journal.open(path)
    assert r.verify() == []
    assert [b.t_ns for b in r.iter_batches()] == [key_batch(i).t_ns for i in range(4)]
    assert [b.t_ns for b in r.iter_batches(2)] == [key_batch(i).t_ns for i in (2, 3)]
    assert [m.seq for m in r.iter_messages()] == [1, 2, 3, 4, 5]


def test_one_writer_at_a_time(tmp_path):
    j = Journal.create(tmp_path, header_for())
    assert writer_active(j.path)
    with pytest.raises(JournalError, match="being written"):
        Journal.open(j.path, writable=True)
    j.close()
    assert not writer_active(j.path)
    Journal.open(j.path, writable=True).close()


def test_concurrent_reader_sees_commits_promptly(tmp_path):
    writer = Journal.create(tmp_path, header_for())
    seen: dict[int, float] = {}
    stop = threading.Event()
    committed_at: dict[int, float] = {}

    def read():
        r = Journal.open(writer.path)  # its own read-only object, in its own thread
        nxt = 1
        while not stop.is_set():
            for m in r.iter_messages(nxt):
                seen[m.seq] = time.monotonic()
                assert m.body == f"m{m.seq}".encode()
                nxt = m.seq + 1
            time.sleep(0.005)
        r.close()

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(1, 31):
            writer.append_message("summary", i, f"m{i}".encode())
            writer.append_batch(key_batch(i))
            writer.commit()
            committed_at[i] = time.monotonic()
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while len(seen) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(10)
    assert sorted(seen) == list(range(1, 31))
    lags = [seen[i] - committed_at[i] for i in seen]
    assert max(lags) < 0.5, f"reader lagged {max(lags):.3f} s behind a commit"
    writer.close()
    assert Journal.open(writer.path).verify() == []


# --------------------------------------------------------------------------- crash

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from station import clock, events as E
    from station.recorder.journal import Journal, SessionHeader
    mono, wall = clock.wall_anchor()
    h = SessionHeader("crash", "crash-session", mono, wall, clock.boot_id(), "t", "h", {})
    j = Journal.create(Path(sys.argv[1]), h)
    print("path", j.path, flush=True)
    i, last_commit, last_sync = 0, time.monotonic(), time.monotonic()
    while True:
        t = 10**12 + i * 10_000_000
        j.append_batch(E.Batch.from_events(t, [E.KeyEvent(t, 1, True), E.MouseBin(t, i, i)] +
                                           [E.SpeechFrame(t + k, k % 2, 20_000_000, -400, True, True) for k in range(40)]))
        j.append_message("beat", t, b"%d" % i)
        i += 1
        now = time.monotonic()
        if now - last_commit >= 0.1:
            j.commit()
            print("committed", j.block_count(), j.last_seq(), flush=True)
            last_commit = now
            if now - last_sync >= 0.5:
                j.sync()
                last_sync = now
        time.sleep(0.002)
""")


def test_sigkill_mid_run_leaves_readable_journal_that_resumes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = (0, 0)
    path = None
    try:
        deadline = time.monotonic() + 30
        n_commits = 0
        while n_commits < 12 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            parts = line.split()
            if parts[0] == "path":
                path = Path(parts[1])
            elif parts[0] == "committed":
                committed = (int(parts[1]), int(parts[2]))
                n_commits += 1
        time.sleep(0.05)  # land somewhere inside the next 100 ms
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert path is not None and committed[0] > 50, "child did not get going"
    assert Path(str(path) + "-wal").exists()  # it really died with data in the write-ahead log

    before = fingerprint(path)
    r = Journal.open(path)  # read-only open of a crashed WAL journal
    assert r.verify() == []
    n_blocks, n_seq = r.block_count(), r.last_seq()
    # everything reported committed is there, and at most ~one commit interval more
    assert committed[0] <= n_blocks <= committed[0] + 40
    assert committed[1] <= n_seq <= committed[1] + 40
    batches = list(r.iter_batches())
    assert [b.t_ns for b in batches] == [10**12 + i * 10_000_000 for i in range(n_blocks)]
    assert all(b.count() == 42 for b in batches)
    assert [m.body for m in r.iter_messages()] == [b"%d" % i for i in range(n_seq)]
    r.close()
    assert fingerprint(path) == before, "a read-only open modified the journal or its WAL"
    assert not writer_active(path)

    w = Journal.open(path, writable=True)  # the restarted recorder resumes
    assert w.append_batch(key_batch(0)) == n_blocks
    assert w.append_message("beat", 1, b"after") == n_seq + 1
    w.close()
    r = Journal.open(path)
    assert r.verify() == [] and r.block_count() == n_blocks + 1 and r.last_seq() == n_seq + 1
    assert r.last_message("beat").body == b"after"


# --------------------------------------------------------------------------- bad input

def truncated(tmp_path: Path) -> Path:
    path = make_session(tmp_path, n_blocks=400, n_messages=200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def random_bytes(tmp_path: Path) -> Path:
    p = tmp_path / "random.journal"
    p.write_bytes(os.urandom(8192))
    return p


def empty_file(tmp_path: Path) -> Path:
    p = tmp_path / "empty.journal"
    p.write_bytes(b"")
    return p


def other_sqlite(tmp_path: Path) -> Path:
    p = tmp_path / "other.journal"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    return p


def newer_format(tmp_path: Path) -> Path:
    path = make_session(tmp_path)
    c = sqlite3.connect(path)
    c.execute("UPDATE meta SET value = '2' WHERE key = 'journal.format_version'")
    c.execute("PRAGMA user_version = 2")
    c.commit()
    c.close()
    return path


BAD = {
    "missing": (lambda p: p / "nope.journal", "no such journal"),
    "random": (random_bytes, "not a station journal"),
    "empty": (empty_file, "not a station journal"),
    "other_sqlite": (other_sqlite, "not a station journal"),
    "truncated": (truncated, "corrupt|truncated"),
    "newer": (newer_format, "newer version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_clear_error_and_stay_unchanged(tmp_path, case):
    make, pattern = BAD[case]
    path = make(tmp_path)
    before = fingerprint(path) if path.exists() else None
    for writable in (False, True):
        with pytest.raises(JournalError, match=pattern) as exc:
            Journal.open(path, writable=writable)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
        if before is not None:
            assert fingerprint(path) == before
    assert not path.exists() or not Path(str(path) + "-wal").exists()


def test_unreadable_file_is_listed_with_problem(tmp_path):
    good = make_session(tmp_path)
    bad = sessions_dir(tmp_path) / "broken.journal"
    bad.write_bytes(os.urandom(5000))
    infos = list_sessions(tmp_path)
    by_id = {s.session_id: s for s in infos}
    assert set(by_id) == {good.name[:-8], "broken"}
    assert by_id["broken"].problem.startswith("not a station journal")
    assert by_id[good.name[:-8]].problem == "" and by_id[good.name[:-8]].ended
    assert by_id[good.name[:-8]].blocks == 5 and by_id[good.name[:-8]].last_seq == 5


def test_resolve_session(tmp_path):
    a = make_session(tmp_path, station_id="alpha")
    b = make_session(tmp_path, station_id="alpha")
    c = make_session(tmp_path, station_id="beta")
    ida = a.name[:-8]
    assert resolve_session(tmp_path, ida) == a
    assert resolve_session(tmp_path, "beta") == c
    assert resolve_session(tmp_path, str(b)) == b
    with pytest.raises(JournalError, match="ambiguous"):
        resolve_session(tmp_path, "alpha")
    with pytest.raises(JournalError, match="no session matches"):
        resolve_session(tmp_path, "gamma")
    with pytest.raises(JournalError, match="no such journal"):
        resolve_session(tmp_path, str(tmp_path / "x" / "y.journal"))


# --------------------------------------------------------------------------- tampering

def tamper(path: Path, *sql: str) -> None:
    c = sqlite3.connect(path)
    for s in sql:
        c.execute(s)
    c.commit()
    c.close()


TAMPER = {
    "payload": (["UPDATE blocks SET payload = ? WHERE idx = 2"], "block 2: hash chain broken"),
    "block time": (["UPDATE blocks SET t_ns = t_ns + 1 WHERE idx = 1"], "block 1: hash chain broken"),
    "body": (["UPDATE messages SET body = x'7b7d' WHERE seq = 3"], "message 3: hash chain broken"),
    "message time": (["UPDATE messages SET t_ns = 5 WHERE seq = 4"], "message 4: hash chain broken"),
    "message kind": (["UPDATE messages SET kind = 'beat' WHERE seq = 1"], "message 1: hash chain broken"),
    "deleted message": (["DELETE FROM messages WHERE seq = 2"], "message seq gap"),
    "deleted last message": (["DELETE FROM messages WHERE seq = 5"], "messages: chain head"),
    "deleted last block": (["DELETE FROM blocks WHERE idx = 4"], "blocks: chain head"),
    "header": (["UPDATE meta SET value = replace(value, 'st-test', 'st-fake') WHERE key = 'journal.header'"],
               "hash chain broken"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_verify_detects_tampering(tmp_path, case):
    path = make_session(tmp_path)
    assert Journal.open(path).verify() == []
    sql, expect = TAMPER[case]
    if case == "payload":
        other = E.encode_batch(key_batch(99))
        c = sqlite3.connect(path)
        c.execute(sql[0], (other,))
        c.commit()
        c.close()
    else:
        tamper(path, *sql)
    problems = Journal.open(path).verify()
    assert problems, case
    assert any(expect in p for p in problems), problems


def test_verify_reports_undecodable_block(tmp_path):
    path = make_session(tmp_path)
    tamper(path, "UPDATE blocks SET payload = x'00112233' WHERE idx = 0")
    j = Journal.open(path)
    problems = j.verify()
    assert any("block 0: undecodable" in p for p in problems), problems
    with pytest.raises(JournalError, match="block 0 cannot be decoded"):
        list(j.iter_batches())


# --------------------------------------------------------------------------- size

def test_stress_profile_blocks_fit_the_6_hour_budget(tmp_path):
    """300 MB for 6 h of 100 ms blocks = 1388 bytes per block on disk (the benchmark measures
    the full figure; this pins the order of magnitude on 60 s of data)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from journal_bench import StressProfile
    gen = StressProfile(10**12)
    j = Journal.create(tmp_path, header_for())
    for i in range(600):
        j.append_batch(gen.next_batch())
        if i % 5 == 4:
            j.append_message("summary", i, bytes(200))
        j.commit()
    j.close()
    per_block = j.path.stat().st_size / 600
    assert per_block < 300e6 / 216_000, f"{per_block:.0f} bytes per block"
