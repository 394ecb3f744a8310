"""The recorder's status file: what ``station status`` shows.

The recorder writes ``<data_dir>/status.json`` atomically (temp file + rename, mode 0600) every
other health beat (every 2 s, ``loop.STATUS_INTERVAL_NS``): the health message body (sources, session,
journal last_seq/size/disk free, queue, counters, publisher) plus ``pid``, ``written_wall_ns``
(wall clock, for display only) and ``written_mono_ns`` (monotonic ns: freshness test, same boot).
It lives in the data directory (0700, owner of the recorder) so only that account and root read it.

``read_status(data_dir, max_age_s)`` returns ``(state, status)`` where state is ``running``
(pid alive and the file younger than max_age_s of monotonic time), ``stale`` (process alive, file
old: hung), ``stopped`` (no process) or ``absent`` (no file). Never raises for a missing or
garbled file (state ``absent`` / ``unreadable``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILENAME = "status.json"


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILENAME


def write_status(path: Path, health: dict) -> None:
    """Atomically replace ``path`` with the health body + pid and write times. OSError (e.g. disk
    full) is left to the caller (the recorder ignores it: status is best effort)."""
    doc = dict(health)
    doc.update(pid=os.getpid(), written_wall_ns=time.time_ns(), written_mono_ns=time.monotonic_ns())
    data = json.dumps(doc, default=str, separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(data_dir: Path, max_age_s: float = 5.0) -> tuple[str, dict | None]:
    path = status_path(data_dir)
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        return "absent", None
    except (OSError, ValueError) as e:
        return "unreadable", {"error": str(e)}
    pid = doc.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return "stopped", doc
    age = (time.monotonic_ns() - int(doc.get("written_mono_ns", 0))) / 1e9
    doc["age_s"] = age
    return ("running" if 0 <= age <= max_age_s else "stale"), doc
