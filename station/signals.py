"""Signal handling shared by the station's processes."""

from __future__ import annotations

import signal
import threading


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a clean stop: the session stays open for a restart)."""
    def handler(signum, frame):
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
