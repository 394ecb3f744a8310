"""Capture -> recorder hand-over over a local Unix socket.

In the exam deployment the sources run in a *capture* process in the candidate's graphical
session and hand their events to the *recorder* (a system service under its own user). The link:

- **framed**: each frame is a 4-byte big-endian length, then one type byte, then the payload;
- **versioned**: the capture's first frame is HELLO ``{"proto": PROTO, "station_id", "pid",
  "boot_id"}``; the recorder answers ACK ``{"proto", "ok", "error"?}`` and drops a link of another
  major version with a clear log line;
- **bounded**: frames larger than ``handover.max_frame_bytes`` end the link (counted); the
  capture keeps at most ``handover.queue_max_batches`` unsent batches (the oldest are dropped and
  counted when the recorder is away that long);
- **back-pressure**: the capture writes with a timeout; when the recorder does not keep up, batches
  wait in the capture's outbox instead of piling up in the socket;
- **health beat**: a BEAT frame every ``handover.heartbeat_ms`` even when idle; the recorder turns
  a link silent for ``handover.gap_alert_ms`` into ``SourceHealth("capture", "lost")`` (a data gap
  and an alert at the consoles) and back to "ok" when frames flow again.

Frame types: H hello, A ack, B batch (``events.encode_batch``; the batch's ``watermark_ns`` says
up to when the capture has delivered everything), P beat (msgpack ``{"t_ns", "queued", "dropped",
"sources"}``).
"""

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

from .clock import boot_id, monotonic_ns
from .events import DEFAULT_LAG_NS, FormatError, SourceHealth, decode_batch, encode_batch
from .osthread import named
from .sources.base import EventQueue

log = logging.getLogger(__name__)
PROTO = 1
HEAD = struct.Struct(">I")
HELLO, ACK, BATCH, BEAT = b"H", b"A", b"B", b"P"


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEAD.pack(len(payload) + 1) + kind + payload


class FrameReader:
    """Incremental frame parser. feed(bytes) -> list of (kind, payload); raises ValueError when a
    frame announces more than max_bytes or is empty."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = HEAD.unpack_from(self.buf)
            if n == 0 or n > self.max_bytes:
                raise ValueError(f"frame of {n} bytes (limit {self.max_bytes})")
            if len(self.buf) < 4 + n:
                break
            body = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            out.append((body[:1], body[1:]))
        return out


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


class CaptureClient:
    """Capture side: batches its queue every ``interval_ms`` and sends them to the recorder.

    Reconnects with backoff (0.2 s doubling to 2 s) and keeps unsent batches (bounded).
    watermark: ``f(now_ns) -> ns`` up to which the sources have delivered everything, sent with
    each batch (default now - 1 s; ``station capture`` passes ``sources_watermark``).
    """

    def __init__(self, path: Path, queue: EventQueue, *, station_id: str, heartbeat_ms: int,
                 queue_max_batches: int, interval_ms: int = 250, clock: Callable[[], int] = monotonic_ns,
                 sources_status: Callable[[], dict] | None = None,
                 watermark: Callable[[int], int] | None = None):
        self.path = Path(path)
        self.queue = queue
        self.station_id = station_id
        self.heartbeat_ns = heartbeat_ms * 1_000_000
        self.interval_s = interval_ms / 1000
        self.clock = clock
        self.sources_status = sources_status or (lambda: {})
        self.watermark_fn = watermark or (lambda now: now - DEFAULT_LAG_NS)
        self.outbox: collections.deque[bytes] = collections.deque()
        self.max_batches = queue_max_batches
        self.stats = collections.Counter()
        self.connected = False
        self.refused: str | None = None
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=named(self.run), name="capture-client", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._flush_once()
        if self._sock is not None:
            self._sock.close()

    def _connect(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(str(self.path))
            s.sendall(frame(HELLO, msgpack.packb({"proto": PROTO, "station_id": self.station_id,
                                                  "pid": os.getpid(), "boot_id": boot_id()})))
            reader = FrameReader(1 << 20)
            frames: list = []
            deadline = time.monotonic() + 2
            while not frames and time.monotonic() < deadline:
                data = s.recv(4096)
                if not data:
                    raise OSError("recorder closed the link")
                frames = reader.feed(data)
            if not frames or frames[0][0] != ACK:
                raise OSError("no answer from the recorder")
            ack = msgpack.unpackb(frames[0][1], raw=False)
            if not ack.get("ok"):
                self.refused = ack.get("error", "refused")
                raise OSError(self.refused)
        except (OSError, ValueError) as e:
            s.close()
            self.stats["connect_failures"] += 1
            log.debug("hand-over connect failed: %s", e)
            return False
        self._sock = s
        self.connected = True
        self.refused = None
        self.stats["connects"] += 1
        return True

    def _enqueue_batch(self) -> None:
        now = self.clock()
        batch = self.queue.drain_batch(now, self.watermark_fn)   # events and the audio source's batches
        if not batch.count():
            return
        self.outbox.append(frame(BATCH, encode_batch(batch)))
        while len(self.outbox) > self.max_batches:
            self.outbox.popleft()
            self.stats["dropped_batches"] += 1

    def _send(self, data: bytes) -> bool:
        try:
            self._sock.sendall(data)
            return True
        except OSError:
            self._sock.close()
            self._sock = None
            self.connected = False
            self.stats["disconnects"] += 1
            return False

    def _flush_once(self) -> None:
        self._enqueue_batch()
        while self.outbox and self._sock is not None:
            if not self._send(self.outbox[0]):
                return
            self.outbox.popleft()
            self.stats["sent_batches"] += 1

    def run(self) -> None:
        backoff = 0.2
        last_beat = 0
        next_try = 0.0
        while not self._stop.is_set():
            if self._sock is None and time.monotonic() >= next_try:
                if self._connect():
                    backoff = 0.2
                else:
                    next_try = time.monotonic() + backoff
                    backoff = min(2.0, backoff * 2)
            self._flush_once()
            now = self.clock()
            if self._sock is not None and now - last_beat >= self.heartbeat_ns:
                beat = {"t_ns": now, "queued": len(self.outbox), "dropped": self.queue.dropped
                        + self.stats["dropped_batches"], "sources": self.sources_status()}
                if self._send(frame(BEAT, msgpack.packb(beat, default=str))):
                    last_beat = now
            self._stop.wait(self.interval_s)
