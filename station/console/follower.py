"""Console side of the streaming protocol: follow N stations, lose nothing, store everything.

``Console`` runs one I/O loop that owns every ZeroMQ socket and the writer connection of the
console's SQLite store (``ConsoleStore``). The application's own thread runs it while it waits in
``poll()``, and an asyncio event loop runs it from the first ``apoll()`` on (a reader on the epoll
descriptor); the console's I/O thread runs it whenever no application has waited for
``LEAD_GRACE_NS`` (the application busy, its event loop blocked or gone), so messages are stored
all the time; one lock decides who runs it. Running it in the application's thread saves the
hand-over per delivery (a thread wake-up and the GIL hand-over: a fifth of the CPU with
``apoll()``, docs/protocol.md). Per configured station it keeps a SUB socket (or one shared SUB to
a ``station proxy``) and a DEALER for requests, both CURVE clients that pin the station's public
key. It follows zguide's Clone pattern:

1. subscribe first (live messages are stored as they come),
2. ask the snapshot (session id and last sequence number),
3. fetch what is missing by replay (from the last stored sequence number + 1, so a restarted
   console does not fetch again what it has), dropping what is already stored,
4. later gaps (a live seq beyond the next expected one) and a lost tail (found by the periodic
   snapshot or the 1 Hz health beat) are filled the same way.

Messages are delivered to the application exactly once and in sequence order per session (a
message that arrives ahead of a gap waits until the gap is filled); each is in the
store before it is delivered. The I/O loop waits in epoll on the sockets' ``ZMQ_FD``; each
wake-up reads what waits, stores it with one write to the store's recent log and then delivers
it (see ``_iteration``); every ``MOVE_NS`` the recent log goes into SQLite in one transaction. Session progress (``next_seq``) is saved about once a second (``PROGRESS_NS``),
at once when it jumps over a gap; a restarted console resumes past what it stored meanwhile. A sequence number the station no longer holds is recorded in the
store's ``gaps`` table (and counted as ``lost``) instead of being waited for forever.

Clock: each station's offset (station monotonic ns minus console monotonic ns) is estimated from
``console.clock_probes`` NTP-style probes (the lowest round trip wins; the error bound is half of
it) and re-estimated every ``console.clock_probe_interval_s``.

State per station: ``connecting`` (never heard from), ``connected`` (a message within
``console.stale_ms``), ``stale``, ``unauthorised`` (the CURVE handshake failed: this console's key
is not on the station's allow-list, or the pinned station key is wrong), ``refused`` (the station
speaks another protocol major version).

Use from asyncio: ``await console.apoll()`` / ``async for batch in console.batches()`` wait on a
file descriptor, and ``await console.asend_command(...)``; from threads: ``poll(timeout_ms)`` and
``send_command``. ``state()``, ``states()``, ``stats()`` are thread-safe snapshots.

Failure modes: configuration and key problems raise ``ConfigError`` / ``UserError`` from the
constructor; a station that sends malformed or foreign-version data has it counted (``malformed``,
``schema_refused``) and dropped; ``send_command`` raises ``CommandError`` when the station refuses
the command or does not answer within the timeout.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import select
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import zmq
from zmq.utils.monitor import parse_monitor_message

from station import keys, protocol
from station.competences import CommandError
from station.config import ConfigError, data_dir
from station.errors import UserError
from station.osthread import named
from station.protocol import Message

log = logging.getLogger(__name__)
# plain ints: pyzmq's enum members cost a conversion per call (1-2 µs) on the per-message path
_EVENTS, _POLLIN, _RCVMORE, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE), int(zmq.NOBLOCK)
NS_PER_MS = 1_000_000
RETRY_NOT_YET_NS = 200 * NS_PER_MS   # the station has not committed the rest yet: ask again soon
REAUTH_NS = 5_000 * NS_PER_MS        # after a refused handshake, reconnect this often
APP_QUEUE_MAX = 200_000              # undelivered messages kept for the application
TICK_NS = 100 * NS_PER_MS            # timers run this often
PROGRESS_NS = 1_000 * NS_PER_MS      # every session's progress is saved this often (some at once)
# Pacing under load (Console.cycle_ns): 0 = store and deliver at every wake-up (lowest delay);
# N > 0 = at most one receive-store-deliver cycle per N ns while messages keep coming (fewer
# wake-ups and commits, so less CPU, for up to N ns more delay; figures in docs/protocol.md)
CYCLE_NS = 0
SWEEP_NS = 1_000 * NS_PER_MS         # every socket is looked at this often, signalled or not
STATES_NS = 250 * NS_PER_MS          # state snapshots (``state()``) are refreshed this often
MOVE_NS = 50 * NS_PER_MS             # stored messages go from the recent log into SQLite this often
MOVE_MAX = 2000                      # ... or once this many wait there (a gap fill)
# The application's own thread runs the I/O loop while it waits in poll()/apoll() (see
# ``Console._lead``); the I/O thread takes over once no application has waited for this long
LEAD_GRACE_NS = 50 * NS_PER_MS


from station.console.store import ConsoleStore

# ====================================================================================== config

@dataclass(frozen=True)
class StationSpec:
    """One station to follow. public_key: pinned Z85 key (None = plaintext, loopback only)."""

    id: str
    pub_endpoint: str
    req_endpoint: str
    public_key: bytes | None


def station_specs(cfg) -> list[StationSpec]:
    """The [[console.station]] entries, checked. Raises ConfigError / UserError."""
    specs, seen = [], set()
    c = cfg.console
    for i, s in enumerate(c.station):
        where = f"console.station[{i}] ({s['id']})"
        if s["id"] in seen:
            raise ConfigError(f"{where}: station id listed twice")
        seen.add(s["id"])
        if s["public_key"]:
            try:
                pk = keys.load_public(s["public_key"])
            except UserError as e:
                raise ConfigError(f"{where}.public_key: {e}") from None
        else:
            pk = None
            eps = [s["pub_endpoint"], s["req_endpoint"]]
            if not c.allow_plaintext_loopback or not all(keys.is_loopback(e) for e in eps):
                raise ConfigError(f"{where}: public_key = \"\" (no encryption) is allowed only with "
                                  "console.allow_plaintext_loopback = true and loopback endpoints")
        specs.append(StationSpec(s["id"], s["pub_endpoint"], s["req_endpoint"], pk))
    return specs


def store_path(cfg) -> Path:
    return Path(cfg.console.store).expanduser() if cfg.console.store else data_dir(cfg) / "console.sqlite"


# ====================================================================================== per station

@dataclass
class _Track:
    """Progress through one session of one station."""

    session: str
    next_seq: int | None = None       # all seqs below are stored (or recorded lost); None = unknown start
    known_last: int = -1              # highest seq known to exist
    ahead: dict[int, Message] = field(default_factory=dict)  # received beyond a gap
    replay_id: int | None = None      # request in flight
    retry_at: int = 0                 # console mono ns
    unavailable: bool = False         # the station no longer holds this session
    dirty: bool = True

    def missing(self) -> bool:
        return not self.unavailable and (self.next_seq is None or self.next_seq <= self.known_last)


@dataclass
class _Request:
    op: str
    frames: list[bytes]
    sent_ns: int
    deadline_ns: int              # resend after this
    give_up_ns: int               # fail after this (commands) ; 0 = retry forever
    context: Any = None
    future: concurrent.futures.Future | None = None
    attempts: int = 1


class _Link:
    """Runtime state of one followed station (used only by the I/O loop, except snapshot())."""

    def __init__(self, spec: StationSpec):
        self.spec = spec
        self.id = spec.id
        self.dealer: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.session: str | None = None
        self.tracks: dict[str, _Track] = {}
        self.requests: dict[int, _Request] = {}
        self.last_rx_ns = 0
        self.auth_failed = ""           # the station refused our key (explicit ZAP refusal)
        self.fail_since_ns = 0          # handshakes failing without detail since then
        self.handshake_ok = False
        self.refused = ""               # schema refusal message
        self.reconnect_at = 0
        self.next_snapshot_ns = 0
        self.snapshot_inflight = False
        self.snapshot_info: dict = {}
        self.snapshot_packed: bytes = b""     # snapshot_info as stored (packed once per snapshot)
        self.offset_ns: int | None = None
        self.rtt_ns: int | None = None
        self.clock_measured_ns = 0
        self.probes: list[tuple[int, int]] = []
        self.probe_inflight = False
        self.next_probe_ns = 0
        self.counts: collections.Counter = collections.Counter()


# ====================================================================================== console

class Console:
    """Follow the stations of ``cfg.console`` (see the module docstring).

    Construct, ``start()``, then ``poll()`` / ``apoll()`` for messages; ``stop()`` at the end.
    ``specs`` overrides the configured station list (tests, benchmarks); ``deliver=False`` keeps
    no application queue (store only). ``cycle_ns`` (set before ``start()``): pacing under load,
    ns, 0 = store and deliver at every wake-up (see ``CYCLE_NS``). ``stats()`` counts, among
    others, the I/O loop's ``wakeups`` and store ``commits``.
    """

    def __init__(self, cfg, *, specs: list[StationSpec] | None = None,
                 store: Path | None = None, deliver: bool = True):
        self.cfg = cfg
        c = cfg.console
        self.c = c
        self.specs = specs if specs is not None else station_specs(cfg)
        self.store_path = Path(store) if store else store_path(cfg)
        self.deliver = deliver
        self.cycle_ns = CYCLE_NS
        self._monitors = 0              # monitor sockets made (each gets its own inproc address)
        self.proxy_key: bytes | None = None
        if c.proxy_endpoint:
            if c.proxy_public_key:
                self.proxy_key = keys.load_public(c.proxy_public_key)
            elif not (c.allow_plaintext_loopback and keys.is_loopback(c.proxy_endpoint)):
                raise ConfigError("console.proxy_public_key is required unless the proxy is on "
                                  "loopback and console.allow_plaintext_loopback = true")
        self.curve = any(s.public_key for s in self.specs) or self.proxy_key is not None
        self.my_pub = self.my_sec = None
        if self.curve:
            self.my_pub, self.my_sec = keys.load_secret(keys.console_secret_file(cfg))
        self.links = {s.id: _Link(s) for s in self.specs}
        self.store = ConsoleStore(self.store_path)
        self.reader = ConsoleStore(self.store_path, readonly=True)
        self._app: collections.deque = collections.deque()
        self._app_async: dict[int, tuple] = {}  # apoll() calls waiting: id -> (loop, future)
        self._inbox: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stats: collections.Counter = collections.Counter()
        self._states_lock = threading.Lock()
        self._states: dict[str, dict] = {}
        self._req_id = int.from_bytes(os.urandom(3), "big")
        self._running = False
        self._thread: threading.Thread | None = None
        # who runs the I/O loop: whoever holds _loop_lock. An application waiting in poll() or
        # apoll() leads (_leading); the I/O thread parks on _io_go meanwhile and until
        # LEAD_GRACE_NS after the application last waited (until _lead_until_ns), then takes over
        self._loop_lock = threading.Lock()
        self._leading = 0                      # application threads leading or asking to lead
        self._leading_lock = threading.Lock()
        self._lead_until_ns = 0
        # an asyncio event loop that runs the I/O loop (see apoll): (loop, thread id, epoll fd)
        self._attached: tuple | None = None
        self._attached_tick: asyncio.TimerHandle | None = None
        self._attached_tick_ns = 0              # the I/O loop's next tick that timer is for
        self._io_go = threading.Event()
        self._load_tracks()

    # ------------------------------------------------------------------ application API

    def start(self) -> None:
        self.ctx = zmq.Context()
        self._shared_sub = None
        if self.c.proxy_endpoint:
            self._shared_sub = self._make_sub(self.c.proxy_endpoint, self.proxy_key)
            for link in self.links.values():
                self._shared_sub.setsockopt(zmq.SUBSCRIBE, f"{link.id}/".encode())
        for link in self.links.values():
            self._connect(link)
        self._running = True
        self.store.start_checkpoints()
        self._init_loop()
        self._publish_states(time.monotonic_ns())
        self._thread = threading.Thread(target=named(self._run), name="console-io", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._attached is not None and self._attached[1] == threading.get_ident():
            self._detach()
        if self._running:
            self._running = False
            self._wake()
            self._io_go.set()
            if self._thread:
                self._thread.join(timeout=10)
        elif self._thread is None:
            self.store.close()  # never started: the I/O thread would have closed it
        self._wake_async()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.reader.close()

    def poll(self, timeout_ms: int = 0, max_messages: int = 100_000) -> list[Message]:
        """Messages delivered since the last call (in seq order per session); waits up to
        timeout_ms for the first one. While it waits, this thread runs the I/O loop itself
        (``_lead``): no hand-over from the I/O thread per delivery."""
        deadline = time.monotonic_ns() + int(timeout_ms * NS_PER_MS)
        while not self._app:
            if not self._running or time.monotonic_ns() >= deadline:
                return []
            self._lead(deadline)
        return self._take(max_messages)

    def _take(self, max_messages: int) -> list[Message]:
        out = []
        try:
            for _ in range(min(len(self._app), max_messages)):
                out.append(self._app.popleft())
        except IndexError:         # another thread's poll() took the rest
            pass
        return out

    async def apoll(self, timeout_ms: int | None = None) -> list[Message]:
        """asyncio version of poll(): waits without blocking the event loop. The event loop runs
        the console's I/O loop itself (``_attach``): a reader on the epoll descriptor of the
        sockets and the wake pipe, and a timer for the housekeeping, each running one wake-up
        that does not wait (``_iteration(0)``); a delivery then wakes this call directly. When the
        event loop cannot have the I/O loop (the I/O thread does not hand it over within 5 ms,
        or ``cycle_ns`` paces the loop), the I/O thread delivers and wakes this call with
        ``call_soon_threadsafe``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000
        while True:
            if self._app or not self._running:
                return self._take(100_000)
            if deadline is not None and loop.time() >= deadline:
                return []
            if self.cycle_ns == 0:
                self._attach(loop)
            fut = loop.create_future()
            self._app_async[id(fut)] = (loop, fut)   # from now on a delivery wakes it
            timer = None if deadline is None else loop.call_at(deadline, _settle, fut)
            try:
                if not self._app and self._running:
                    await fut
            finally:
                self._app_async.pop(id(fut), None)
                if timer is not None:
                    timer.cancel()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let ``loop`` (running in this thread) run the I/O loop from now on, unless it already
        does. The I/O thread hands over (``_grab_loop``) and parks while the event loop keeps
        coming back (``_on_ready`` at least every TICK_NS); it takes over again if the event loop
        is blocked or gone for LEAD_GRACE_NS more, and the event loop then lets go
        (``_detach``)."""
        if self._attached is not None:
            if self._attached[0] is loop and not loop.is_closed():
                return
            self._detach()
        self._lead_enter()
        try:
            if not self._grab_loop(0.005):
                return
            try:
                fd = self._ep.fileno()
                loop.add_reader(fd, self._on_ready)
                self._attached = (loop, threading.get_ident(), fd)
                self._lead_until_ns = time.monotonic_ns() + TICK_NS + LEAD_GRACE_NS
            finally:
                self._loop_lock.release()
        finally:
            self._lead_exit()
        loop.call_soon(self._on_ready)

    def _detach(self) -> None:
        loop, _, fd = self._attached
        self._attached = None
        if self._attached_tick is not None:
            self._attached_tick.cancel()
            self._attached_tick = None
        if not loop.is_closed():
            loop.remove_reader(fd)

    def _on_tick(self) -> None:
        self._attached_tick = None       # fired: the next wake-up sets the next one
        self._on_ready()

    def _on_ready(self) -> None:
        """The attached event loop's wake-up: the epoll descriptor is readable, the housekeeping
        is due, or a socket still holds messages."""
        if self._attached is None:
            return
        loop = self._attached[0]
        if not self._running or not self._loop_lock.acquire(blocking=False):
            self._detach()       # the I/O thread took over (or stopped): do not spin on it
            return
        try:
            self._safe_iteration(0.0)
            fd = self._ep.fileno()           # the poller may have been rebuilt
            if fd != self._attached[2]:
                loop.remove_reader(self._attached[2])
                loop.add_reader(fd, self._on_ready)
                self._attached = (loop, self._attached[1], fd)
            self._lead_until_ns = time.monotonic_ns() + TICK_NS + LEAD_GRACE_NS
            if self._check:                  # a socket holds more: read on after other callbacks
                loop.call_soon(self._on_ready)
            tick = self._attached_tick
            if tick is None or tick.cancelled() or self._attached_tick_ns != self._next_tick_ns:
                if tick is not None:
                    tick.cancel()
                self._attached_tick_ns = self._next_tick_ns
                self._attached_tick = loop.call_later(
                    max(0, self._next_tick_ns - time.monotonic_ns()) / 1e9, self._on_tick)
        finally:
            self._loop_lock.release()

    async def batches(self) -> AsyncIterator[list[Message]]:
        while self._running:
            got = await self.apoll(1000)
            if got:
                yield got

    def state(self, station_id: str) -> dict:
        """{station, state, detail, session, next_seq, known_last, offset_ns, rtt_ns,
        clock_age_s, last_rx_age_s, counts}. Raises KeyError for an unknown station."""
        with self._states_lock:
            st = dict(self._states[station_id])
        now = time.monotonic_ns()
        if st.get("_last_rx_ns"):
            st["last_rx_age_s"] = (now - st["_last_rx_ns"]) / 1e9
            if st["state"] in ("connected", "stale"):
                st["state"] = "connected" if now - st["_last_rx_ns"] <= self.c.stale_ms * NS_PER_MS else "stale"
        st.pop("_last_rx_ns", None)
        return st

    def states(self) -> dict[str, dict]:
        return {sid: self.state(sid) for sid in self.links}

    def stats(self) -> dict[str, int]:
        with self._states_lock:
            return dict(self._stats)

    def station_time(self, station_id: str, console_mono_ns: int | None = None) -> int | None:
        """Estimated station clock now (or at the given console monotonic time); None before the
        first clock estimate."""
        off = self.state(station_id).get("offset_ns")
        if off is None:
            return None
        return (time.monotonic_ns() if console_mono_ns is None else console_mono_ns) + off

    def send_command(self, station_id: str, cmd: dict, timeout: float = 10.0) -> dict:
        """Send an assessor command and wait for the station's ack body. ``cmd`` needs ``type``
        and its fields (protocol.validate_command); cmd_id, assessor_id/name and t_ns (the station
        time now, from the clock estimate) are filled in when absent. Raises CommandError,
        KeyError (unknown station) or protocol.ProtocolError (invalid command)."""
        return self.command_future(station_id, cmd, timeout).result(timeout + 1)

    async def asend_command(self, station_id: str, cmd: dict, timeout: float = 10.0) -> dict:
        return await asyncio.wrap_future(self.command_future(station_id, cmd, timeout))

    def command_future(self, station_id: str, cmd: dict, timeout: float = 10.0) -> concurrent.futures.Future:
        if station_id not in self.links:
            raise KeyError(f"unknown station {station_id!r}")
        full = {"cmd_id": uuid.uuid4().hex, "assessor_id": self.c.assessor_id, **cmd}
        if full.get("type") == "mark":
            full.setdefault("assessor_name", self.c.assessor_name)
            full.setdefault("mark_id", full["cmd_id"])
        if not full.get("t_ns"):
            full["t_ns"] = self.station_time(station_id) or 0
        full = protocol.validate_command(full)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.append(("command", station_id, full, timeout, fut))
        if not self._leading and self._attached is None:   # no application runs the loop:
            # the I/O thread sends it now (a leader or attached event loop: the wake pipe)
            self._lead_until_ns = 0
            self._io_go.set()
        self._wake()
        return fut

    def history(self, station: str, session: str | None = None, from_seq: int = 0,
                kinds: tuple[str, ...] | None = None) -> list[Message]:
        """Stored messages of a session (default: the station's latest), from any thread."""
        if session is None:
            ss = self.reader.sessions(station)
            if not ss:
                return []
            session = ss[-1]["session"]
        return self.reader.messages(station, session, from_seq, kinds)

    # ------------------------------------------------------------------ setup

    def _load_tracks(self) -> None:
        for s in self.store.sessions():
            link = self.links.get(s["station"])
            if link is None:
                continue
            nxt = s["next_seq"]
            if nxt is not None:   # past what was stored after the last progress save
                nxt = self.store.resume_seq(s["station"], s["session"], nxt)
            last = s["known_last"] if nxt is None else max(s["known_last"], nxt - 1)
            link.tracks[s["session"]] = _Track(s["session"], nxt, last, dirty=nxt != s["next_seq"])
            link.session = s["session"]  # ordered by first seen: the last one is the latest

    def _secure(self, sock: zmq.Socket, server_key: bytes | None) -> None:
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, self.c.max_message_bytes)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if server_key:
            sock.curve_serverkey = server_key
            sock.curve_publickey = self.my_pub
            sock.curve_secretkey = self.my_sec

    def _make_sub(self, endpoint: str, key: bytes | None) -> zmq.Socket:
        sub = self.ctx.socket(zmq.SUB)
        self._secure(sub, key)
        sub.rcvhwm = 100_000
        sub.connect(endpoint)
        return sub

    def _connect(self, link: _Link) -> None:
        spec = link.spec
        if self._shared_sub is None:
            link.sub = self._make_sub(spec.pub_endpoint, spec.public_key)
            link.sub.setsockopt(zmq.SUBSCRIBE, f"{spec.id}/".encode())
        d = self.ctx.socket(zmq.DEALER)
        self._secure(d, spec.public_key)
        d.setsockopt(zmq.IMMEDIATE, 1)   # no requests queued towards a peer not yet connected
        d.sndhwm = 1000
        # a fresh inproc address per socket: pyzmq's default (from the socket's file descriptor)
        # can still be bound by the monitor of the socket this one replaces ("Address already in
        # use" on a reconnect that reuses the descriptor)
        self._monitors += 1
        link.monitor = d.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_DISCONNECTED, addr=f"inproc://station-monitor-{id(self)}-{self._monitors}")
        d.connect(spec.req_endpoint)
        link.dealer = d
        for req in link.requests.values():   # a new socket: pending commands must not wait forever
            if req.future is not None and not req.future.done():
                req.future.set_exception(CommandError(
                    f"connection to station {link.id} was reset; the command may not have been "
                    "journaled: send it again (retries are idempotent)"))
        link.requests.clear()
        for t in link.tracks.values():
            t.replay_id = None
        link.snapshot_inflight = link.probe_inflight = False

    def _reconnect(self, link: _Link) -> None:
        if link.dealer is not None:
            try:
                link.dealer.disable_monitor()
            except zmq.ZMQError:
                pass
        for s in (link.dealer, link.monitor) + ((link.sub,) if self._shared_sub is None else ()):
            if s is not None:
                s.close(linger=0)
        link.dealer = link.monitor = None
        self._poller_dirty = True          # closed sockets leave the pollers even if _connect fails
        self._connect(link)

    # ------------------------------------------------------------------ I/O loop

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    @staticmethod
    def _drain_fd(fd: int) -> None:
        try:
            while os.read(fd, 65536):
                pass
        except (BlockingIOError, OSError):
            pass

    def _build_poller(self) -> None:
        """(Re)register every socket's ZMQ_FD and the wake pipe with a fresh epoll object, and
        mark every socket to be looked at once (messages may already wait on a new socket)."""
        if self._ep is not None:
            self._ep.close()
        self._ep = select.epoll()
        self._ep.register(self._wake_r, select.EPOLLIN)
        if self._ep_wake is None:
            self._ep_wake = select.epoll()      # the wake pipe alone: paced cycles watch it
            self._ep_wake.register(self._wake_r, select.EPOLLIN)
        self._fd_owner: dict[int, tuple[str, _Link | None, zmq.Socket]] = {}
        owners: list[tuple[str, _Link | None, zmq.Socket]] = []
        if self._shared_sub is not None:
            owners.append(("sub", None, self._shared_sub))
        for link in self.links.values():
            if link.sub is not None and self._shared_sub is None:
                owners.append(("sub", link, link.sub))
            for kind, s in (("dealer", link.dealer), ("monitor", link.monitor)):
                if s is not None:
                    owners.append((kind, link, s))
        for owner in owners:
            fd = owner[2].getsockopt(zmq.FD)
            self._fd_owner[fd] = owner
            self._ep.register(fd, select.EPOLLIN)
        self._check = dict(self._fd_owner)
        self._poller_dirty = False

    def _check_later(self, sock: zmq.Socket | None) -> None:
        """Look at this socket in the next wake-up whatever its ZMQ_FD says: a send on it may
        have consumed the signal of a message that arrived meanwhile."""
        if sock is not None and not sock.closed:
            fd = sock.getsockopt(zmq.FD)
            owner = self._fd_owner.get(fd)
            if owner is not None and owner[2] is sock:
                self._check[fd] = owner

    def _init_loop(self) -> None:
        self._ep = self._ep_wake = None
        self._busy = False
        self._cycle_ns = 0
        self._build_poller()
        self._delivered: list[Message] = []
        self._pending_store: list[Message] = []
        self._urgent: dict[int, tuple] = {}     # id(track) -> (link, track): save progress now
        self._next_tick_ns = self._last_full_ns = self._next_sweep_ns = self._next_move_ns = 0
        self._next_states_ns = 0

    def _lead(self, deadline_ns: int) -> bool:
        """Run the I/O loop in the calling (application) thread until something is delivered or
        ``deadline_ns`` (monotonic). If the I/O thread has the loop, it is woken to hand it over
        (it parks while an application leads and for LEAD_GRACE_NS after). False when the loop
        could not be had before the deadline (another application thread leads); the I/O thread
        then goes on running it."""
        self._lead_enter()
        try:
            if not self._grab_loop(max(0, deadline_ns - time.monotonic_ns()) / 1e9):
                return False
            try:
                while self._running and not self._app:
                    self._safe_iteration(max(0, deadline_ns - time.monotonic_ns()) / 1e9)
                    if time.monotonic_ns() >= deadline_ns:
                        break
            finally:
                self._loop_lock.release()
            self._lead_until_ns = time.monotonic_ns() + LEAD_GRACE_NS
            return True
        finally:
            self._lead_exit()

    def _grab_loop(self, timeout: float) -> bool:
        """Take ``_loop_lock`` for an application thread (counted in ``_leading`` by the
        caller); if the I/O thread holds it, wake it so that it hands over, waiting up to
        ``timeout`` s."""
        if self._loop_lock.acquire(blocking=False):
            return True
        self._wake()
        return self._loop_lock.acquire(timeout=timeout)

    def _lead_enter(self) -> None:
        with self._leading_lock:
            self._leading += 1

    def _lead_exit(self) -> None:
        with self._leading_lock:
            self._leading -= 1

    def _safe_iteration(self, max_wait: float | None = None) -> None:
        try:
            self._iteration(max_wait)
        except Exception:
            self._stats["errors"] += 1
            log.exception("console loop error")
            time.sleep(0.05)

    def _run(self) -> None:
        """The I/O thread: runs the loop whenever no application does (see ``_lead``)."""
        try:
            while self._running:
                left = self._lead_until_ns - time.monotonic_ns()
                if self._leading or left > 0:
                    self._io_go.wait(max(left, LEAD_GRACE_NS) / 1e9)
                    self._io_go.clear()
                    continue
                with self._loop_lock:
                    if self._running and not self._leading:
                        self._safe_iteration()
        finally:
            with self._loop_lock:
                self._close_loop()

    def _close_loop(self) -> None:
        for link in self.links.values():
            for r in link.requests.values():
                if r.future and not r.future.done():
                    r.future.set_exception(CommandError("console stopped"))
        try:
            self._flush()
        except Exception:
            log.exception("console: final flush failed")
        self.store.close()
        self._ep.close()
        self._ep_wake.close()
        self.ctx.destroy(linger=0)

    def _iteration(self, max_wait: float | None = None) -> None:
        """One wake-up: wait, drain every signalled socket, run the timers (every TICK_NS), then
        store what was read in this wake-up in one transaction and deliver it (``_flush``).

        Waiting: epoll on every socket's ZMQ_FD and the wake pipe (commands) until one signals or
        the next tick; no wait at all while a socket is known to hold more. With ``cycle_ns`` 0
        (the default) there is no fixed cycle: what was read is committed and delivered at once,
        so the delay a message gets here is the read, the commit and the hand-over; batching
        comes from the load itself (what arrives while one wake-up reads and commits is read by
        the next one, together). With ``cycle_ns`` > 0, a wake-up that follows one which read
        messages first waits (watching only the wake pipe) until ``cycle_ns`` after that one.
        ``max_wait`` (s) bounds the wait (an application leading the loop: its own deadline).
        Runs only with ``_loop_lock`` held."""
        if self._poller_dirty:
            self._build_poller()
        timeout = 0.0
        now = time.monotonic_ns()
        if not self._check:
            if self._busy and self.cycle_ns:
                left = self._cycle_ns + self.cycle_ns - now
                if left > 0:
                    self._ep_wake.poll(left / 1e9)
            timeout = max(0, self._next_tick_ns - now) / 1e9
            if max_wait is not None:
                timeout = min(timeout, max_wait)
        events = self._ep.poll(timeout)
        self._cycle_ns = now = time.monotonic_ns()
        self._stats["wakeups"] += 1
        check = self._check
        for fd, _ in events:
            if fd == self._wake_r:
                self._drain_fd(fd)
            else:
                owner = self._fd_owner.get(fd)
                if owner is not None:
                    check[fd] = owner
        self._check = {}
        while self._inbox:
            self._handle_inbox(self._inbox.popleft(), now)
        received = len(self._pending_store)
        # ZMQ_FD signals only that a socket's state may have changed: each signalled socket is
        # read until it has nothing more (a socket left with messages gets no new signal)
        for fd, (kind, link, sock) in check.items():
            if sock.closed:
                continue
            if kind == "sub":
                more = self._recv_live(sock, link, now)
            elif kind == "dealer":
                more = self._recv_replies(link, now)
            else:
                more = self._recv_monitor(link, now)
            if more:
                self._check[fd] = (kind, link, sock)
        self._busy = len(self._pending_store) > received
        if now >= self._next_tick_ns:  # housekeeping at most every TICK_NS, not per message
            self._next_tick_ns = now + TICK_NS
            for link in self.links.values():
                self._timers(link, now)
            if now >= self._next_states_ns:
                self._next_states_ns = now + STATES_NS
                self._publish_states(now)
            if now >= self._next_sweep_ns:   # a bound on any signal missed: look at every socket
                self._next_sweep_ns = now + SWEEP_NS
                self._check.update(self._fd_owner)
        # a message counts as delivered only once it is stored: one store write per wake-up, then
        # the application gets this wake-up's messages
        full = now - self._last_full_ns >= PROGRESS_NS
        if self._pending_store or self._delivered or self._urgent or full:
            self._flush(full=full)
        # after the delivery, so that only later messages wait on these
        if self.store.recent_count and (now >= self._next_move_ns
                                        or self.store.recent_count >= MOVE_MAX):
            self._next_move_ns = now + MOVE_NS
            self.store.move_recent()
            self._stats["commits"] += 1
        if self.store.tail_checkpoint_due:
            self.store.checkpoint_tail()

    def _flush(self, full: bool = True) -> None:
        """Store the messages of this wake-up (one append to the store's recent log), then hand
        the delivered ones to the application. Session progress is committed for the tracks marked
        ``_save_soon`` (a jump over a gap, a start learned, new snapshot info), and for every
        track with unsaved progress when ``full`` (every PROGRESS_NS): a message stored counts
        as progress on restart anyway (``ConsoleStore.resume_seq``)."""
        if full:
            dirty = [(l, t) for l in self.links.values() for t in l.tracks.values() if t.dirty]
            self._last_full_ns = time.monotonic_ns()
        else:
            dirty = list(self._urgent.values())
        self._urgent = {}
        if self._pending_store:
            self.store.add(self._pending_store, time.time_ns())    # stored from here on
            self._pending_store = []
            self._stats["store_writes"] += 1
        if dirty or self.store.db.in_transaction:
            if dirty:
                self.store.save_sessions([
                    (link.id, t.session, t.next_seq, t.known_last,
                     link.snapshot_packed if t.session == link.session and link.snapshot_info else None)
                    for link, t in dirty])
                for _, t in dirty:
                    t.dirty = False
            self.store.commit()
            self._stats["commits"] += 1
        if self._delivered:
            self._stats["delivered"] += len(self._delivered)
            if self.deliver:
                self._app.extend(self._delivered)
                for _ in range(len(self._app) - APP_QUEUE_MAX):
                    try:
                        self._app.popleft()
                    except IndexError:
                        break
                    self._stats["app_dropped"] += 1
                if self._app_async:        # (apoll counts itself in before it looks at _app)
                    self._wake_async()
            self._delivered = []

    def _wake_async(self) -> None:
        here = self._attached[0] if (self._attached is not None
                                     and self._attached[1] == threading.get_ident()) else None
        for loop, fut in list(self._app_async.values()):
            try:
                if loop is here:                    # the attached event loop's own wake-up
                    _settle(fut)
                else:
                    loop.call_soon_threadsafe(_settle, fut)
            except RuntimeError:                    # its event loop is closed
                self._app_async.pop(id(fut), None)

    def _publish_states(self, now: int) -> None:
        with self._states_lock:
            for link in self.links.values():
                t = link.tracks.get(link.session) if link.session else None
                if link.refused:
                    state, detail = "refused", link.refused
                elif link.auth_failed:
                    state, detail = "unauthorised", link.auth_failed
                elif (link.fail_since_ns and now - link.fail_since_ns
                      > 3 * self.c.stale_ms * NS_PER_MS):
                    state, detail = "unauthorised", ("secure handshake keeps failing (wrong station "
                                                     "public key pinned, or not a station)")
                elif link.last_rx_ns:
                    state, detail = "connected", ""
                else:
                    state, detail = "connecting", ""
                self._states[link.id] = {
                    "station": link.id, "state": state, "detail": detail, "session": link.session,
                    "next_seq": t.next_seq if t else None, "known_last": t.known_last if t else None,
                    "offset_ns": link.offset_ns, "rtt_ns": link.rtt_ns,
                    "clock_age_s": (now - link.clock_measured_ns) / 1e9
                    if link.clock_measured_ns else None,
                    "counts": dict(link.counts), "_last_rx_ns": link.last_rx_ns,
                    "snapshot": dict(link.snapshot_info)}

    # -- live

    def _recv_live(self, sock: zmq.Socket, link: _Link | None, now: int) -> bool:
        """Read live messages until the socket has none (False) or 5000 were read (True: more
        may wait)."""
        recv, get = sock.recv, sock.get
        for i in range(5000):
            # signalled: the first read is tried at once; then whether more waits is asked
            # (cheaper than a raised zmq.Again)
            if i and not get(_EVENTS) & _POLLIN:
                return False
            try:
                frames = [recv(_NOBLOCK)]
                while get(_RCVMORE):
                    frames.append(recv(_NOBLOCK))
            except zmq.Again:
                return False
            try:
                m = protocol.decode_live(frames)
            except protocol.SchemaError as e:
                self._stats["schema_refused"] += 1
                if link is not None:
                    link.counts["schema_refused"] += 1
                    if not link.refused:
                        log.warning("station %s: %s", link.id, e)
                    link.refused = str(e)
                continue
            except protocol.ProtocolError:
                self._stats["malformed"] += 1
                if link is not None:
                    link.counts["malformed"] += 1
                continue
            target = self.links.get(m.station) if link is None else link
            if target is None or m.station != target.id:
                self._stats["foreign"] += 1  # a station publishing under another's id
                continue
            target.refused = ""
            target.last_rx_ns = now
            target.counts["live"] += 1
            self._accept(target, m, now, live=True)
        return True

    def _save_soon(self, link: _Link, t: _Track) -> None:
        """Save this track's progress in the next flush (not only in the next full one): its
        next_seq moved in a way the stored messages do not show (a gap, a start learned)."""
        t.dirty = True
        self._urgent[id(t)] = (link, t)

    def _track(self, link: _Link, session: str) -> _Track:
        t = link.tracks.get(session)
        if t is None:
            t = link.tracks[session] = _Track(session)
            link.next_snapshot_ns = 0  # learn about the new session now
            self._save_soon(link, t)   # listed in the store at once
        return t

    def _accept(self, link: _Link, m: Message, now: int, live: bool) -> None:
        t = self._track(link, m.session)
        if live and link.session != m.session:
            if link.session is not None:
                log.info("station %s: new session %s", link.id, m.session)
            link.session = m.session
        if m.seq > t.known_last:
            t.known_last = m.seq
            t.dirty = True
        if t.next_seq is not None and m.seq < t.next_seq or m.seq in t.ahead:
            link.counts["duplicate"] += 1
            return
        self._pending_store.append(m)
        if t.next_seq is not None and m.seq == t.next_seq:
            self._delivered.append(m)
            t.next_seq += 1
            while t.next_seq in t.ahead:
                self._delivered.append(t.ahead.pop(t.next_seq))
                t.next_seq += 1
            t.dirty = True
        else:
            t.ahead[m.seq] = m

    # -- requests

    def _send(self, link: _Link, op: str, now: int, *, context: Any = None,
              future: concurrent.futures.Future | None = None, give_up_ns: int = 0,
              **fields: Any) -> int | None:
        self._req_id = (self._req_id + 1) % protocol.MAX_SEQ
        rid = self._req_id
        frames = protocol.encode_request(op, rid, **fields)
        req = _Request(op, frames, now, now + self.c.request_timeout_ms * NS_PER_MS, give_up_ns,
                       context, future)
        link.requests[rid] = req
        try:
            link.dealer.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            req.deadline_ns = now + 100 * NS_PER_MS  # not connected yet: try again soon
        self._check_later(link.dealer)
        return rid

    def _resend(self, link: _Link, rid: int, req: _Request, now: int) -> None:
        """A request timed out: send it again under a new id (a late reply to the old id is
        ignored)."""
        del link.requests[rid]
        if req.give_up_ns and now >= req.give_up_ns:
            if req.future and not req.future.done():
                req.future.set_exception(CommandError(f"station {link.id} did not acknowledge the "
                                                      "command in time"))
            return
        hdr = protocol.unpack_map(req.frames[0], "own request")
        hdr.pop("id")
        op = hdr.pop("op")
        hdr.pop("schema")
        link.counts["resent"] += 1
        new = self._send(link, op, now, context=req.context, future=req.future,
                         give_up_ns=req.give_up_ns, **hdr)
        link.requests[new].attempts = req.attempts + 1
        if op == "replay":
            link.tracks[req.context].replay_id = new

    def _handle_inbox(self, item: tuple, now: int) -> None:
        if item[0] == "command":
            _, sid, cmd, timeout, fut = item
            link = self.links[sid]
            self._send(link, "command", now, future=fut, give_up_ns=now + int(timeout * 1e9), cmd=cmd)

    def _timers(self, link: _Link, now: int) -> None:
        if link.auth_failed and now >= link.reconnect_at:
            link.reconnect_at = now + REAUTH_NS
            self._reconnect(link)
            return
        for rid, req in list(link.requests.items()):
            if now >= req.deadline_ns:
                if req.op == "snapshot":
                    link.snapshot_inflight = False
                    del link.requests[rid]
                elif req.op == "clock":
                    link.probe_inflight = False
                    del link.requests[rid]
                else:
                    self._resend(link, rid, req, now)
        if not link.snapshot_inflight and now >= link.next_snapshot_ns:
            link.snapshot_inflight = True
            link.next_snapshot_ns = now + self.c.resync_ms * NS_PER_MS
            self._send(link, "snapshot", now)
        if not link.probe_inflight and now >= link.next_probe_ns and link.last_rx_ns:
            link.probe_inflight = True
            self._send(link, "clock", now)
        self._request_replay(link, now)

    def _request_replay(self, link: _Link, now: int) -> None:
        if any(t.replay_id is not None for t in link.tracks.values()):
            return  # one replay in flight per station: flow control, ROUTER never overflows
        order = sorted(link.tracks.values(), key=lambda t: t.session != link.session)
        for t in order:
            if t.missing() and now >= t.retry_at:
                lo = 0 if t.next_seq is None else t.next_seq
                hi = max(t.known_last, lo)
                t.replay_id = self._send(link, "replay", now, context=t.session,
                                         session=t.session, from_seq=lo, to_seq=hi)
                return

    def _recv_replies(self, link: _Link, now: int) -> bool:
        """Read replies until the DEALER has none (False) or 1000 were read (True)."""
        for _ in range(1000):
            if not link.dealer.get(_EVENTS) & _POLLIN:
                return False
            try:
                frames = link.dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return False
            link.last_rx_ns = now
            try:
                hdr, payload = protocol.decode_reply(frames)
            except protocol.SchemaError as e:
                self._stats["schema_refused"] += 1
                link.counts["schema_refused"] += 1
                link.refused = str(e)
                continue
            except protocol.ProtocolError:
                self._stats["malformed"] += 1
                link.counts["malformed"] += 1
                continue
            if not hdr["ok"] and hdr.get("code") == "schema":
                link.refused = f"station refused our protocol: {hdr['error']}"
            req = link.requests.pop(hdr["id"], None)
            if req is None or req.op != hdr["op"]:
                link.counts["late_reply"] += 1
                if req is not None:
                    link.requests[hdr["id"]] = req
                continue
            try:
                getattr(self, f"_on_{req.op}")(link, req, hdr, payload, now)
            except protocol.ProtocolError:
                self._stats["malformed"] += 1
                link.counts["malformed"] += 1
                if req.op == "replay":
                    link.tracks[req.context].replay_id = None
                    link.tracks[req.context].retry_at = now + RETRY_NOT_YET_NS
        return True

    def _on_snapshot(self, link: _Link, req: _Request, hdr: dict, payload, now: int) -> None:
        link.snapshot_inflight = False
        if not hdr["ok"]:
            link.counts["snapshot_errors"] += 1
            return
        session = hdr.get("session")
        last = hdr.get("last_seq")
        if not isinstance(session, str) or not isinstance(last, int) or hdr.get("station") != link.id:
            raise protocol.ProtocolError("snapshot reply malformed or from another station")
        link.refused = ""
        info = {k: v for k, v in hdr.items() if k not in ("schema", "op", "id", "ok")}
        if link.session != session:
            link.session = session
        link.snapshot_info = info
        packed = protocol.packb(info)                 # stored with the session's progress
        t = self._track(link, session)
        if packed != link.snapshot_packed:
            link.snapshot_packed = packed
            self._save_soon(link, t)
        if last > t.known_last:
            t.known_last = last
        t.dirty = True
        for prev in hdr.get("previous_sessions") or []:
            if (isinstance(prev, list) and len(prev) == 2 and isinstance(prev[0], str)
                    and isinstance(prev[1], int)):
                pt = self._track(link, prev[0])
                pt.unavailable = False      # the station holds it (again: e.g. after its restart)
                if prev[1] > pt.known_last:
                    pt.known_last = prev[1]
                    pt.dirty = True
        self._request_replay(link, now)

    def _on_replay(self, link: _Link, req: _Request, hdr: dict, payload, now: int) -> None:
        t = link.tracks[req.context]
        t.replay_id = None
        if not hdr["ok"]:
            link.counts["replay_errors"] += 1
            if hdr.get("code") == "unknown_session":
                lo = 0 if t.next_seq is None else t.next_seq
                if t.known_last >= lo:
                    self.store.add_gap(link.id, t.session, lo, t.known_last, "session unavailable")
                    link.counts["lost"] += t.known_last - lo + 1
                t.unavailable = True
                self._save_soon(link, t)
            t.retry_at = now + RETRY_NOT_YET_NS
            return
        msgs = protocol.decode_replay_payload(link.id, t.session, payload)
        served_to = hdr.get("served_to")
        last = hdr.get("last_seq")
        if not isinstance(served_to, int) or not isinstance(last, int):
            raise protocol.ProtocolError("replay reply malformed")
        if t.next_seq is None:
            if msgs:
                t.next_seq = msgs[0].seq  # the session starts here
            elif served_to >= hdr.get("from_seq", 0):
                t.next_seq = served_to + 1
            if t.next_seq is not None:
                self._save_soon(link, t)
        link.counts["replayed"] += len(msgs)
        for m in msgs:
            if m.session == t.session:
                self._accept(link, m, now, live=False)
        if last > t.known_last:
            t.known_last = last
        # seqs up to served_to that the station did not send do not exist there: a hole
        while t.next_seq is not None and t.next_seq <= served_to:
            nxt_have = min((s for s in t.ahead if s > t.next_seq), default=served_to + 1)
            hi = min(nxt_have, served_to + 1) - 1
            self.store.add_gap(link.id, t.session, t.next_seq, hi, "not in station journal")
            link.counts["lost"] += hi - t.next_seq + 1
            self._save_soon(link, t)
            t.next_seq = hi + 1
            while t.next_seq in t.ahead:
                self._delivered.append(t.ahead.pop(t.next_seq))
                t.next_seq += 1
        t.dirty = True
        if not hdr.get("more"):
            t.retry_at = now + RETRY_NOT_YET_NS if t.missing() else 0
        self._request_replay(link, now)

    def _on_clock(self, link: _Link, req: _Request, hdr: dict, payload, now: int) -> None:
        link.probe_inflight = False
        st = hdr.get("t_ns")
        if not hdr["ok"] or not isinstance(st, int):
            return
        rtt = now - req.sent_ns
        offset = st - (req.sent_ns + now) // 2
        link.probes.append((rtt, offset))
        if len(link.probes) >= self.c.clock_probes:
            rtt, offset = min(link.probes)
            link.probes = []
            link.offset_ns, link.rtt_ns, link.clock_measured_ns = offset, rtt, now
            self.store.add_clock(link.id, offset, rtt)
            link.next_probe_ns = now + self.c.clock_probe_interval_s * 1_000_000_000
        else:
            link.next_probe_ns = now  # next probe right away

    def _on_command(self, link: _Link, req: _Request, hdr: dict, payload, now: int) -> None:
        fut = req.future
        if fut is None or fut.done():
            return
        if hdr["ok"]:
            ack = hdr.get("ack")
            fut.set_result(ack if isinstance(ack, dict) else {})
        else:
            fut.set_exception(CommandError(f"station {link.id} refused the command: {hdr['error']}"))

    def _recv_monitor(self, link: _Link, now: int) -> bool:
        """Read the DEALER's monitor events until there are none (returns False)."""
        while True:
            try:
                msg = link.monitor.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return False
            except zmq.ZMQError:
                return False
            try:
                ev = parse_monitor_message(msg)["event"]
            except Exception:
                continue
            if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.handshake_ok = True
                link.auth_failed = ""
                link.fail_since_ns = 0
                link.next_snapshot_ns = 0   # (re)connected: resync now
                link.snapshot_inflight = False
            elif ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                link.counts["auth_failed"] += 1
                if not link.auth_failed:
                    link.reconnect_at = now + REAUTH_NS
                link.auth_failed = "the station refused this console's key (not on its allow-list)"
            elif ev in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                # also what a relay in front of a station that is down looks like: only a failure
                # that persists (see _publish_states) means a wrong pinned key
                link.counts["handshake_failed"] += 1
                if not link.fail_since_ns:
                    link.fail_since_ns = now
            elif ev == zmq.EVENT_DISCONNECTED:
                link.handshake_ok = False


def _settle(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def format_line(m: Message, width: int = 100) -> str:
    """One line per message for ``station console --plain``."""
    short = " ".join(f"{k}={_short(v)}" for k, v in list(m.data.items())[:8])
    line = f"{m.station} {m.session} {m.seq:>7} {m.kind:<8} {short}"
    return line if len(line) <= width else line[: width - 3] + "..."


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (dict, list)):
        return f"<{type(v).__name__}:{len(v)}>"
    s = str(v)
    return s if len(s) <= 24 else s[:21] + "..."
