"""The console's store: every message received, session progress, gaps, clock offsets.

Two files: the SQLite database (``console.sqlite``, WAL) and beside it the *recent log*
(``console.sqlite-recent``): the messages of the last fraction of a second, appended with one
``write()`` per I/O wake-up and moved into the database in one transaction every
``Console``'s ``MOVE_NS`` (and at close, and at the next open after a crash). A message counts as
stored once it is in either file; readers (``ConsoleStore(path, readonly=True)``,
``recent_rows``) look at both.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from station import protocol
from station.recent_log import Row, encode_records, recent_path, recent_rows
from station.errors import UserError
from station.osthread import named
from station.protocol import Message

log = logging.getLogger(__name__)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS messages (
    station TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    t_ns INTEGER NOT NULL, wall_ns INTEGER NOT NULL, recv_wall_ns INTEGER NOT NULL, body BLOB NOT NULL,
    UNIQUE (station, session, seq));
CREATE TABLE IF NOT EXISTS sessions (
    station TEXT NOT NULL, session TEXT NOT NULL, next_seq INTEGER, known_last INTEGER NOT NULL,
    first_seen_wall_ns INTEGER NOT NULL, info BLOB,
    PRIMARY KEY (station, session));
CREATE TABLE IF NOT EXISTS gaps (
    station TEXT NOT NULL, session TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL,
    reason TEXT NOT NULL, noted_wall_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clock (
    station TEXT NOT NULL, measured_wall_ns INTEGER NOT NULL, offset_ns INTEGER NOT NULL,
    rtt_ns INTEGER NOT NULL);
"""
STORE_VERSION = 1
CHECKPOINT_S = 1.0    # the write-ahead log is copied into the database this often
WAL_LIMIT_BYTES = 32 << 20   # a restarted log longer than this (after a burst) is cut back to it
_INSERT_SQL = "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?)"
class ConsoleStore:
    """The console's store (SQLite in WAL mode, and the recent log). One writer (the Console's
    I/O thread); any number of readers, each with its own ``ConsoleStore(path, readonly=True)``.

    Messages: ``add()`` appends them to the recent log (one ``write()``, about 5 µs, where a
    SQLite transaction per I/O wake-up cost about 100 µs of CPU on the benchmark machine: BEGIN
    and its locks, the B-tree inserts, 4-9 WAL ``pwrite``s): once written they survive the
    console process being killed, as a commit with ``synchronous=NORMAL`` does (neither survives a
    power cut unsynced). ``move_recent()`` inserts them into the database in one transaction and
    then empties the log; the writer's constructor first moves what a killed console left there
    (a record cut short at the end is dropped: it was never delivered). Readers read the log
    before the database and merge (see ``recent_rows``).

    messages: every message received, unique per (station, session, seq). Rows are kept in
    arrival order (rowid) with a unique index on (station, session, seq): a commit appends to one
    page and updates small index entries, where a table clustered on the key (stores made before
    issue 17's console work: ``WITHOUT ROWID``, still read and written the same) rewrote a
    ~350-byte-row page per followed station in every commit.
    sessions: per station session, ``next_seq`` and ``known_last`` (highest seq known to exist).
    ``next_seq``: all seqs below it are stored or recorded as gaps (NULL = start not known yet);
    the Console saves it about once a second (and at once when it jumps over a gap), so a
    restarted console resumes at ``resume_seq``: past the seqs stored after it in one run.
    gaps: seq ranges the station could not supply. clock: offset estimates.

    The writer commits into the write-ahead log only (``wal_autocheckpoint = 0``); a background
    thread (``start_checkpoints``) copies it into the database every ``CHECKPOINT_S`` without
    blocking the writer, so that neither the copy nor its fsync delays a commit. After each such
    copy the writer copies the few frames committed meanwhile (``checkpoint_tail``, between two
    commits), so that its next commit starts the log from its beginning: the log stays about
    ``CHECKPOINT_S`` of commits long and its pages stay in the page cache.

    Failure modes: a file that is not a console store, or one of a newer version, raises
    ``UserError`` (exit code 3) from the constructor, as does a recent log that cannot be opened;
    a failing checkpoint is logged and tried again (the log grows meanwhile, nothing is lost); a
    failing ``add()`` (disk full) cuts the recent log back to its last whole record and raises
    ``OSError``: those messages are not stored, so not delivered.
    """

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        self._recent_fd = -1
        self._recent_rows: list[Row] = []     # in the recent log, not yet in the database
        self._recent_size = 0                 # bytes of whole records in the recent log
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                          check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute("PRAGMA wal_autocheckpoint=0")   # start_checkpoints does it
                self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
                ver = self.db.execute("PRAGMA user_version").fetchone()[0]
                if ver > STORE_VERSION:
                    raise UserError(f"{self.path}: console store of a newer version ({ver})", 3)
                self.db.executescript(SCHEMA_SQL)
                self.db.execute(f"PRAGMA user_version={STORE_VERSION}")
                self.db.commit()
                self._open_recent()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: cannot open the console store: {e}", 3) from None
        except OSError as e:
            raise UserError(f"{recent_path(self.path)}: cannot open the console store's recent "
                            f"log: {e.strerror}", 3) from None
        self.lock = threading.Lock()
        self.tail_checkpoint_due = False   # set by the checkpoint thread, cleared by checkpoint_tail
        self._ckpt_stop = threading.Event()
        self._ckpt_thread: threading.Thread | None = None

    def start_checkpoints(self, every_s: float = CHECKPOINT_S) -> None:
        """Copy the write-ahead log into the database every ``every_s`` seconds (PASSIVE: never
        waits for, nor blocks, the writer or readers), from a thread of its own with its own
        connection, until ``close()``."""
        def run() -> None:
            db = sqlite3.connect(self.path, check_same_thread=False)
            try:
                while not self._ckpt_stop.wait(every_s):
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.tail_checkpoint_due = True
                    except sqlite3.Error as e:
                        log.warning("console store %s: checkpoint failed: %s", self.path, e)
            finally:
                db.close()
        self._ckpt_thread = threading.Thread(target=named(run), name="console-ckpt", daemon=True)
        self._ckpt_thread.start()

    def checkpoint_tail(self) -> None:
        """Writer side, between two transactions, after a background checkpoint: copy the frames
        committed since it began (a few ms of commits; this connection syncs them, 1-2 ms on the
        benchmark machine), so that the next commit starts the log from its beginning.

        Why: under a steady load every background checkpoint ends behind the writer, and SQLite
        restarts the log only when a write begins with the log fully copied. Without this the log
        grew by every commit for as long as the load lasted (10 MB/s at 1000 messages/s: 200 GB
        in a 6-hour exam), and extending the file (allocating and zeroing new pages) was a fifth
        of the I/O thread's CPU. A reader still on an old snapshot only postpones the restart (no
        waiting); an error is logged and the next checkpoint tries again."""
        if self.db.in_transaction:
            return                      # rows not yet committed: the next flush comes back here
        self.tail_checkpoint_due = False
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as e:
            log.warning("console store %s: checkpoint failed: %s", self.path, e)

    def close(self) -> None:
        self._ckpt_stop.set()
        if self._ckpt_thread is not None:
            self._ckpt_thread.join(timeout=10)
        if self._recent_fd >= 0:
            try:
                self.move_recent()
            finally:
                os.close(self._recent_fd)
                self._recent_fd = -1
        self.db.close()

    # -- the recent log (writer side)
    def _open_recent(self) -> None:
        """Move what a console killed before its last move left in the recent log into the
        database, then open the log for appending, empty."""
        left = recent_rows(self.path)
        if left:
            self.db.executemany(_INSERT_SQL, left)
            self.db.commit()
            log.info("console store %s: %d message(s) taken in from the recent log",
                     self.path, len(left))
        self._recent_fd = os.open(recent_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                  0o644)
        os.ftruncate(self._recent_fd, 0)

    @property
    def recent_count(self) -> int:
        """Messages in the recent log, not yet moved into the database."""
        return len(self._recent_rows)

    def move_recent(self) -> None:
        """Insert the recent log's messages into the database (one transaction, committed with
        whatever else is pending), then empty the log."""
        if not self._recent_rows:
            return
        self.db.executemany(_INSERT_SQL, self._recent_rows)
        self.db.commit()
        os.ftruncate(self._recent_fd, 0)
        self._recent_rows = []
        self._recent_size = 0

    # -- writer side
    def add(self, msgs: list[Message], recv_wall_ns: int) -> None:
        """Store messages: appended to the recent log with one ``write()``; stored when this
        returns. Raises OSError (the log cut back to its last whole record: none of them stored)."""
        rows = [(m.station, m.session, m.seq, m.kind, m.t_ns, m.wall_ns, recv_wall_ns, m.body)
                for m in msgs]
        blob = encode_records(rows)
        left = memoryview(blob)
        try:
            while left:
                left = left[os.write(self._recent_fd, left):]
        except OSError:
            os.ftruncate(self._recent_fd, self._recent_size)
            raise
        self._recent_size += len(blob)
        self._recent_rows += rows

    def save_sessions(self, rows: list[tuple[str, str, int | None, int, bytes | None]]) -> None:
        """Progress of sessions: (station, session, next_seq, known_last, info or None = keep)."""
        now = time.time_ns()
        self.db.executemany(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?) ON CONFLICT(station, session) DO UPDATE SET "
            "next_seq=excluded.next_seq, known_last=excluded.known_last, "
            "info=COALESCE(excluded.info, sessions.info)",
            [(st, se, nxt, last, now, info) for st, se, nxt, last, info in rows])

    def save_session(self, station: str, session: str, next_seq: int | None, known_last: int,
                     info: bytes | None = None) -> None:
        self.save_sessions([(station, session, next_seq, known_last, info)])

    def resume_seq(self, station: str, session: str, next_seq: int) -> int:
        """The first seq >= next_seq that is not stored (in the database or the recent log): where
        a console that saved ``next_seq`` resumes (the seqs stored after its last progress save
        are not fetched nor delivered again)."""
        recent = {r[2] for r in recent_rows(self.path) if r[0] == station and r[1] == session}
        while True:
            with self.lock:
                rows = [seq for (seq,) in self.db.execute(
                    "SELECT seq FROM messages WHERE station=? AND session=? AND seq>=? ORDER BY seq "
                    "LIMIT 1000", (station, session, next_seq))]
            stored = recent.union(rows)
            while next_seq in stored:
                next_seq += 1
            if len(rows) < 1000 or next_seq <= rows[-1]:
                return next_seq

    def add_gap(self, station: str, session: str, lo: int, hi: int, reason: str) -> None:
        self.db.execute("INSERT INTO gaps VALUES (?,?,?,?,?,?)",
                        (station, session, lo, hi, reason, time.time_ns()))

    def add_clock(self, station: str, offset_ns: int, rtt_ns: int) -> None:
        self.db.execute("INSERT INTO clock VALUES (?,?,?,?)", (station, time.time_ns(), offset_ns, rtt_ns))

    def commit(self) -> None:
        self.db.commit()

    # -- reader side (thread-safe through self.lock)
    def sessions(self, station: str | None = None) -> list[dict]:
        q = "SELECT station, session, next_seq, known_last, first_seen_wall_ns, info FROM sessions"
        args: tuple = ()
        if station is not None:
            q += " WHERE station=?"
            args = (station,)
        with self.lock:
            rows = self.db.execute(q + " ORDER BY first_seen_wall_ns", args).fetchall()
        out = []
        for r in rows:
            info = {}
            if r[5]:
                try:
                    info = protocol.unpack_map(r[5], "session info")
                except protocol.ProtocolError:
                    pass
            out.append({"station": r[0], "session": r[1], "next_seq": r[2], "known_last": r[3],
                        "first_seen_wall_ns": r[4], "info": info})
        return out

    def messages(self, station: str, session: str, from_seq: int = 0,
                 kinds: tuple[str, ...] | None = None, limit: int = 1_000_000) -> list[Message]:
        q = ("SELECT station, session, seq, kind, t_ns, wall_ns, body FROM messages "
             "WHERE station=? AND session=? AND seq>=?")
        args: list[Any] = [station, session, from_seq]
        if kinds:
            q += " AND kind IN (%s)" % ",".join("?" * len(kinds))
            args += list(kinds)
        q += " ORDER BY seq LIMIT ?"
        args.append(limit)
        recent = [(r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in recent_rows(self.path)
                  if r[0] == station and r[1] == session and r[2] >= from_seq
                  and (not kinds or r[3] in kinds)]
        with self.lock:
            rows = self.db.execute(q, args).fetchall()
        if recent:
            rows = sorted({r[2]: r for r in rows + recent}.values(), key=lambda r: r[2])[:limit]
        return [Message(*r, data=protocol.decode_body(r[6])) for r in rows]

    def seqs(self, station: str, session: str) -> list[int]:
        recent = {r[2] for r in recent_rows(self.path) if r[0] == station and r[1] == session}
        with self.lock:
            stored = {r[0] for r in self.db.execute(
                "SELECT seq FROM messages WHERE station=? AND session=?", (station, session))}
        return sorted(stored | recent)

    def gaps(self, station: str | None = None) -> list[dict]:
        q = "SELECT station, session, from_seq, to_seq, reason, noted_wall_ns FROM gaps"
        args: tuple = ()
        if station is not None:
            q += " WHERE station=?"
            args = (station,)
        with self.lock:
            rows = self.db.execute(q, args).fetchall()
        return [dict(zip(("station", "session", "from_seq", "to_seq", "reason", "noted_wall_ns"), r))
                for r in rows]
