"""Capture -> recorder hand-over over a local Unix socket: the wire format and its vocabulary.

In the exam deployment the sources run in a *capture* process (account ``station-capture``, never
the candidate) beside the candidate's graphical session and hand their events to the *recorder*
(a system service under the account ``station``). The link:

- **one peer**: the recorder accepts only the capture account (``SO_PEERCRED`` uid, and the
  peer's executable) and one link at a time; anything else is refused before a byte is sent and
  journaled as an ``IntegrityEvent`` (docs/security.md);
- **only capture streams** (``CAPTURE_STREAMS``; health only of ``CAPTURE_SOURCES``): exam
  control, assessor marks and contact markers come from authenticated consoles only;

- **framed**: each frame is a 4-byte big-endian length, then one type byte, then the payload;
- **versioned**: the capture's first frame is HELLO ``{"proto": PROTO, "station_id", "pid",
  "boot_id", "sources": [names], "software": {"version", "sha256"}}``; the recorder answers ACK
  ``{"proto", "ok", "error"?}`` and drops a link of another major version with a clear log line;
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

import logging
import struct
from pathlib import Path

log = logging.getLogger(__name__)
PROTO = 1
CAPTURE_STREAMS = frozenset({"speech", "key", "mouse", "click", "scroll", "focus", "health", "device"})
CAPTURE_SOURCES = frozenset({"audio", "input", "focus", "scenario"})   # health a capture may report
SIMULATED_SOURCES = frozenset({"scenario"})                            # demo and test data
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


def handover_path(cfg, data_dir) -> Path:
    """The hand-over socket: ``handover.socket``, or ``capture.sock`` in the data directory."""
    return Path(cfg.handover.socket) if cfg.handover.socket else Path(data_dir) / "capture.sock"
