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
from station.eventqueue import EventQueue
from station.events import DEFAULT_LAG_NS, FormatError, SourceHealth, decode_batch
from station.handover import ACK, BATCH, BEAT, HELLO, PROTO, FrameReader, frame
from station.osthread import named
from station.watermark import StallGuard

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
        self._stall = StallGuard(queue)     # see watermark()
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o007)
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
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
        """Up to when the capture has delivered everything (now - lag while the link is down). A
        capture whose watermark falls more than ``STALL_NS`` behind (stalled, or lying to hold
        every figure back) is declared lost as source ``capture-watermark`` (a SourceHealth
        queued before the recorder drains: journaled in the batch whose watermark passes it) and
        no longer holds the watermark back; its older events then count as late."""
        lagged = now - DEFAULT_LAG_NS
        if self.link_state == "ok" and self.capture_watermark is not None:
            held = self._stall.bound("capture-watermark", self.capture_watermark, now)
            return lagged if held is None else min(lagged, held)
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
            self.queue.put(SourceHealth(self.last_frame_ns, "capture", "lost",
                                        f"no data from the capture process for {self.gap_ns // 1_000_000} ms"))
            self.link_state = "lost"   # only now may watermark() pass the capture: its loss is queued
