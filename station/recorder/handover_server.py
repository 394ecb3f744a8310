"""Recorder side of the capture -> recorder hand-over (wire format: ``station.handover``)."""

from __future__ import annotations

import collections
import logging
import os
import selectors
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

from station.clock import monotonic_ns
from station.errors import UserError
from station.eventqueue import EventQueue
from station.events import DEFAULT_LAG_NS, FormatError, SourceHealth, decode_batch
from station.handover import ACK, BATCH, BEAT, HELLO, PROTO, FrameReader, frame
from station.osthread import named

log = logging.getLogger(__name__)


class HandoverServer:
    """Recorder side: accepts the capture's link, feeds its events into ``queue``.

    A newer connection replaces an older one (a restarted capture). Malformed frames end the link
    and are counted in ``stats``; nothing a peer sends raises out of the thread.
    """

    def __init__(self, path: Path, queue: EventQueue, *, station_id: str, max_frame_bytes: int,
                 gap_alert_ms: int, clock: Callable[[], int] = monotonic_ns):
        self.path = Path(path)
        self.queue = queue
        self.station_id = station_id
        self.max_frame_bytes = max_frame_bytes
        self.gap_ns = gap_alert_ms * 1_000_000
        self.clock = clock
        self.stats = collections.Counter()
        self.capture_watermark: int | None = None
        self.last_frame_ns: int | None = None
        self.peer: dict[str, Any] = {}
        self.link_state = "waiting"     # waiting | ok | lost
        self.capture_status: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._hello = False

    def start(self) -> None:
        """Bind the socket. An operator problem (directory not writable, path too long, a
        directory in the way) raises ``UserError`` naming the path, the reason and the key."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() or self.path.is_symlink():
                self.path.unlink()
            old = os.umask(0o007)
            try:
                s.bind(str(self.path))
            finally:
                os.umask(old)
        except OSError as e:
            s.close()
            why = e.strerror or str(e)
            raise UserError(f"hand-over socket {self.path}: cannot create it ({why}); the directory "
                            "must exist or be creatable and writable by the recorder's account "
                            "(set handover.socket, or run `station install`)") from None
        s.listen(4)
        s.setblocking(False)
        self._sock = s
        self._thread = threading.Thread(target=named(self._run), name="handover-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for s in (self._conn, self._sock):
            if s is not None:
                s.close()
        try:
            self.path.unlink()
        except OSError:
            pass

    def watermark(self, now: int) -> int:
        """Up to when the capture has delivered everything (now - lag while the link is down)."""
        lagged = now - DEFAULT_LAG_NS
        if self.link_state == "ok" and self.capture_watermark is not None:
            return min(lagged, self.capture_watermark)
        return lagged

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "listen")
        while not self._stop.is_set():
            try:
                for key, _ in sel.select(timeout=0.1):
                    if key.data == "listen":
                        self._accept(sel)
                    else:
                        self._read(sel)
                self._check_gap()
            except Exception as e:  # never let the server thread die
                self.stats["errors"] += 1
                log.exception("hand-over server error: %s", e)
                time.sleep(0.1)
        sel.close()

    def _accept(self, sel) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        if self._conn is not None:
            sel.unregister(self._conn)
            self._conn.close()
            self.stats["replaced"] += 1
        conn.setblocking(False)
        self._conn, self._reader, self._hello = conn, FrameReader(self.max_frame_bytes), False
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("3i", creds)
            self.peer = {"pid": pid, "uid": uid, "gid": gid}
        except OSError:
            self.peer = {}
        sel.register(conn, selectors.EVENT_READ, "conn")
        self.stats["connections"] += 1

    def _drop(self, sel, reason: str) -> None:
        log.warning("hand-over link dropped: %s", reason)
        if self._conn is not None:
            sel.unregister(self._conn)
            self._conn.close()
        self._conn = None

    def _read(self, sel) -> None:
        try:
            data = self._conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._drop(sel, str(e))
            return
        if not data:
            self._drop(sel, "capture closed the link")
            return
        try:
            frames = self._reader.feed(data)
        except ValueError as e:
            self.stats["oversized"] += 1
            self._drop(sel, str(e))
            return
        for kind, payload in frames:
            if not self._handle(kind, payload):
                self.stats["malformed"] += 1
                self._drop(sel, f"malformed {kind!r} frame")
                return

    def _handle(self, kind: bytes, payload: bytes) -> bool:
        now = self.clock()
        if kind == HELLO:
            try:
                hello = msgpack.unpackb(payload, raw=False)
                proto = hello["proto"]
            except Exception:
                return False
            ok = proto == PROTO and hello.get("station_id") == self.station_id
            error = "" if ok else (f"protocol {proto} not supported (this recorder speaks {PROTO})" if proto != PROTO
                                   else f"capture is for station {hello.get('station_id')!r}, this is {self.station_id!r}")
            if not ok:
                log.error("capture refused: %s", error)
                self.stats["refused"] += 1
            try:
                self._conn.sendall(frame(ACK, msgpack.packb({"proto": PROTO, "ok": ok, "error": error})))
            except OSError:
                return False
            if not ok:
                return False
            self._hello = True
            self.peer.update(capture_pid=hello.get("pid"))
            self._mark_alive(now)
            return True
        if not self._hello:
            return False
        if kind == BATCH:
            try:
                batch = decode_batch(payload)
            except FormatError:
                return False
            self.queue.put_batch(batch)
            self.capture_watermark = batch.watermark_ns
            self.stats["batches"] += 1
            self._mark_alive(now)
            return True
        if kind == BEAT:
            try:
                beat = msgpack.unpackb(payload, raw=False)
            except Exception:
                return False
            if isinstance(beat, dict):
                self.capture_status = {k: beat.get(k) for k in ("queued", "dropped", "sources")}
            self.stats["beats"] += 1
            self._mark_alive(now)
            return True
        return False

    def _mark_alive(self, now: int) -> None:
        self.last_frame_ns = now
        if self.link_state != "ok":
            self.queue.put(SourceHealth(now, "capture", "ok", "capture connected"))
            self.link_state = "ok"

    def _check_gap(self) -> None:
        if self.link_state != "ok" or self.last_frame_ns is None:
            return
        now = self.clock()
        if now - self.last_frame_ns >= self.gap_ns:
            self.link_state = "lost"
            self.queue.put(SourceHealth(self.last_frame_ns, "capture", "lost",
                                        f"no data from the capture process for {self.gap_ns // 1_000_000} ms"))
