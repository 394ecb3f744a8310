"""systemd notification protocol (READY=1, WATCHDOG=1, STOPPING=1) over $NOTIFY_SOCKET, without
an extra dependency. Does nothing when not started by systemd. Failures are ignored (a missing
notification makes systemd act, which is the right outcome)."""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.addr = addr or None
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() else None
        self._last = 0.0

    def send(self, message: str) -> bool:
        if not self.addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.addr)
                s.sendall(message.encode())
            return True
        except OSError:
            return False

    def ready(self) -> None:
        self.send("READY=1\nSTATUS=running")

    def tick(self) -> None:
        """Called every loop turn: sends WATCHDOG=1 at half the watchdog period."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last >= self.watchdog_s / 2:
            self._last = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
