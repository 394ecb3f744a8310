"""The console's SQLite store: every message received, session progress, gaps, clock offsets."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from station import protocol
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


class ConsoleStore:
    """The console's SQLite store (WAL). One writer (the Console's I/O thread); any number of
    readers, each with its own ``ConsoleStore(path, readonly=True)``.

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
    ``UserError`` (exit code 3) from the constructor; a failing checkpoint is logged and tried
    again (the log grows meanwhile, nothing is lost).
    """

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
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
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: cannot open the console store: {e}", 3) from None
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
        self.db.close()

    # -- writer side
    def add(self, msgs: list[Message], recv_wall_ns: int) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?)",
            [(m.station, m.session, m.seq, m.kind, m.t_ns, m.wall_ns, recv_wall_ns, m.body)
             for m in msgs])

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
        """The first seq >= next_seq that is not stored: where a console that saved ``next_seq``
        resumes (the seqs stored after its last progress save are not fetched nor delivered
        again)."""
        while True:
            rows = self.db.execute(
                "SELECT seq FROM messages WHERE station=? AND session=? AND seq>=? ORDER BY seq "
                "LIMIT 1000", (station, session, next_seq)).fetchall()
            for (seq,) in rows:
                if seq != next_seq:
                    return next_seq
                next_seq += 1
            if len(rows) < 1000:
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
        with self.lock:
            rows = self.db.execute(q, args).fetchall()
        return [Message(*r, data=protocol.decode_body(r[6])) for r in rows]

    def seqs(self, station: str, session: str) -> list[int]:
        with self.lock:
            return [r[0] for r in self.db.execute(
                "SELECT seq FROM messages WHERE station=? AND session=? ORDER BY seq",
                (station, session))]

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
