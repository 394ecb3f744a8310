"""Capture side of the capture -> recorder hand-over (wire format: ``station.handover``)."""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack

from station.clock import boot_id, monotonic_ns
from station.eventqueue import EventQueue
from station.events import DEFAULT_LAG_NS, encode_batch
from station.handover import ACK, BATCH, BEAT, HELLO, PROTO, FrameReader, frame
from station.osthread import named
from station import software

log = logging.getLogger(__name__)
HANDOVER_ZLIB_LEVEL = 1   # a local socket, decoded at once: the fastest zlib level (a third of level 6's cost, ~15 % larger)


class CaptureClient:
    """Capture side: batches its queue every ``interval_ms`` and sends them to the recorder.

    Reconnects with backoff (0.2 s doubling to 2 s) and keeps unsent batches (bounded).
    watermark: ``f(now_ns) -> ns`` up to which the sources have delivered everything, sent with
    each batch (default now - 1 s; ``station capture`` passes ``sources_watermark``).
    source_names: the capture's sources, announced in the HELLO with this software's identity
    (``station.software.identity``): the recorder refuses simulated sources in exam mode and
    alerts on software that differs from its own.
    on_link: ``f() -> events`` put into the queue after every link but the first (a reconnect,
    e.g. to a restarted recorder that may have begun a new session): the input source's current
    device set (``DeviceEvent``s), so that every session's journal holds it.
    """

    def __init__(self, path: Path, queue: EventQueue, *, station_id: str, heartbeat_ms: int,
                 queue_max_batches: int, interval_ms: int = 250, clock: Callable[[], int] = monotonic_ns,
                 sources_status: Callable[[], dict] | None = None,
                 watermark: Callable[[int], int] | None = None, source_names: tuple[str, ...] = (),
                 on_link: Callable[[], list] | None = None):
        self.path = Path(path)
        self.queue = queue
        self.station_id = station_id
        self.heartbeat_ns = heartbeat_ms * 1_000_000
        self._last_batch_ns = 0         # when the last batch went into the outbox (ns)
        self.interval_s = interval_ms / 1000
        self.clock = clock
        self.sources_status = sources_status or (lambda: {})
        self.watermark_fn = watermark or (lambda now: now - DEFAULT_LAG_NS)
        self.source_names = list(source_names)
        self.on_link = on_link
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
                                                  "pid": os.getpid(), "boot_id": boot_id(),
                                                  "sources": self.source_names,
                                                  "software": software.identity()})))
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
        if self.stats["connects"] > 1 and self.on_link is not None:
            try:
                events = list(self.on_link())
            except Exception as e:   # a source's bug must not stop the link
                log.warning("re-announcing on reconnect failed: %s", e)
                events = []
            if events:
                self.queue.put_many(events)
        return True

    def _enqueue_batch(self) -> None:
        now = self.clock()
        batch = self.queue.drain_batch(now, self.watermark_fn)   # events and the audio source's batches
        if not batch.count() and now - self._last_batch_ns < self.heartbeat_ns:
            return
        # an empty batch once per beat carries the watermark: with no audio (lost) and an idle
        # candidate the recorder would otherwise declare the capture's watermark stalled
        self._last_batch_ns = now
        self.outbox.append(frame(BATCH, encode_batch(batch, HANDOVER_ZLIB_LEVEL)))
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
