"""Recorder side of the capture -> recorder hand-over (wire format: ``station.handover``).

Who may speak: only a process of the capture account (``allowed_uids``, checked with
``SO_PEERCRED`` on every connection, and, when ``allowed_exes`` is set, the peer's executable),
one link at a time. A refused peer is closed before a byte is sent (it learns nothing, not even
the station id) and journaled as ``IntegrityEvent("peer_refused" | "second_link")`` with its uid,
pid and executable. What it may say: ``plausibility.LinkChecks`` (capture streams only, no
future or backfilled stamps, hardware rates), and no frame that decompresses past a small
multiple of its wire size. The link's state is journaled as ``SourceHealth("capture", ...)``:
"lost" from the server's start until the first HELLO ("capture not connected"), when the link
drops or goes silent for ``gap_alert_ms`` (a data gap in the report, an alert at the consoles),
"ok" with the peer's pid, executable, uid and software when it (re)connects.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgpack

from station import software
from station.clock import monotonic_ns
from station.errors import UserError
from station.eventqueue import EventQueue
from station.events import DEFAULT_LAG_NS, FormatError, IntegrityEvent, SourceHealth, TooLargeError, decode_batch
from station.handover import ACK, BATCH, BEAT, CAPTURE_SOURCES, HELLO, PROTO, SIMULATED_SOURCES, FrameReader, frame
from station.osthread import named
from station.recorder.plausibility import LinkChecks
from station.watermark import StallGuard

log = logging.getLogger(__name__)
INTEGRITY_AGGREGATE_NS = 1_000_000_000   # connection-level integrity events journaled at most once a second per kind


@dataclass
class LinkPolicy:
    """Who may connect and what the recorder accepts from the link.

    allowed_uids: peer uids accepted (the capture account). allowed_exes: real paths of the
    executables a peer may run (empty: any). exam_mode: refuse simulated (scenario) sources.
    software: this recorder's ``station.software.identity()``, compared with the capture's.
    frame_ms: speech frame length (rate cap). max_future_ms: how far ahead an event may be
    stamped. max_decoded_ratio / max_decoded_bytes: a batch may decompress to at most
    min(ratio x wire size (at least 64 KiB), bytes). max_batch_rows: rows per stream per batch."""

    allowed_uids: frozenset[int]
    allowed_exes: frozenset[str] = frozenset()
    exam_mode: bool = False
    software: dict = field(default_factory=dict)
    frame_ms: int = 20
    max_future_ms: int = 250
    max_decoded_ratio: int = 64
    max_decoded_bytes: int = 8 * 1024 * 1024
    max_batch_rows: int = 100_000

    @classmethod
    def from_config(cls, cfg) -> "LinkPolicy":
        """From [handover] and [station]: ``capture_user`` ("" = this process's own account),
        ``capture_exe`` ([] = this process's interpreter), ``station.mode``."""
        h = cfg.handover
        uids = {_uid_of(h.capture_user)} if h.capture_user else {os.getuid()}
        exes = {os.path.realpath(e) for e in h.capture_exe} if h.capture_exe else {os.path.realpath(sys.executable)}
        return cls(frozenset(uids), frozenset(exes), cfg.station.mode == "exam", software.identity(),
                   cfg.audio.frame_ms, h.max_future_ms, h.max_decoded_ratio, h.max_decoded_bytes,
                   h.max_batch_rows)

    def refusal(self, uid: int, exe: str) -> str | None:
        """Why a peer is refused (None: accepted). The uid comes from the kernel and is the check
        that matters. The executable is checked when the recorder can see it (``exe`` not ""):
        a process of another account is invisible to an unprivileged recorder (/proc/PID/exe
        needs ptrace rights; systemd's ProtectProc=invisible hides it), so across accounts the
        uid stands alone and the link's health says "executable not visible"."""
        if uid not in self.allowed_uids:
            return f"uid {uid} is not the capture account (allowed: {', '.join(map(str, sorted(self.allowed_uids)))})"
        if exe and self.allowed_exes and os.path.realpath(exe) not in self.allowed_exes:
            return f"executable {exe} is not the station's interpreter"
        return None


def _uid_of(user: str) -> int:
    import pwd

    from station.errors import UserError
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UserError(f"handover.capture_user = {user!r}: no such account on this machine "
                        "(`station install` creates station-capture)", exit_code=2) from None


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a Unix socket's peer, from the kernel (SO_PEERCRED: cannot be forged)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


class HandoverServer:
    """Recorder side: accepts the capture's link (see module docstring), feeds its events into
    ``queue``. Nothing a peer sends raises out of the thread; ``stats`` counts what happened."""

    def __init__(self, path: Path, queue: EventQueue, *, station_id: str, max_frame_bytes: int,
                 gap_alert_ms: int, clock: Callable[[], int] = monotonic_ns, policy: LinkPolicy | None = None):
        self.path = Path(path)
        self.queue = queue
        self.station_id = station_id
        self.max_frame_bytes = max_frame_bytes
        self.gap_ns = gap_alert_ms * 1_000_000
        self.clock = clock
        self.policy = policy or LinkPolicy(frozenset({os.getuid()}))
        self.checks = LinkChecks(self.policy.frame_ms, self.policy.max_future_ms * 1_000_000)
        self.stats = collections.Counter()
        self.capture_watermark: int | None = None
        self._stall = StallGuard(queue)     # see watermark()
        self.last_frame_ns: int | None = None
        self.peer: dict[str, Any] = {}
        self.link_state = "waiting"     # waiting | ok | lost
        self.link_detail = "capture not connected"
        self.connected_detail = "capture connected"
        self.capture_status: dict = {}
        self.source_health: dict[str, SourceHealth] = {}   # the capture's sources, last reported
        self._integrity_last: dict[str, int] = {}
        self._integrity_held: dict[str, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._hello = False

    def start(self) -> None:
        """Bind the socket (its directory is the deployment's business: /run/station, 0750,
        reachable by the capture account only) and start serving. From now until the first HELLO
        the capture counts as lost: a data gap, and no exam start. An operator problem (directory
        not writable, path too long, a directory in the way) raises ``UserError`` naming the path,
        the reason and the key."""
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
        self.queue.put(SourceHealth(self.clock(), "capture", "lost", self.link_detail))
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

    def health_now(self) -> list:
        """The link's and the capture's sources' current states as events stamped now: what a
        new session starts with (``Recorder.initial_health``)."""
        now = self.clock()
        state = "ok" if self.link_state == "ok" else "lost"
        out = [SourceHealth(now, "capture", state, self.link_detail)]
        if state == "ok":
            out += [SourceHealth(now, h.source, h.state, h.detail) for h in self.source_health.values()]
        return out

    def status(self) -> dict:
        """For the health beat: link state, peer, the capture's own status and counters."""
        return {"link": self.link_state, **self.capture_status, "peer": dict(self.peer), "stats": dict(self.stats)}

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "listen")
        while not self._stop.is_set():
            try:
                events = sel.select(timeout=0.1)
                # read the live link first: a capture that just died (EOF) must not make its
                # successor's connection look like a second link
                for key, _ in sorted(events, key=lambda e: e[0].data == "listen"):
                    if key.data == "listen":
                        self._accept(sel)
                    elif self._conn is not None and key.fileobj is self._conn:
                        self._read(sel)
                self._check_gap()
                self._flush_integrity()
            except Exception as e:  # never let the server thread die
                self.stats["errors"] += 1
                log.exception("hand-over server error: %s", e)
                time.sleep(0.1)
        sel.close()

    def _integrity(self, kind: str, detail: str, count: int = 1) -> None:
        """Journal an integrity event. Connection floods (a loop of refused connects) are
        aggregated: after one event of a kind, the next ones within INTEGRITY_AGGREGATE_NS are
        counted and journaled together (with the last detail) when that time has passed."""
        self.stats[kind] += count
        now = self.clock()
        last = self._integrity_last.get(kind)
        if last is not None and now - last < INTEGRITY_AGGREGATE_NS:
            n, _ = self._integrity_held.get(kind, (0, ""))
            self._integrity_held[kind] = (n + count, detail)
            return
        log.warning("hand-over: %s: %s", kind, detail)
        self._integrity_last[kind] = now
        self.queue.put(IntegrityEvent(now, kind, detail[:300], count))

    def _flush_integrity(self) -> None:
        now = self.clock()
        for kind, (n, detail) in list(self._integrity_held.items()):
            if now - self._integrity_last[kind] >= INTEGRITY_AGGREGATE_NS:
                del self._integrity_held[kind]
                self._integrity_last[kind] = now
                log.warning("hand-over: %s x%d: %s", kind, n, detail)
                self.queue.put(IntegrityEvent(now, kind, f"{n} more: {detail}"[:300], n))

    def _accept(self, sel) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        try:
            pid, uid, gid = peer_credentials(conn)
        except OSError:
            pid, uid, gid = 0, -1, -1
        exe = software.exe_of(pid)
        who = f"uid {uid}, pid {pid}, {exe or 'executable not visible'}"
        reason = self.policy.refusal(uid, exe)
        if reason is not None:
            conn.close()
            self._integrity("peer_refused", f"{who}: {reason}")
            return
        if self._conn is not None and not self._link_dead():
            conn.close()
            self._integrity("second_link", f"{who}: a capture link is live (pid {self.peer.get('pid')}); refused")
            return
        if self._conn is not None:
            self._drop(sel, "capture gone (replaced by a new connection)")
        conn.setblocking(False)
        self._conn, self._reader, self._hello = conn, FrameReader(self.max_frame_bytes), False
        self.peer = {"pid": pid, "uid": uid, "gid": gid, "exe": exe}
        sel.register(conn, selectors.EVENT_READ, "conn")
        self.stats["connections"] += 1

    def _link_dead(self) -> bool:
        """Has the live link's peer gone (EOF waiting, or its process no longer exists)?"""
        try:
            if self._conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        pid = self.peer.get("pid")
        if pid:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return False

    def _drop(self, sel, reason: str) -> None:
        log.warning("hand-over link dropped: %s", reason)
        if self._conn is not None:
            sel.unregister(self._conn)
            self._conn.close()
        was_up = self._hello and self.link_state == "ok"
        self._conn, self._hello = None, False
        if was_up:
            self.link_state = "lost"
            self.link_detail = f"capture link closed: {reason} (pid {self.peer.get('pid')}, {self.peer.get('exe') or '?'})"
            self.queue.put(SourceHealth(self.clock(), "capture", "lost", self.link_detail[:200]))

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
            self._integrity("oversized_frame", f"pid {self.peer.get('pid')}: {e}")
            self._drop(sel, str(e))
            return
        for kind, payload in frames:
            if not self._handle(kind, payload):
                self.stats["malformed"] += 1
                self._integrity("malformed_frame", f"pid {self.peer.get('pid')}: {kind!r} frame of {len(payload)} bytes")
                self._drop(sel, f"malformed {kind!r} frame")
                return
            if self._conn is None:      # the frame's handler ended the link
                return

    def _handle(self, kind: bytes, payload: bytes) -> bool:
        now = self.clock()
        if kind == HELLO:
            return self._on_hello(payload, now)
        if not self._hello:
            return False
        if kind == BATCH:
            return self._on_batch(payload, now)
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

    def _on_hello(self, payload: bytes, now: int) -> bool:
        try:
            hello = msgpack.unpackb(payload, raw=False)
            proto = hello["proto"]
        except Exception:
            return False
        sources = hello.get("sources") if isinstance(hello.get("sources"), list) else []
        sources = [str(x)[:32] for x in sources][:16]
        theirs = hello.get("software") if isinstance(hello.get("software"), dict) else {}
        error = ""
        if proto != PROTO:
            error = f"protocol {proto} not supported (this recorder speaks {PROTO})"
        elif hello.get("station_id") != self.station_id:
            error = f"capture is for station {hello.get('station_id')!r}, this is {self.station_id!r}"
        elif self.policy.exam_mode and SIMULATED_SOURCES.intersection(sources):
            error = "simulated (scenario) sources are refused: this station is in exam mode"
            self._integrity("scenario_refused", f"pid {self.peer.get('pid')} announced {', '.join(sources)}")
        if error:
            log.error("capture refused: %s", error)
            self.stats["refused"] += 1
        try:
            self._conn.sendall(frame(ACK, msgpack.packb({"proto": PROTO, "ok": not error, "error": error})))
        except OSError:
            return False
        if error:
            return False
        self._hello = True
        ours = self.policy.software
        version, sha = str(theirs.get("version", "?"))[:32], str(theirs.get("sha256", "?"))[:64]
        self.peer.update(capture_pid=hello.get("pid"), sources=sources, software={"version": version, "sha256": sha})
        if ours and (version != ours.get("version") or sha != ours.get("sha256")):
            self._integrity("software_mismatch", f"capture runs station {version} ({sha[:12]}), "
                            f"the recorder {ours.get('version')} ({str(ours.get('sha256'))[:12]})")
        writable = theirs.get("writable_by_others")
        if isinstance(writable, list) and writable:
            self._integrity("software_writable", f"capture's code: {'; '.join(map(str, writable))}"[:300])
        simulated = bool(SIMULATED_SOURCES.intersection(sources))
        if simulated:
            self._integrity("simulated", f"capture pid {self.peer.get('pid')} plays {', '.join(sources)}")
        self.checks.max_future_ns = None if simulated else self.policy.max_future_ms * 1_000_000
        self.connected_detail = self.link_detail = (f"capture connected: pid {self.peer.get('pid')}, {self.peer.get('exe') or 'executable not visible'}, "
                            f"uid {self.peer.get('uid')}; station {version} sha256 {sha[:12]}")[:200]
        self.link_state = "lost"          # so that _mark_alive journals the "ok" with this detail
        self._mark_alive(now)
        return True

    def _on_batch(self, payload: bytes, now: int) -> bool:
        p = self.policy
        limit = min(p.max_decoded_bytes, max(64 * 1024, p.max_decoded_ratio * len(payload)))
        try:
            batch = decode_batch(payload, max_decoded_bytes=limit, max_rows=p.max_batch_rows)
        except TooLargeError as e:
            self._integrity("oversized_frame", f"pid {self.peer.get('pid')}: {len(payload)} bytes on the wire: {e}")
            self._mark_alive(now)
            return True              # the frame is dropped, the link stays (its data gap is the frame)
        except FormatError:
            return False
        batch, problems = self.checks.check(batch, now)
        for ev in problems:
            self.stats[ev.kind] += ev.count
            self.queue.put(ev)
        for ev in batch.events("health"):
            if ev.source in CAPTURE_SOURCES:
                self.source_health[ev.source] = ev
        self.queue.put_batch(batch)
        self.capture_watermark = batch.watermark_ns
        self.stats["batches"] += 1
        self._mark_alive(now)
        return True

    def _mark_alive(self, now: int) -> None:
        self.last_frame_ns = now
        if self.link_state != "ok":
            self.link_detail = self.connected_detail
            self.queue.put(SourceHealth(now, "capture", "ok", self.link_detail))
            self.link_state = "ok"

    def _check_gap(self) -> None:
        if self.link_state != "ok" or self.last_frame_ns is None:
            return
        now = self.clock()
        if now - self.last_frame_ns >= self.gap_ns:
            self.link_detail = f"no data from the capture process for {self.gap_ns // 1_000_000} ms"
            self.queue.put(SourceHealth(self.last_frame_ns, "capture", "lost", self.link_detail))
            self.link_state = "lost"   # only now may watermark() pass the capture: its loss is queued
