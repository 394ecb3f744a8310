"""Station side of the streaming protocol (``station.protocol``, ``docs/protocol.md``).

One ``Publisher`` per recorder process. It owns a ZeroMQ context with

- a ZAP authenticator (``zmq.auth.thread.ThreadAuthenticator`` on the same context, started
  before any bind and kept until ``stop``) that admits only the console keys of the allow-list
  directory (``station.keys.AllowList``, re-read when it changes);
- a PUB socket (CURVE server) for live messages;
- a ROUTER socket (CURVE server, MAXMSGSIZE = ``publisher.max_request_bytes``) answering
  snapshot, replay (served from the journal, chunked), command and clock requests.

Threads: every socket is used by the publisher thread only. ``publish`` and ``switch_session``
are thread-safe and never block: they append to a bounded queue and wake the thread through a
pipe. Commands are handed to ``on_command`` on a separate command thread (one command at a time)
so a slow journal commit never holds up live messages; retries with the same ``cmd_id`` are
answered from a cache instead of being journaled twice.

Failure modes: bad configuration or keys raise ``ConfigError`` / ``UserError`` from ``start``
(address in use, missing key, non-loopback bind in plaintext mode). After that nothing a peer
sends can stop the thread: malformed, oversized, unauthorised or foreign-version input is counted
in ``stats()`` and dropped (answered with an error when it came from an authorised console).
When the hand-over queue is full (``publisher.queue_max``) messages are not published live but
stay in the journal, where consoles fetch them by replay (``stats()["dropped_queue"]``).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from station import keys, protocol
from station.clock import monotonic_ns
from station.config import ConfigError
from station.errors import UserError
from station.osthread import named

log = logging.getLogger(__name__)

_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
           zmq.EVENT_HANDSHAKE_FAILED_AUTH}
_MONITORED = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
COMMAND_CACHE = 10_000  # cmd_ids remembered for idempotent retries
OLDER_SESSIONS = 8      # this station's most recent earlier sessions served after a restart
ZAP_DOMAIN = "station"


def _default_open(path: Path):
    from station.recorder.journal import Journal  # imported late: the journal module is optional for protocol use
    return Journal.open(path)


class Publisher:
    """Publishes journaled messages and serves consoles. See the module docstring.

    cfg: the station Config (uses cfg.publisher, cfg.station and the key paths).
    header: the session's journal.SessionHeader; journal_path: its journal file.
    on_command(cmd) -> dict: journals a validated command (see protocol.validate_command, with
    assessor_id/assessor_name from the sending key's binding, plus key_fp, console_key,
    console_name, received_t_ns) and returns the ack body; may raise UserError or
    ValueError to refuse it (the message goes back to the console).
    clock: the station clock (the recorder's; a virtual clock for scenario stations).
    """

    def __init__(self, cfg, header, journal_path: Path, on_command: Callable[[dict], dict],
                 *, journal_open: Callable[[Path], Any] = _default_open,
                 clock: Callable[[], int] = monotonic_ns):
        self.cfg = cfg
        self.clock = clock          # the recorder's station clock (clock probes, snapshot, commands)
        self.pcfg = cfg.publisher
        self.station_id = header.station_id
        self.on_command = on_command
        self._journal_open = journal_open
        self._sessions: dict[str, tuple[Any, Path]] = {header.session_id: (header, Path(journal_path))}
        self._header = header
        self._last_known: dict[str, int] = {}   # last seq of earlier sessions (they no longer grow)
        self._q: collections.deque = collections.deque()
        self._stats: collections.Counter = collections.Counter()
        self._stats_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._cmd_thread: threading.Thread | None = None
        self._cmd_q: collections.deque = collections.deque()
        self._cmd_wake = threading.Condition()
        self._running = False
        self.ctx: zmq.Context | None = None
        self.auth = None
        self.allow: keys.AllowList | None = None
        self.pub_endpoint = self.req_endpoint = ""

    # ------------------------------------------------------------------ public API (any thread)

    def start(self) -> None:
        """Check keys and config, start the authenticator, bind, start the threads."""
        p = self.pcfg
        plaintext = p.allow_plaintext_loopback
        if plaintext:
            for name in ("pub_bind", "req_bind"):
                ep = getattr(p, name)
                if not keys.is_loopback(ep):
                    raise ConfigError(f"publisher.{name} = {ep!r}: with allow_plaintext_loopback "
                                      "= true only loopback endpoints (tcp://127.0.0.1:PORT, "
                                      "ipc://...) are allowed")
        else:
            pub_key, sec_key = keys.load_secret(keys.station_secret_file(self.cfg))
        self.ctx = zmq.Context()
        try:
            if not plaintext:
                from zmq.auth.thread import ThreadAuthenticator
                self.allow = keys.AllowList(keys.allow_dir(self.cfg))
                self.auth = ThreadAuthenticator(self.ctx)
                self.auth.start()
                self.auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.allow)
            self.pub = self.ctx.socket(zmq.PUB)
            self.router = self.ctx.socket(zmq.ROUTER)
            for s in (self.pub, self.router):
                s.linger = 0
                s.setsockopt(zmq.MAXMSGSIZE, p.max_request_bytes)
                s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
                s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
                if not plaintext:
                    s.curve_server = True
                    s.curve_publickey = pub_key
                    s.curve_secretkey = sec_key
                    s.zap_domain = ZAP_DOMAIN.encode()
            self.pub.sndhwm = p.send_hwm
            self.router.sndhwm = 1000
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.monitors = [self.pub.get_monitor_socket(_MONITORED),
                             self.router.get_monitor_socket(_MONITORED)]
            try:
                self.pub.bind(p.pub_bind)
                self.router.bind(p.req_bind)
            except zmq.ZMQError as e:
                raise UserError(f"cannot bind the publisher ({p.pub_bind}, {p.req_bind}): {e}") from None
            self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.req_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self._close_all()
            raise
        self._register_older(self._sessions[self._header.session_id][1])
        self._running = True
        self._thread = threading.Thread(target=named(self._run), name="publisher", daemon=True)
        self._cmd_thread = threading.Thread(target=named(self._run_commands), name="publisher-commands",
                                            daemon=True)
        self._thread.start()
        self._cmd_thread.start()

    def publish(self, seq: int, kind: str, t_ns: int, body: bytes) -> None:
        """Hand one journaled message over for live publication. Thread-safe, never blocks."""
        if len(self._q) >= self.pcfg.queue_max:
            self._count("dropped_queue")
            return
        self._q.append(("msg", seq, kind, t_ns, bytes(body)))
        self._wake()

    def switch_session(self, header, journal_path: Path) -> None:
        """A new session started: later messages belong to it (ordered with publish calls)."""
        self._q.append(("switch", header, Path(journal_path)))
        self._wake()

    def stats(self) -> dict[str, int]:
        """Counters: published, dropped_queue, requests, malformed, schema_refused, oversized,
        unauthorised, handshake_failed, connections, disconnects, snapshots, replays_served,
        replay_messages, commands, command_duplicates, command_errors, clock_probes,
        reply_dropped, errors, allowed_keys."""
        with self._stats_lock:
            out = dict(self._stats)
        if self.allow is not None:
            out["unauthorised"] = self.allow.rejected
            out["allowed_keys"] = len(self.allow)
        for k in ("published", "malformed", "unauthorised", "oversized", "replays_served",
                  "schema_refused", "handshake_failed", "commands", "errors"):
            out.setdefault(k, 0)
        return out

    def stop(self) -> None:
        """Stop the threads and close every socket (idempotent)."""
        if self._running:
            self._running = False
            self._q.append(("stop",))
            self._wake()
            with self._cmd_wake:
                self._cmd_wake.notify_all()
            for t in (self._thread, self._cmd_thread):
                if t is not None:
                    t.join(timeout=10)
        self._close_all()

    # ------------------------------------------------------------------ internals

    def _close_all(self) -> None:
        if self.auth is not None:
            try:
                self.auth.stop()
            except Exception:
                pass
            self.auth = None
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (thread will wake anyway) or closed (stopped)

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _run(self) -> None:
        self._journals: dict[str, Any] = {}
        self._ring: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self._last_pub = -1
        self._cmd_cache: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._cmd_pending: dict[str, list[tuple[bytes, int]]] = {}
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        for m in self.monitors:
            poller.register(m, zmq.POLLIN)
        try:
            while True:
                try:
                    ready = dict(poller.poll(1000))
                    if self._wake_r in ready:
                        try:
                            os.read(self._wake_r, 65536)
                        except BlockingIOError:
                            pass
                    if not self._drain_queue():
                        return
                    if self.router in ready:
                        self._serve_requests()
                    for m in self.monitors:
                        if m in ready:
                            self._drain_monitor(m)
                except Exception:  # never let one bad case end the publisher
                    self._count("errors")
                    log.exception("publisher loop error")
        finally:
            for j in self._journals.values():
                try:
                    j.close()
                except Exception:
                    pass
            for s in [self.pub, self.router, *self.monitors]:
                s.close(linger=0)

    def _drain_queue(self) -> bool:
        q = self._q
        while q:
            item = q.popleft()
            if item[0] == "msg":
                _, seq, kind, t_ns, body = item
                h = self._header
                wall = h.wall_ns(t_ns)
                frames = protocol.encode_live(self.station_id, h.session_id, seq, kind, t_ns, wall, body)
                self.pub.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                self._count("published")
                self._last_pub = max(self._last_pub, seq)
                ring_max = self.pcfg.recent_messages
                if ring_max:
                    self._ring[seq] = (seq, kind, t_ns, wall, body)
                    while len(self._ring) > ring_max:
                        self._ring.popitem(last=False)
            elif item[0] == "switch":
                _, header, path = item
                self._sessions[header.session_id] = (header, path)
                self._header = header
                self._ring.clear()
                self._last_pub = -1
                self.station_id = header.station_id
            elif item[0] == "reply":
                self._send(item[1], item[2])
            elif item[0] == "cmd_done":
                self._command_done(*item[1:])
            elif item[0] == "stop":
                return False
        return True

    def _send(self, ident: bytes, frames: list[bytes]) -> None:
        try:
            self.router.send_multipart([ident, *frames], flags=zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            self._count("reply_dropped")  # peer gone or its queue full; it will ask again

    def _drain_monitor(self, mon) -> None:
        while True:
            try:
                msg = mon.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                ev = parse_monitor_message(msg)["event"]
            except Exception:
                continue
            if ev in _FAILED:
                self._count("handshake_failed")
            elif ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._count("connections")
            elif ev == zmq.EVENT_DISCONNECTED:
                self._count("disconnects")

    def _serve_requests(self) -> None:
        for _ in range(200):  # bounded, so live messages keep flowing under a request flood
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._count("requests")
            ident = frames[0].bytes
            body = [f.bytes for f in frames[1:]]
            if sum(len(b) for b in body) > self.pcfg.max_request_bytes:
                self._count("oversized")
                self._send(ident, protocol.encode_error("snapshot", 0, "oversized",
                                                        "request larger than the station accepts"))
                continue
            try:
                req = protocol.decode_request(body)
            except protocol.SchemaError as e:
                self._count("schema_refused")
                self._send(ident, protocol.encode_error("snapshot", 0, "schema", str(e)))
                continue
            except protocol.ProtocolError as e:
                self._count("malformed")
                self._send(ident, protocol.encode_error("snapshot", 0, "malformed", str(e)))
                continue
            try:
                user = frames[-1].get("User-Id") or ""
            except zmq.ZMQError:
                user = ""
            self._handle(ident, req, user)

    def _handle(self, ident: bytes, req: dict, user: str) -> None:
        op, rid = req["op"], req["id"]
        if op == "clock":
            self._count("clock_probes")
            self._send(ident, protocol.encode_reply("clock", rid, t_ns=self.clock()))
        elif op == "snapshot":
            self._count("snapshots")
            self._send(ident, self._snapshot(rid))
        elif op == "replay":
            self._send(ident, self._replay(rid, req))
        elif op == "command":
            self._command(ident, rid, req["cmd"], user)

    # -- snapshot / replay

    def _journal(self, session: str):
        j = self._journals.get(session)
        if j is None:
            _, path = self._sessions[session]
            j = self._journal_open(path)
            if len(self._journals) >= 4:  # keep a few open, the current one always
                for k in list(self._journals):
                    if k != self._header.session_id:
                        try:
                            self._journals.pop(k).close()
                        except Exception:
                            pass
                        break
            self._journals[session] = j
        return j

    def _register_older(self, current: Path) -> None:
        """A restarted station still serves its earlier sessions: the ``OLDER_SESSIONS`` most
        recent journals of this station beside the current one (snapshot ``previous_sessions``,
        replay), so a console that missed their tail can still fill it. Unreadable journals and
        those of another station are skipped."""
        d = Path(current).parent
        try:
            names = sorted(p for p in d.iterdir() if p.name.startswith(f"{self.station_id}-")
                           and p.name.endswith(".journal") and p != Path(current))
        except OSError:
            return
        for path in names[-OLDER_SESSIONS:]:
            try:
                j = self._journal_open(path)
                try:
                    h, last = j.header, int(j.last_seq() or 0)
                finally:
                    j.close()
            except Exception as e:
                log.warning("earlier session %s not served: %s", path, e)
                continue
            if h.station_id == self.station_id and h.session_id not in self._sessions:
                self._sessions[h.session_id] = (h, path)
                self._last_known[h.session_id] = last

    def _last_seq(self, session: str) -> int:
        if session != self._header.session_id and session in self._last_known:
            return self._last_known[session]
        j = self._journal(session)
        last = int(j.last_seq() or 0)
        if session == self._header.session_id:
            last = max(last, self._last_pub)
        else:
            self._last_known[session] = last   # an ended session: its journal is complete
        return last

    def _snapshot(self, rid: int) -> list[bytes]:
        h = self._header
        try:
            last = self._last_seq(h.session_id)
            sessions = []
            for sid, (hdr, _) in self._sessions.items():
                if sid != h.session_id:
                    sessions.append([sid, self._last_seq(sid)])
        except Exception as e:
            self._count("errors")
            return protocol.encode_error("snapshot", rid, "journal", f"journal unavailable: {e}")
        return protocol.encode_reply(
            "snapshot", rid, station=self.station_id, session=h.session_id, last_seq=last,
            created_wall_ns=int(getattr(h, "created_wall_ns", 0)),
            created_mono_ns=int(getattr(h, "created_mono_ns", 0)),
            software_version=str(getattr(h, "software_version", "")),
            boot_id=str(getattr(h, "boot_id", "")),
            config_hash=str(getattr(h, "config_hash", "")),
            station_t_ns=self.clock(), previous_sessions=sessions)

    def _replay(self, rid: int, req: dict) -> list[bytes]:
        session, lo, hi = req["session"], req["from_seq"], req["to_seq"]
        if session not in self._sessions:
            return protocol.encode_error("replay", rid, "unknown_session",
                                         f"session {session} is not held by this station process")
        max_bytes, max_n = self.pcfg.replay_chunk_bytes, self.pcfg.replay_chunk_messages
        entries: list[tuple] = []
        nbytes = 0
        nxt = lo
        full = False
        try:
            header, _ = self._sessions[session]
            j = self._journal(session)
            ring = self._ring if session == self._header.session_id else {}
            ring_lo = next(iter(ring)) if ring else None
            if ring_lo is None or lo < ring_lo:
                top = hi if ring_lo is None else min(hi, ring_lo - 1)
                for m in j.iter_messages(lo, top):
                    if m.seq < nxt or m.seq > top:
                        continue
                    entries.append((m.seq, m.kind, m.t_ns, header.wall_ns(m.t_ns), bytes(m.body)))
                    nbytes += len(m.body)
                    nxt = m.seq + 1
                    if nbytes >= max_bytes or len(entries) >= max_n:
                        full = True
                        break
            journal_last = int(j.last_seq() or 0)  # 0: nothing committed (seqs start at 1)
            if (not full and ring_lo is not None and nxt < ring_lo
                    and (journal_last >= ring_lo - 1 or (journal_last <= 0 and not entries))):
                # the journal holds nothing more below the ring (or nothing at all yet, and the
                # ring holds the session from its start): continue from the ring
                nxt = ring_lo
            if not full and ring_lo is not None and nxt >= ring_lo:
                while nxt <= hi and nxt in ring:
                    e = ring[nxt]
                    entries.append(e)
                    nbytes += len(e[4])
                    nxt += 1
                    if nbytes >= max_bytes or len(entries) >= max_n:
                        full = True
                        break
        except Exception as e:
            self._count("errors")
            return protocol.encode_error("replay", rid, "journal", f"journal unavailable: {e}")
        self._count("replays_served")
        self._count("replay_messages", len(entries))
        served_to = nxt - 1
        # Everything in [from_seq, served_to] that is not in the payload does not exist on the
        # station (a hole in the journal); served_to < to_seq with more = false means "not yet".
        return protocol.encode_reply(
            "replay", rid, payload=protocol.encode_replay_payload(entries), session=session,
            from_seq=lo, served_to=served_to, more=full and served_to < hi,
            last_seq=max(journal_last, self._last_pub if session == self._header.session_id else -1),
            journal_last=journal_last)

    # -- commands

    def _command(self, ident: bytes, rid: int, cmd: dict, user: str) -> None:
        """Assessor = key: with CURVE the assessor is the one the sending key is bound to
        (``keys.AllowList.assessor_of``), whatever id the message claims, and the key's
        fingerprint travels with the command into the journal; a key bound to nobody is refused.
        Plaintext (demo, loopback only): the claimed id, and no fingerprint."""
        self._count("commands")
        fp = keys.fingerprint(user) if user else ""
        if self.allow is not None:
            bound = self.allow.assessor_of(user) if user else None
            if bound is None:
                self._count("command_errors")
                self._count("commands_unbound")
                self._send(ident, protocol.encode_reply(
                    "command", rid, ok=False, code="refused", cmd_id=cmd["cmd_id"],
                    error=f"this console key ({fp[:16]}) may follow the station but is bound to no "
                          "assessor: run `station keys authorize KEY --assessor-id ID` on the station"))
                return
            cmd = dict(cmd, assessor_id=bound[0], assessor_name=bound[1] or bound[0])
        cmd = dict(cmd, key_fp=fp)
        key = f"{fp}/{cmd['cmd_id']}"   # one key cannot collect another key's acknowledgements
        if key in self._cmd_cache:
            self._count("command_duplicates")
            self._send(ident, protocol.encode_reply("command", rid, **self._cmd_cache[key]))
            return
        if key in self._cmd_pending:
            self._count("command_duplicates")
            self._cmd_pending[key].append((ident, rid))
            return
        self._cmd_pending[key] = [(ident, rid)]
        cmd = dict(cmd, cmd_key=key, console_key=user,
                   console_name=self.allow.name_of(user) if self.allow and user else "",
                   received_t_ns=self.clock())
        with self._cmd_wake:
            self._cmd_q.append(cmd)
            self._cmd_wake.notify()

    def _run_commands(self) -> None:
        while True:
            with self._cmd_wake:
                while not self._cmd_q and self._running:
                    self._cmd_wake.wait(1.0)
                if not self._running:
                    return
                cmd = self._cmd_q.popleft()
            try:
                ack = self.on_command(cmd)
                protocol.packb(ack)  # must travel
                result = {"ok": True, "ack": ack if isinstance(ack, dict) else {"value": ack}}
            except (UserError, ValueError) as e:
                self._count("command_errors")
                result = {"ok": False, "code": "refused", "error": str(e)[:900]}
            except Exception as e:
                self._count("command_errors")
                log.exception("on_command failed")
                result = {"ok": False, "code": "error", "error": f"station error: {type(e).__name__}"}
            self._q.append(("cmd_done", cmd["cmd_key"], cmd["cmd_id"], result))
            self._wake()

    def _command_done(self, key: str, cmd_id: str, result: dict) -> None:
        fields = dict(result, cmd_id=cmd_id)
        if result["ok"]:  # a refused command may be retried after the cause is fixed
            self._cmd_cache[key] = fields
            while len(self._cmd_cache) > COMMAND_CACHE:
                self._cmd_cache.popitem(last=False)
        for ident, rid in self._cmd_pending.pop(key, []):
            self._send(ident, protocol.encode_reply("command", rid, **fields))
