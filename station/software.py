"""What software this process runs: version, a hash of the installed package, who can change it.

Like Safe Exam Browser's exam key: the capture sends ``identity()`` in its HELLO, the recorder
compares it with its own and journals both, and the report's header shows them. A mismatch (an
edited or foreign copy of the capture) is an integrity alert.

``package_sha256`` covers every file of the installed ``station`` package (path and content,
``__pycache__`` excluded), so it changes with any edit to the code or the console's web files.
``writable_by_others`` lists package paths that an account other than root (or the file's owner
when not run as root) could change: a station run from such a path cannot be trusted, because
the candidate could replace its code.
"""

from __future__ import annotations

import hashlib
import os
import stat
from functools import lru_cache
from pathlib import Path

from station import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def package_sha256() -> str:
    """SHA-256 (hex) over the sorted relative paths and contents of the package's files. Computed
    once per process (about 5 ms); unreadable files count by their path alone."""
    h = hashlib.sha256()
    for path in sorted(p for p in PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()


def writable_by_others(root: Path = PACKAGE_DIR, extra: tuple[Path, ...] = ()) -> list[str]:
    """Package paths (the package directory, its parents and its files, and ``extra`` paths with
    their parents) that an account other than root could write: group- or world-writable
    (sticky directories excepted), or owned by a non-root account. Empty for a root-owned
    install. At most 10 paths are listed."""
    found: list[str] = []
    candidates = [root, *root.parents, *(p for p in root.rglob("*") if "__pycache__" not in p.parts)]
    for e in extra:
        candidates += [Path(e), *Path(e).parents]
    for path in candidates:
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir):
            found.append(f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
            if len(found) >= 10:
                break
    return found


def identity() -> dict:
    """{"version", "sha256", "writable_by_others": [...]}: what the HELLO and the report carry."""
    return {"version": __version__, "sha256": package_sha256(), "writable_by_others": writable_by_others()}


def exe_of(pid: int) -> str:
    """The executable of process ``pid`` (/proc/PID/exe), or "" when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
