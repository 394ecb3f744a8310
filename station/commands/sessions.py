"""``station sessions``: list, export, delete, prune and verify session journals.

The data directory is ``station.config.data_dir(cfg)`` unless ``--data-dir DIR`` is given.
A SESSION argument is a session id, a unique prefix of one, or a path to a ``.journal`` file.
``verify [SESSION] --against ANCHORS`` also checks journals against the chain heads a console
received (a console store or an exported anchor file, ``station.anchors``): a journal cut to a
prefix, rewritten and re-chained, or deleted is reported (docs/journal.md "Anchors").

Exit codes: 0 ok; 1 refused or failed (message says why); 2 usage; 3 a journal is missing,
unreadable, corrupt, from a newer version, or fails verification.

``export --jsonl`` archive format (one JSON object per line, UTF-8; see docs/journal.md):
``{"type": "header", ...}`` first, then per block ``{"type": "batch", "block", "t_ns", "events"}``
followed by its events ``{"type": "event", "block", "stream", "t_ns", <fields>}``, then the
messages ``{"type": "message", "seq", "kind", "t_ns", "body_b64"[, "body_text"]}``, the free
meta keys ``{"type": "meta", "key", "value"}``, and last ``{"type": "end", "blocks",
"messages", "chain_heads", "problems"}``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from station import anchors
from station import config as config_mod
from station.errors import JournalError, UserError
from station.recorder.journal import (
    SUFFIX,
    Journal,
    SessionInfo,
    list_sessions,
    resolve_session,
    side_files,
    writer_active,
)

JSONL_FORMAT = 1


def register(subparsers) -> None:
    p = subparsers.add_parser("sessions", help="list, export, delete, prune and verify sessions",
                              description="Manage the session journals in the data directory.")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="data directory (default: from station.data_dir / $STATION_DATA_DIR)")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, func, help: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help, description=help)
        a.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                       help="data directory (default: from the configuration)")
        a.set_defaults(func=func)
        return a

    a = action("list", cmd_list, "list the sessions, oldest first")
    a.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    a = action("export", cmd_export, "copy a session to a file (verified)")
    a.add_argument("session", metavar="SESSION")
    a.add_argument("--out", required=True, metavar="FILE", help="file to write")
    a.add_argument("--jsonl", action="store_true",
                   help="write one JSON object per event/message instead of an SQLite copy")
    a.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    a = action("delete", cmd_delete, "delete a session's journal")
    a.add_argument("session", metavar="SESSION")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.add_argument("--force", action="store_true",
                   help="also delete a session that was not ended, or an unreadable file")

    a = action("prune", cmd_prune, "delete ended sessions older than station.retention_days")
    a.add_argument("--dry-run", action="store_true", help="only print what would be deleted")

    a = action("verify", cmd_verify, "check a session's integrity and hash chains")
    a.add_argument("session", metavar="SESSION", nargs="?",
                   help="a session (default with --against: every session the anchors know)")
    a.add_argument("--against", metavar="ANCHORS", type=Path,
                   help="a console store (console.sqlite) or an exported anchor file: also check the "
                        "journal against the chain heads the consoles received (truncated, rewritten, deleted)")


# --------------------------------------------------------------------------- helpers

def _data_dir(args) -> tuple[Path, object]:
    from station.cli import load_config
    cfg = load_config(args)
    d = getattr(args, "data_dir", None)
    return (Path(d).expanduser() if d else config_mod.data_dir(cfg)), cfg


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _local(wall_ns: int) -> str:
    if not wall_ns:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_ns / 1e9))


def _state(s: SessionInfo) -> str:
    if s.problem:
        return "unreadable"
    if s.recording:
        return "recording"
    return "ended" if s.ended else "open"


# --------------------------------------------------------------------------- list

def cmd_list(args) -> int:
    data_dir, _ = _data_dir(args)
    infos = list_sessions(data_dir)
    if args.json:
        out = []
        for s in infos:
            d = dataclasses.asdict(s)
            d["path"] = str(s.path)
            d["state"] = _state(s)
            out.append(d)
        print(json.dumps(out, indent=2))
        return 0
    if not infos:
        print(f"no sessions in {data_dir / 'sessions'}")
        return 0
    rows = [("SESSION", "CREATED", "STATE", "SIZE", "MESSAGES")]
    for s in infos:
        state = _state(s) + (f" ({s.problem})" if s.problem else "")
        rows.append((s.session_id, _local(s.created_wall_ns), state, _size(s.size_bytes),
                     str(s.last_seq)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return 0


# --------------------------------------------------------------------------- export

def cmd_export(args) -> int:
    data_dir, _ = _data_dir(args)
    src = resolve_session(data_dir, args.session)
    out = Path(args.out).expanduser()
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; not overwriting it (use --force)")
    if out.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out} is the session's own journal")
    if out.is_dir():
        raise UserError(f"{out} is a directory")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such directory")
    j = Journal.open(src)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if args.jsonl:
                problems = _write_jsonl(j, tmp)
            else:
                problems = _write_copy(j, tmp)
            os.replace(tmp, out)
        finally:
            for p in [tmp, *side_files(tmp)]:
                p.unlink(missing_ok=True)
    finally:
        j.close()
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        raise JournalError(f"exported {out}, but the journal fails verification "
                           f"({len(problems)} problem(s) listed above)")
    kind = "JSON lines" if args.jsonl else "journal copy"
    print(f"exported {j.header.session_id} to {out} ({kind}, {_size(out.stat().st_size)}, verified)")
    return 0


def _write_copy(j: Journal, tmp: Path) -> list[str]:
    """SQLite online backup of the (read-only) journal into ``tmp``, made a single file, then
    verified by opening it as a journal. Returns the copy's verification problems."""
    try:
        dst = sqlite3.connect(str(tmp))
        try:
            j.connection.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise JournalError(f"cannot copy {j.path}: {e}") from None
    os.chmod(tmp, 0o600)
    with Journal.open(tmp) as copy:
        if copy.header != j.header:
            raise JournalError(f"copy of {j.path} has a different header")
        return copy.verify()


def _write_jsonl(j: Journal, tmp: Path) -> list[str]:
    """Write the JSON-lines archive of ``j`` to ``tmp``; returns the journal's problems."""
    problems = j.verify()
    with open(tmp, "w", encoding="utf-8") as f:
        def put(obj) -> None:
            f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")

        head = dataclasses.asdict(j.header)
        put({"type": "header", "jsonl_format": JSONL_FORMAT, **head})
        blocks = 0
        for idx, batch in enumerate(j.iter_batches()):
            blocks += 1
            put({"type": "batch", "block": idx, "t_ns": batch.t_ns, "events": batch.count()})
            for ev in batch.events():
                put({"type": "event", "block": idx, "stream": ev.STREAM, **dataclasses.asdict(ev)})
        messages = 0
        for m in j.iter_messages():
            messages += 1
            rec = {"type": "message", "seq": m.seq, "kind": m.kind, "t_ns": m.t_ns,
                   "body_b64": base64.b64encode(m.body).decode("ascii")}
            try:
                rec["body_text"] = m.body.decode("utf-8")
            except UnicodeDecodeError:
                pass
            put(rec)
        for key, value in _free_meta(j):
            put({"type": "meta", "key": key, "value": value})
        put({"type": "end", "blocks": blocks, "messages": messages,
             "chain_heads": j.chain_heads(), "problems": problems})
    os.chmod(tmp, 0o600)
    return problems


def _free_meta(j: Journal) -> list[tuple[str, str]]:
    try:
        return j.connection.execute(
            "SELECT key, value FROM meta WHERE key NOT LIKE 'journal.%' ORDER BY key").fetchall()
    except sqlite3.Error as e:
        raise JournalError(f"{j.path}: {e}") from None


# --------------------------------------------------------------------------- delete / prune

def _remove(path: Path) -> None:
    for p in [path, *side_files(path)]:
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            raise UserError(f"{p}: cannot delete: {e.strerror}") from None


def cmd_delete(args) -> int:
    data_dir, _ = _data_dir(args)
    path = resolve_session(data_dir, args.session)
    if not path.name.endswith(SUFFIX):
        raise UserError(f"{path}: not a .journal file; not deleting it")
    if writer_active(path):
        raise UserError(f"{path.name[:-len(SUFFIX)]} is being recorded right now; stop the recorder first")
    try:
        with Journal.open(path) as j:
            sid, ended, size = j.header.session_id, j.ended, j.size_bytes()
    except JournalError as e:
        if not args.force:
            raise UserError(f"{e}; use --force to delete it anyway") from None
        sid, ended, size = path.name[:-len(SUFFIX)], True, path.stat().st_size
    if not ended and not args.force:
        raise UserError(f"session {sid} is still open (never ended); use --force to delete it")
    if not args.yes:
        try:
            answer = input(f"Delete session {sid} ({_size(size)}, {path})? [y/N] ")
        except EOFError:
            print()
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    _remove(path)
    print(f"deleted {sid}")
    return 0


def cmd_prune(args) -> int:
    data_dir, cfg = _data_dir(args)
    days = cfg.station.retention_days
    cutoff = time.time_ns() - days * 86_400 * 1_000_000_000
    doomed = [s for s in list_sessions(data_dir)
              if not s.problem and s.ended and not s.recording and s.created_wall_ns < cutoff]
    verb = "would delete" if args.dry_run else "deleted"
    for s in doomed:
        if not args.dry_run:
            if writer_active(s.path):
                print(f"skipped {s.session_id} (being recorded)")
                continue
            _remove(s.path)
        print(f"{verb} {s.session_id} (created {_local(s.created_wall_ns)}, {_size(s.size_bytes)})")
    if not doomed:
        print(f"nothing to prune: no ended session older than {days} days in {data_dir / 'sessions'}")
    return 0


# --------------------------------------------------------------------------- verify

def cmd_verify(args) -> int:
    """Exit 0 when every checked journal is intact (and agrees with the anchors), 3 otherwise."""
    data_dir, cfg = _data_dir(args)
    if not args.session and not args.against:
        raise UserError("give a SESSION, or --against ANCHORS to check every anchored session", 2)
    known = anchors.load(args.against) if args.against else {}
    if args.session:
        paths = [resolve_session(data_dir, args.session)]
    else:
        paths = [s.path for s in list_sessions(data_dir) if not s.problem and s.session_id in known]
    bad = 0
    seen: set[str] = set()
    stations = {cfg.station.id}
    for path in paths:
        with Journal.open(path) as j:
            sid = j.header.session_id
            seen.add(sid)
            stations.add(j.header.station_id)
            problems = j.verify()
            entry = known.get(sid)
            if args.against:
                if entry is None:
                    problems.append(f"no anchor for this session in {args.against}")
                else:
                    problems += anchors.check(j, entry)
            blocks, seq = j.block_count(), j.last_seq()
        if not problems:
            n = len(entry["heads"]) + len(entry["final"]) if entry else 0
            against = f"; agrees with {n} anchor(s) from {args.against}" if args.against else ""
            print(f"{sid}: intact ({blocks} blocks, {seq} messages, hash chains verified{against})")
            continue
        bad += 1
        print(f"{sid}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
    if not args.session:
        for sid, entry in sorted(known.items()):
            if sid not in seen and entry.get("station") in stations:
                bad += 1
                last = anchors.summary(entry)["latest"] or {}
                print(f"{sid}: MISSING: the anchors know this session ({last.get('last_seq', '?')} messages, "
                      f"{last.get('blocks', '?')} blocks) but {sessions_dir_of(data_dir)} has no readable journal "
                      "of it (deleted?)")
    return 3 if bad else 0


def sessions_dir_of(data_dir: Path) -> Path:
    return Path(data_dir) / "sessions"
