"""The console's SQLite store: every message received, session progress, gaps, clock offsets."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from station import protocol
from station.errors import UserError
from station.protocol import Message

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS messages (
    station TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    t_ns INTEGER NOT NULL, wall_ns INTEGER NOT NULL, recv_wall_ns INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (station, session, seq)) WITHOUT ROWID;
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


class ConsoleStore:
    """The console's SQLite store (WAL). One writer (the Console's I/O thread); any number of
    readers, each with its own ``ConsoleStore(path, readonly=True)``.

    messages: every message received, unique per (station, session, seq).
    sessions: per station session, ``next_seq`` (all seqs below it are stored or recorded as
    gaps; NULL = start not known yet) and ``known_last`` (highest seq known to exist).
    gaps: seq ranges the station could not supply. clock: offset estimates.
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
                ver = self.db.execute("PRAGMA user_version").fetchone()[0]
                if ver > STORE_VERSION:
                    raise UserError(f"{self.path}: console store of a newer version ({ver})", 3)
                self.db.executescript(SCHEMA_SQL)
                self.db.execute(f"PRAGMA user_version={STORE_VERSION}")
                self.db.commit()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: cannot open the console store: {e}", 3) from None
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- writer side
    def add(self, msgs: list[Message], recv_wall_ns: int) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?)",
            [(m.station, m.session, m.seq, m.kind, m.t_ns, m.wall_ns, recv_wall_ns, m.body)
             for m in msgs])

    def save_session(self, station: str, session: str, next_seq: int | None, known_last: int,
                     info: bytes | None = None) -> None:
        self.db.execute(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?) ON CONFLICT(station, session) DO UPDATE SET "
            "next_seq=excluded.next_seq, known_last=excluded.known_last, "
            "info=COALESCE(excluded.info, sessions.info)",
            (station, session, next_seq, known_last, time.time_ns(), info))

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
