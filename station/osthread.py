"""Name the calling OS thread after its Python thread, so that ``top -H``, ``ps -L`` and
/proc/<pid>/task/<tid>/comm show "audio-source" or "publisher" instead of "python".

Linux only (prctl PR_SET_NAME, at most 15 bytes); elsewhere, or if libc cannot be loaded, it does
nothing. It never raises: a thread name is a diagnostic, not a function.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_prctl = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def name_this_thread(name: str | None = None) -> None:
    """Give the calling OS thread ``name`` (default: the Python thread's name), cut to 15 bytes."""
    if _prctl is None:
        return
    raw = (name or threading.current_thread().name).encode("ascii", "replace")[:15]
    try:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)
    except Exception:  # noqa: BLE001 - diagnostic only
        pass


def named(target):
    """Wrap a thread target so that it first names its OS thread (see ``name_this_thread``)."""
    def run(*args, **kwargs):
        name_this_thread()
        return target(*args, **kwargs)
    return run
