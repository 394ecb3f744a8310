"""The session journal: one SQLite file per session, tamper-evident, crash-safe.

Layout (``JOURNAL_FORMAT`` 1; full description in ``docs/journal.md``)::

    <data_dir>/sessions/<session_id>.journal        the database (0600; directory 0700)
    <data_dir>/sessions/<session_id>.journal-wal    SQLite write-ahead log (while open or after a crash)
    <data_dir>/sessions/<session_id>.journal-shm    SQLite WAL index
    <data_dir>/sessions/<session_id>.journal-lock   flock(2) held by the one writer

Tables:

- ``meta(key, value)``: the session header as canonical JSON (``journal.header``), the format
  version, the two hash-chain heads, and free keys set with ``set_meta`` (e.g. ``ended_ns``).
  SQLite's ``application_id`` marks the file as a station journal, ``user_version`` holds
  ``JOURNAL_FORMAT``.
- ``blocks(idx, t_ns, first_ns, last_ns, n_events, payload, chain)``: one row per ``events.Batch``,
  ``payload = events.encode_batch(batch)`` (columnar, time delta-encoded, zlib'd). ``idx`` counts
  0, 1, 2, ... without gaps. Times are station-clock ns; ``first_ns``/``last_ns`` span the events
  (both ``t_ns`` for an empty batch).
- ``messages(seq, kind, t_ns, body, chain)``: every message the station publishes, ``seq`` 1, 2, 3,
  ... without gaps (the per-station sequence number consoles use to detect and fill gaps).

Tamper evidence: ``root = sha256("station-journal\\0" + header JSON)``; each block row stores
``chain = sha256(prev_chain + "B" + idx, t_ns, first_ns, last_ns, n_events as <q + payload)`` and
each message row ``chain = sha256(prev_chain + "M" + seq, t_ns as <q + len(kind) as <I + kind +
body)``; both chains start at ``root``. The heads (last index/seq and chain) are written to
``meta`` in the same transaction as the rows, so dropping the last rows is detected too.
``verify()`` recomputes everything. The chain detects any edit made without recomputing it; it
is not a signature: anyone who can write the file and knows this format could rebuild it, which
is why the recorder runs as its own user and the heads are published to the consoles
(``chain_heads()``).

Durability: WAL with ``synchronous=NORMAL``. ``commit()`` writes everything appended since the
previous commit in one transaction (survives SIGKILL of the process); ``sync()`` fsyncs the
``-wal`` file (survives power loss). The recorder commits every ingest cycle
(``journal.ingest_interval_ms``, 500 ms) and syncs every ``journal.commit_interval_ms`` (<= 1 s):
at most about 1 s of data is at risk on power loss.

Concurrency: one writer per file (``Journal.create`` or ``Journal.open(writable=True)``, guarded by
the ``-lock`` file); any number of read-only ``Journal.open(path)`` objects, in other threads or
processes, read committed data concurrently (WAL readers see each commit as soon as it is made).
A ``Journal`` object may be shared between threads (an internal lock serializes its calls), but
the intended use is one object per thread. Reads return committed rows only.

Read-only opens use ``mode=ro`` and never write the ``.journal`` or ``-wal`` file (SQLite may
update the ``-shm`` index, which holds no data). A clean ``close()`` checkpoints and switches the
file back to rollback mode, so an ended journal is one self-contained file.

Failure modes: every problem with a file (missing, not a journal, corrupt, truncated, newer format,
being written by another process, disk full) raises ``station.errors.JournalError`` (exit code 3)
with the path and a plain-language reason.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from station import events
from station.errors import JournalError

JOURNAL_FORMAT = 1
APPLICATION_ID = 0x53544E4A  # "STNJ" in SQLite's application_id: marks a station journal
SUFFIX = ".journal"
SIDE_SUFFIXES = ("-wal", "-shm", "-lock")
CHUNK = 256  # rows per read query: keeps read transactions short so checkpoints can proceed

_K_HEADER = "journal.header"
_K_FORMAT = "journal.format_version"
_K_HEAD_B = "journal.head.blocks"
_K_HEAD_M = "journal.head.messages"
RESERVED_PREFIX = "journal."

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (
    idx INTEGER PRIMARY KEY, t_ns INTEGER NOT NULL, first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL, n_events INTEGER NOT NULL, payload BLOB NOT NULL, chain BLOB NOT NULL);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, t_ns INTEGER NOT NULL, body BLOB NOT NULL,
    chain BLOB NOT NULL);
CREATE INDEX messages_kind ON messages (kind, seq);
"""

_BLOCK_FIELDS = struct.Struct("<qqqqq")
_MSG_FIELDS = struct.Struct("<qqI")


# --------------------------------------------------------------------------- header and infos

@dataclass(frozen=True)
class SessionHeader:
    """What a session is: written once at creation, covered by the hash chain.

    created_mono_ns / created_wall_ns: the wall-clock anchor (``station.clock.wall_anchor()``);
    station-clock times of this session convert to wall time with ``wall_ns``.
    boot_id: monotonic time is only comparable within one boot (``station.clock.boot_id()``).
    config: the JSON-able configuration snapshot (``Config.as_dict()``), config_hash its hash.
    """

    station_id: str
    session_id: str
    created_mono_ns: int
    created_wall_ns: int
    boot_id: str
    software_version: str
    config_hash: str
    config: dict
    format_version: int = JOURNAL_FORMAT

    def wall_ns(self, t_ns: int) -> int:
        """Wall-clock ns (Unix epoch) of station-clock time ``t_ns`` of this session."""
        return self.created_wall_ns + (t_ns - self.created_mono_ns)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes the hash chain starts from."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "SessionHeader":
        """Parse ``to_json`` output; ValueError when fields are missing or of the wrong type."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("header is not a JSON object")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.name == "format_version":
                    continue
                raise ValueError(f"header lacks {f.name}")
            v = d[f.name]
            want = {"str": str, "int": int, "dict": dict}[f.type]
            if not isinstance(v, want) or isinstance(v, bool):
                raise ValueError(f"header field {f.name} has the wrong type")
            kw[f.name] = v
        return cls(**kw)


@dataclass(frozen=True)
class StoredMessage:
    """A journaled message: seq (1, 2, ...), kind (e.g. "summary"), t_ns (station clock), body."""

    seq: int
    kind: str
    t_ns: int
    body: bytes


@dataclass(frozen=True)
class SessionInfo:
    """One session file as ``list_sessions`` sees it. ``problem`` is "" for a readable journal,
    else why it cannot be read (then the other fields are what is known: id from the file name,
    created_wall_ns from the file's mtime). ``recording``: a writer holds the file right now."""

    session_id: str
    station_id: str
    path: Path
    created_wall_ns: int
    ended: bool
    size_bytes: int
    last_seq: int
    blocks: int
    problem: str = ""
    recording: bool = False


# --------------------------------------------------------------------------- module functions

def new_session_id(station_id: str, wall_ns: int) -> str:
    """``<station_id>-<UTC yyyymmddThhmmssZ>-<4 hex>``: sorts by creation time per station; the
    random suffix keeps two sessions created in the same second apart."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_ns // 1_000_000_000))
    return f"{station_id}-{stamp}-{secrets.token_hex(2)}"


def sessions_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "sessions"


def side_files(path: Path) -> list[Path]:
    """The SQLite and lock files that belong to journal ``path`` (existing or not)."""
    path = Path(path)
    return [path.with_name(path.name + s) for s in SIDE_SUFFIXES]


def writer_active(path: Path) -> bool:
    """True when some process holds the journal open for writing (its ``-lock`` is locked)."""
    lock = Path(str(path) + "-lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def list_sessions(data_dir: Path) -> list[SessionInfo]:
    """Every ``*.journal`` in the sessions directory, oldest first. Files that cannot be read are
    listed with ``problem`` set, never raised."""
    d = sessions_dir(data_dir)
    try:
        paths = sorted(p for p in d.iterdir() if p.name.endswith(SUFFIX) and p.is_file())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise JournalError(f"{d}: cannot list sessions: {e.strerror}") from None
    out = []
    for p in paths:
        live = writer_active(p)
        try:
            j = Journal.open(p)
        except JournalError as e:
            try:
                st = p.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = 0, 0
            out.append(SessionInfo(p.name[:-len(SUFFIX)], "", p, mtime, False, size, 0, 0,
                                   problem=_reason(str(e), p), recording=live))
            continue
        try:
            h = j.header
            out.append(SessionInfo(h.session_id, h.station_id, p, h.created_wall_ns, j.ended,
                                   j.size_bytes(), j.last_seq(), j.block_count(), recording=live))
        except JournalError as e:
            out.append(SessionInfo(p.name[:-len(SUFFIX)], "", p, 0, False, 0, 0, 0,
                                   problem=_reason(str(e), p), recording=live))
        finally:
            j.close()
    out.sort(key=lambda s: (s.created_wall_ns, s.session_id))
    return out


def _reason(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def resolve_session(data_dir: Path, ident: str) -> Path:
    """The journal file for ``ident``: a session id, a unique prefix of one, or a path to a file.
    JournalError when nothing matches or a prefix is ambiguous."""
    if not ident:
        raise JournalError("no session given")
    as_path = Path(ident).expanduser()
    if "/" in ident or ident.endswith(SUFFIX):
        if as_path.is_file():
            return as_path
        if "/" in ident:
            raise JournalError(f"{as_path}: no such journal file")
    d = sessions_dir(data_dir)
    exact = d / f"{ident}{SUFFIX}"
    if exact.is_file():
        return exact
    try:
        names = sorted(p.name[:-len(SUFFIX)] for p in d.iterdir()
                       if p.name.endswith(SUFFIX) and p.is_file())
    except OSError:
        names = []
    matches = [n for n in names if n.startswith(ident)]
    if not matches:
        if as_path.is_file():
            return as_path
        raise JournalError(f"no session matches {ident!r} in {d}")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise JournalError(f"{ident!r} is ambiguous: {len(matches)} sessions match ({shown})")
    return d / f"{matches[0]}{SUFFIX}"


# --------------------------------------------------------------------------- the journal

def _root(header_json: str) -> bytes:
    return hashlib.sha256(b"station-journal\0" + header_json.encode("utf-8")).digest()


def _block_chain(prev: bytes, idx: int, t_ns: int, first: int, last: int, n: int,
                 payload: bytes) -> bytes:
    h = hashlib.sha256(prev)
    h.update(b"B")
    h.update(_BLOCK_FIELDS.pack(idx, t_ns, first, last, n))
    h.update(payload)
    return h.digest()


def _message_chain(prev: bytes, seq: int, kind: str, t_ns: int, body: bytes) -> bytes:
    k = kind.encode("utf-8")
    h = hashlib.sha256(prev)
    h.update(b"M")
    h.update(_MSG_FIELDS.pack(seq, t_ns, len(k)))
    h.update(k)
    h.update(body)
    return h.digest()


def _span(batch: events.Batch) -> tuple[int, int, int]:
    """(first event time, last event time, event count); (t_ns, t_ns, 0) for an empty batch.
    Same result as ``Batch.time_range``, faster on the small arrays of one batch."""
    lo = hi = None
    n = 0
    for cols in batch.streams.values():
        t = cols["t_ns"]
        if len(t):
            vals = t.tolist() if hasattr(t, "tolist") else list(t)
            n += len(vals)
            a, b = min(vals), max(vals)
            lo = a if lo is None or a < lo else lo
            hi = b if hi is None or b > hi else hi
    if lo is None:
        return batch.t_ns, batch.t_ns, 0
    return int(lo), int(hi), n


def _uri(path: Path, mode: str) -> str:
    return "file:" + urllib.parse.quote(str(Path(path).absolute())) + f"?mode={mode}"


class Journal:
    """One session's journal. Create with ``Journal.create``, open with ``Journal.open``.

    Writers buffer ``append_batch`` / ``append_message`` / ``set_meta`` in memory until
    ``commit()``; ``last_seq()`` and ``block_count()`` include what is buffered, reads
    (``iter_*``, ``last_message``, ``verify``) see committed rows only.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, header: SessionHeader,
                 header_json: str, writable: bool, lock_fd: int | None):
        self.path = Path(path)
        self.header = header
        self._conn = conn
        self._header_json = header_json
        self._root = _root(header_json)
        self._writable = writable
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        self._closed = False
        self._pending_blocks: list[tuple] = []
        self._pending_msgs: list[tuple] = []
        self._pending_meta: dict[str, str] = {}
        self._next_block = 0
        self._next_seq = 1
        self._chain_b = self._root
        self._chain_m = self._root
        if writable:
            self._load_heads()

    # ---- opening

    @classmethod
    def create(cls, data_dir: Path, header: SessionHeader) -> "Journal":
        """Create ``sessions_dir(data_dir)/<session_id>.journal`` for writing. Directories are
        created 0700, the file 0600. Refuses (JournalError) when the file already exists."""
        if header.format_version != JOURNAL_FORMAT:
            raise ValueError(f"header.format_version must be {JOURNAL_FORMAT}")
        if not header.session_id or "/" in header.session_id or header.session_id.startswith("."):
            raise ValueError(f"bad session id {header.session_id!r}")
        header_json = header.to_json()  # fails early on a config that is not JSON-able
        d = sessions_dir(data_dir)
        try:
            Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        except OSError as e:
            raise JournalError(f"{d}: cannot create the sessions directory: {e.strerror}") from None
        path = d / f"{header.session_id}{SUFFIX}"
        lock_fd = _lock(path)
        try:
            if any(p.exists() for p in side_files(path)[:2]):
                raise JournalError(f"{path}: leftover -wal/-shm files exist; refusing to create")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                raise JournalError(f"{path}: a journal with this session id exists already; "
                                   "refusing to overwrite it") from None
            except OSError as e:
                raise JournalError(f"{path}: cannot create: {e.strerror}") from None
            os.fchmod(fd, 0o600)
            os.close(fd)
            _fsync_dir(d)
            conn = sqlite3.connect(_uri(path, "rw"), uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=5.0)
            try:
                _setup_writer(conn)
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                root = _root(header_json)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    (_K_HEADER, header_json), (_K_FORMAT, str(JOURNAL_FORMAT)),
                    (_K_HEAD_B, f"0:{root.hex()}"), (_K_HEAD_M, f"0:{root.hex()}")])
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {JOURNAL_FORMAT}")
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                conn.close()
                raise JournalError(f"{path}: cannot initialise the journal: {e}") from None
        except BaseException:
            os.close(lock_fd)
            raise
        j = cls(path, conn, header, header_json, True, lock_fd)
        j.sync()
        return j

    @classmethod
    def open(cls, path: Path, *, writable: bool = False) -> "Journal":
        """Open an existing journal. Read-only by default (never modifies the file).
        ``writable=True`` resumes a session (e.g. after a crash): block index and seq continue.
        JournalError for a missing file, a file that is not a journal, a corrupt or truncated
        one, one written by a newer version, or (writable) one another process is writing."""
        path = Path(path)
        if not path.exists():
            raise JournalError(f"{path}: no such journal file")
        if not path.is_file():
            raise JournalError(f"{path}: not a journal file")
        lock_fd = _lock(path) if writable else None
        conn = None
        try:
            try:
                conn = sqlite3.connect(_uri(path, "rw" if writable else "ro"), uri=True,
                                       isolation_level=None, check_same_thread=False, timeout=5.0)
                conn.text_factory = _text
                header, header_json = _check_journal(conn, path)
                if writable:
                    _setup_writer(conn)
                else:
                    conn.execute("PRAGMA query_only = 1")
            except sqlite3.Error as e:
                raise JournalError(f"{path}: {_describe(e)}") from None
            except UnicodeDecodeError:
                raise JournalError(f"{path}: journal is corrupt (text that is not UTF-8)") from None
        except BaseException:
            if conn is not None:
                conn.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(path, conn, header, header_json, writable, lock_fd)

    def _load_heads(self) -> None:
        with self._db():
            row = self._conn.execute(
                "SELECT idx, chain FROM blocks ORDER BY idx DESC LIMIT 1").fetchone()
            if row:
                self._next_block, self._chain_b = row[0] + 1, bytes(row[1])
            row = self._conn.execute(
                "SELECT seq, chain FROM messages ORDER BY seq DESC LIMIT 1").fetchone()
            if row:
                self._next_seq, self._chain_m = row[0] + 1, bytes(row[1])

    # ---- writing

    def append_batch(self, batch: events.Batch) -> int:
        """Buffer one batch as the next block; returns its index (0, 1, 2, ...)."""
        payload = events.encode_batch(batch)
        first, last, n = _span(batch)
        with self._mutex:
            self._check_writable()
            idx = self._next_block
            chain = _block_chain(self._chain_b, idx, batch.t_ns, first, last, n, payload)
            self._pending_blocks.append((idx, batch.t_ns, first, last, n, payload, chain))
            self._next_block, self._chain_b = idx + 1, chain
            return idx

    def append_message(self, kind: str, t_ns: int, body: bytes) -> int:
        """Buffer a message; returns its sequence number (last + 1; the first is 1)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("message kind must be a non-empty string")
        body = bytes(body)
        t_ns = int(t_ns)
        with self._mutex:
            self._check_writable()
            seq = self._next_seq
            chain = _message_chain(self._chain_m, seq, kind, t_ns, body)
            self._pending_msgs.append((seq, kind, t_ns, body, chain))
            self._next_seq, self._chain_m = seq + 1, chain
            return seq

    def set_meta(self, key: str, value: str) -> None:
        """Buffer a free-form key/value (committed with the next commit). Keys starting with
        "journal." are reserved. Meta values are not covered by the hash chain."""
        if not isinstance(key, str) or not key or key.startswith(RESERVED_PREFIX):
            raise ValueError(f"meta key {key!r} is empty or reserved")
        with self._mutex:
            self._check_writable()
            self._pending_meta[key] = str(value)

    def get_meta(self, key: str) -> str | None:
        with self._mutex:
            if key in self._pending_meta:
                return self._pending_meta[key]
            with self._db():
                row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

    def commit(self) -> None:
        """Write everything buffered since the last commit in one transaction. After it returns
        the data survives a SIGKILL of this process; call ``sync()`` for power loss. On failure
        (e.g. disk full) the buffer is kept, so a later commit can retry; JournalError."""
        with self._mutex:
            self._check_writable()
            if not (self._pending_blocks or self._pending_msgs or self._pending_meta):
                return
            meta = dict(self._pending_meta)
            meta[_K_HEAD_B] = f"{self._next_block}:{self._chain_b.hex()}"
            meta[_K_HEAD_M] = f"{self._next_seq - 1}:{self._chain_m.hex()}"
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    if self._pending_blocks:
                        c.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)",
                                      self._pending_blocks)
                    if self._pending_msgs:
                        c.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                                      self._pending_msgs)
                    c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise JournalError(f"{self.path}: cannot write: {_describe(e)}") from None
            self._pending_blocks.clear()
            self._pending_msgs.clear()
            self._pending_meta.clear()

    def sync(self) -> None:
        """fsync the write-ahead log so committed data survives power loss (a few ms of I/O;
        call it at most about once a second). Data not yet committed is not synced."""
        with self._mutex:
            self._check_writable()
            wal = Path(str(self.path) + "-wal")
            try:
                fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            except OSError as e:
                raise JournalError(f"{wal}: cannot open for sync: {e.strerror}") from None
            try:
                if fd is not None:
                    os.fsync(fd)
            except OSError as e:
                raise JournalError(f"{wal}: fsync failed: {e.strerror}") from None
            finally:
                if fd is not None:
                    os.close(fd)

    def end(self, t_ns: int) -> None:
        """Mark the session ended at station time ``t_ns`` (meta ``ended_ns``) and commit."""
        self.set_meta("ended_ns", str(int(t_ns)))
        self.commit()
        self.sync()

    def close(self) -> None:
        """Commit (writers), checkpoint, switch back to a single self-contained file when no
        reader is attached, close. Safe to call twice."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._writable:
                    self.commit()
                    try:
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                        self._conn.execute("PRAGMA busy_timeout = 100")
                        self._conn.execute("PRAGMA journal_mode = DELETE")
                    except sqlite3.Error:
                        pass  # a reader is attached: stay in WAL mode; nothing is lost
            finally:
                self._closed = True
                self._conn.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- reading

    def last_seq(self) -> int:
        """Sequence number of the last message (0 when none); includes uncommitted appends on a
        writer; on a reader, what is committed now."""
        with self._mutex:
            if self._writable:
                return self._next_seq - 1
            with self._db():
                row = self._conn.execute("SELECT max(seq) FROM messages").fetchone()
            return row[0] or 0

    def block_count(self) -> int:
        """Number of blocks (index of the next block); includes uncommitted appends on a writer."""
        with self._mutex:
            if self._writable:
                return self._next_block
            with self._db():
                row = self._conn.execute("SELECT max(idx) FROM blocks").fetchone()
            return 0 if row[0] is None else row[0] + 1

    def iter_batches(self, start_block: int = 0) -> Iterator[events.Batch]:
        """Decode the committed blocks from ``start_block`` on, in order. JournalError on a
        block that cannot be decoded."""
        nxt = int(start_block)
        while True:
            with self._mutex, self._db():
                rows = self._conn.execute(
                    "SELECT idx, payload FROM blocks WHERE idx >= ? ORDER BY idx LIMIT ?",
                    (nxt, CHUNK)).fetchall()
            if not rows:
                return
            for idx, payload in rows:
                if not isinstance(payload, (bytes, memoryview)):
                    raise JournalError(f"{self.path}: block {idx} is malformed (edited?)")
                try:
                    yield events.decode_batch(payload)
                except events.FormatError as e:
                    raise JournalError(f"{self.path}: block {idx} cannot be decoded: {e}") from None
            nxt = rows[-1][0] + 1

    def iter_messages(self, from_seq: int = 1, to_seq: int | None = None,
                      kinds: Iterable[str] | None = None) -> Iterator[StoredMessage]:
        """Committed messages with from_seq <= seq <= to_seq (all when to_seq is None), in seq
        order, optionally only of the given kinds."""
        kinds = list(kinds) if kinds is not None else None
        if kinds is not None and not kinds:
            return
        hi = (1 << 63) - 1 if to_seq is None else int(to_seq)
        where = "seq >= ? AND seq <= ?"
        extra: list[Any] = []
        if kinds is not None:
            where += " AND kind IN (" + ",".join("?" * len(kinds)) + ")"
            extra = kinds
        sql = f"SELECT seq, kind, t_ns, body FROM messages WHERE {where} ORDER BY seq LIMIT {CHUNK}"
        nxt = int(from_seq)
        while nxt <= hi:
            with self._mutex, self._db():
                rows = self._conn.execute(sql, [nxt, hi, *extra]).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._message(row)
            nxt = rows[-1][0] + 1

    def last_message(self, kind: str) -> StoredMessage | None:
        """The committed message of ``kind`` with the highest seq, or None."""
        with self._mutex, self._db():
            row = self._conn.execute(
                "SELECT seq, kind, t_ns, body FROM messages WHERE kind = ? ORDER BY seq DESC LIMIT 1",
                (kind,)).fetchone()
        return self._message(row) if row else None

    def _message(self, row) -> StoredMessage:
        """A stored message row, type-checked: an edited row of the wrong types is a JournalError."""
        seq, kind, t_ns, body = row
        if not (isinstance(seq, int) and isinstance(kind, str) and isinstance(t_ns, int)
                and isinstance(body, (bytes, memoryview))):
            raise JournalError(f"{self.path}: message {seq!r} is malformed (edited?)")
        return StoredMessage(seq, kind, t_ns, bytes(body))

    @property
    def ended(self) -> bool:
        return self.get_meta("ended_ns") is not None

    def size_bytes(self) -> int:
        """Bytes on disk: the database plus its write-ahead log."""
        total = 0
        for p in (self.path, Path(str(self.path) + "-wal")):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def chain_heads(self) -> dict[str, Any]:
        """The committed chain heads, for publishing to consoles as an external anchor:
        {"blocks": n, "blocks_chain": hex, "last_seq": s, "messages_chain": hex}."""
        hb = (self.get_meta(_K_HEAD_B) or "0:").split(":", 1)
        hm = (self.get_meta(_K_HEAD_M) or "0:").split(":", 1)
        return {"blocks": int(hb[0]), "blocks_chain": hb[1],
                "last_seq": int(hm[0]), "messages_chain": hm[1]}

    def block_chain_at(self, idx: int) -> str | None:
        """The stored chain value (hex) of committed block ``idx``, or None when there is none.
        ``verify()`` says whether the stored values are consistent; ``station.anchors.check``
        compares them with the heads consoles were sent."""
        with self._mutex, self._db():
            row = self._conn.execute("SELECT chain FROM blocks WHERE idx = ?", (int(idx),)).fetchone()
        return bytes(row[0]).hex() if row and isinstance(row[0], (bytes, memoryview)) else None

    def message_chain_at(self, seq: int) -> str | None:
        """The stored chain value (hex) of committed message ``seq``, or None."""
        with self._mutex, self._db():
            row = self._conn.execute("SELECT chain FROM messages WHERE seq = ?", (int(seq),)).fetchone()
        return bytes(row[0]).hex() if row and isinstance(row[0], (bytes, memoryview)) else None

    def verify(self, max_problems: int = 50) -> list[str]:
        """Check the whole committed journal: SQLite integrity, header, both hash chains, block
        index and seq continuity, chain heads, and that every block decodes and matches its
        row. Returns [] when intact, else human-readable problems (at most ``max_problems``,
        then a count of the rest)."""
        problems: list[str] = []
        more = [0]

        def add(msg: str) -> None:
            if len(problems) < max_problems:
                problems.append(msg)
            else:
                more[0] += 1

        with self._mutex:
            try:
                with self._db():
                    for (r,) in self._conn.execute("PRAGMA integrity_check(20)"):
                        if r != "ok":
                            add(f"sqlite integrity: {r}")
                    self._verify_rows(add)
            except JournalError as e:
                add(_reason(str(e), self.path))
        if more[0]:
            problems.append(f"... and {more[0]} more problem(s)")
        return problems

    def _verify_rows(self, add) -> None:
        c = self._conn
        row = c.execute("SELECT value FROM meta WHERE key = ?", (_K_HEADER,)).fetchone()
        if row is None or row[0] != self._header_json:
            add("session header changed since the journal was opened")
        root = _root(row[0]) if row else self._root
        # blocks
        prev, expect, last_idx = root, 0, -1
        nxt = 0
        while True:
            rows = c.execute("SELECT idx, t_ns, first_ns, last_ns, n_events, payload, chain "
                             "FROM blocks WHERE idx >= ? ORDER BY idx LIMIT ?",
                             (nxt, CHUNK)).fetchall()
            if not rows:
                break
            for idx, t_ns, first, last, n, payload, chain in rows:
                if not all(isinstance(v, int) for v in (t_ns, first, last, n)) or \
                        not isinstance(payload, bytes) or not isinstance(chain, bytes):
                    add(f"block {idx}: malformed row")
                    prev, expect, last_idx = chain if isinstance(chain, bytes) else prev, idx + 1, idx
                    continue
                if idx != expect:
                    add(f"block index gap: expected block {expect}, found block {idx}"
                        f" ({idx - expect} block(s) missing)" if idx > expect else
                        f"block index out of order at {idx}")
                if _block_chain(prev, idx, t_ns, first, last, n, payload) != chain:
                    add(f"block {idx}: hash chain broken (block or its predecessor changed)")
                try:
                    b = events.decode_batch(payload)
                except events.FormatError as e:
                    add(f"block {idx}: undecodable ({e})")
                else:
                    if (b.t_ns, *_span(b)) != (t_ns, first, last, n):
                        add(f"block {idx}: row times/count disagree with its payload")
                prev, expect, last_idx = chain, idx + 1, idx
            nxt = rows[-1][0] + 1
        self._check_head(add, _K_HEAD_B, "blocks", last_idx + 1, prev)
        # messages
        prev, expect, last_seq = root, 1, 0
        nxt = 1
        while True:
            rows = c.execute("SELECT seq, kind, t_ns, body, chain FROM messages "
                             "WHERE seq >= ? ORDER BY seq LIMIT ?", (nxt, CHUNK)).fetchall()
            if not rows:
                break
            for seq, kind, t_ns, body, chain in rows:
                if not isinstance(kind, str) or not isinstance(t_ns, int) or \
                        not isinstance(body, bytes) or not isinstance(chain, bytes):
                    add(f"message {seq}: malformed row")
                    prev, expect, last_seq = chain if isinstance(chain, bytes) else prev, seq + 1, seq
                    continue
                if seq != expect:
                    add(f"message seq gap: expected {expect}, found {seq}"
                        f" ({seq - expect} message(s) missing)" if seq > expect else
                        f"message seq out of order at {seq}")
                if _message_chain(prev, seq, kind, t_ns, body) != chain:
                    add(f"message {seq}: hash chain broken (message or its predecessor changed)")
                prev, expect, last_seq = chain, seq + 1, seq
            nxt = rows[-1][0] + 1
        self._check_head(add, _K_HEAD_M, "messages", last_seq, prev)

    def _check_head(self, add, key: str, what: str, count: int, chain: bytes) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            add(f"{what}: chain head missing")
            return
        n, _, h = str(row[0]).partition(":")
        if n != str(count) or h != chain.hex():
            add(f"{what}: chain head says {n} {'block(s)' if what == 'blocks' else 'as last seq'}"
                f", the table ends at {count}: rows were removed or changed at the end")

    # ---- internals

    def _check_writable(self) -> None:
        if self._closed:
            raise JournalError(f"{self.path}: journal is closed")
        if not self._writable:
            raise JournalError(f"{self.path}: journal is open read-only")

    def _db(self):
        if self._closed:
            raise JournalError(f"{self.path}: journal is closed")
        return _Translate(self.path)

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for the SQLite backup API in ``station sessions export``)."""
        return self._conn


class _Translate:
    """Context manager: sqlite3 errors -> JournalError naming the file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if et is not None and issubclass(et, sqlite3.Error):
            raise JournalError(f"{self.path}: {_describe(e)}") from None
        return False


def _text(raw: bytes) -> str:
    """SQLite TEXT -> str; text that is not UTF-8 can only come from corruption or an edit."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JournalError("the journal holds text that is not UTF-8 (corrupt or edited)") from None


def _describe(e: sqlite3.Error) -> str:
    msg = str(e)
    if "not a database" in msg:
        return "not a station journal (not an SQLite database)"
    if "malformed" in msg or "corrupt" in msg:
        return "journal is corrupt or truncated (" + msg + ")"
    if "full" in msg:
        return "disk full (" + msg + ")"
    if "locked" in msg or "busy" in msg:
        return "journal is busy (" + msg + ")"
    if "readonly" in msg or "read-only" in msg:
        return "cannot write (" + msg + ")"
    return msg


def _check_journal(conn: sqlite3.Connection, path: Path) -> tuple[SessionHeader, str]:
    """Validate that ``conn`` is a readable station journal of a known format."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app != APPLICATION_ID or not {"meta", "blocks", "messages"} <= tables:
        if not tables:
            raise JournalError(f"{path}: not a station journal (empty database)")
        raise JournalError(f"{path}: not a station journal (an SQLite database of another kind)")
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?)",
                             (_K_FORMAT, _K_HEADER)).fetchall())
    try:
        fmt = max(int(version), int(meta.get(_K_FORMAT, 0)))
    except ValueError:
        raise JournalError(f"{path}: journal format version is unreadable") from None
    if fmt > JOURNAL_FORMAT:
        raise JournalError(f"{path}: written by a newer version of station (journal format "
                           f"{fmt}; this software reads format {JOURNAL_FORMAT}); upgrade station")
    if fmt < 1:
        raise JournalError(f"{path}: journal format version missing")
    text = meta.get(_K_HEADER)
    if text is None:
        raise JournalError(f"{path}: journal has no session header")
    try:
        header = SessionHeader.from_json(text)
    except ValueError as e:
        raise JournalError(f"{path}: session header unreadable ({e})") from None
    if header.format_version > JOURNAL_FORMAT:
        raise JournalError(f"{path}: written by a newer version of station (journal format "
                           f"{header.format_version}; this software reads format {JOURNAL_FORMAT})")
    # Touch the last pages of both tables: a cut file usually fails here already.
    conn.execute("SELECT max(idx) FROM blocks").fetchone()
    conn.execute("SELECT max(seq) FROM messages").fetchone()
    _check_size(conn, path)
    return header, text


def _check_size(conn: sqlite3.Connection, path: Path) -> None:
    """A file shorter than its page count says was cut (only checkable without WAL content)."""
    wal = Path(str(path) + "-wal")
    try:
        if wal.exists() and wal.stat().st_size > 0:
            return
        size = path.stat().st_size
    except OSError:
        return
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    if size < pages * page_size:
        raise JournalError(f"{path}: journal is truncated ({size} bytes on disk, "
                           f"{pages * page_size} expected)")


def _setup_writer(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = NORMAL")


def _lock(path: Path) -> int:
    """Take the writer lock of journal ``path``; JournalError if another writer holds it."""
    lock = Path(str(path) + "-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise JournalError(f"{lock}: cannot create the writer lock: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"{path}: journal is being written by another process") from None
    return fd


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
