"""evdev backend of the input source: ``EvdevInput`` reads the kernel's input devices
(``/dev/input/event*``) itself, so input the display server never saw from hardware (XTEST,
``XSendEvent``, a Wayland compositor's) cannot pass for it.

Chosen by ``station.capture.platform.input_backend`` where ``/dev/input`` is readable by the
capture account (group ``input``), under X11 and Wayland alike; ``InputSource``
(``station.capture.input``) is the public class and describes the events.

How it reads: ONE thread. At start it lists ``dev_dir`` (``DeviceSet.scan``), then follows
hot-plug by udev's events (``_hotplug``: woken only when an input device is added or removed,
``DeviceSet.on_uevent``), or, where udev does not run, by listing ``dev_dir`` again every
``SCAN_S`` (0.5 s); ``status()["hotplug"]`` says which. A new node is opened (``O_RDONLY |
O_NONBLOCK``, never grabbed: the candidate's session keeps its input), its clock set to CLOCK_MONOTONIC (``EVIOCSCLOCKID``: the station clock's source), its
identity read from sysfs and decided by the allow-list (``devices.Policy``), and a
``DeviceEvent("input", node, "present", ...)`` emitted; a node that went away (or whose read
gives ENODEV / end of file) is closed with ``DeviceEvent(..., "removed")``. In between it waits
in ``select`` on the open nodes and reads whole ``input_event`` records (``decode``: struct
timeval + type, code, value; 24 bytes on 64-bit) with ``os.read``; after a read with motion it
waits until about ``READ_BUDGET_EVENTS`` (48) records are buffered at the recent rate, 10-200
ms, before reading again (3/4 of the kernel's smallest client buffer, 64 events; a mouse's is
128; stamps are the kernel's, so the wait moves none). The same code reads a FIFO
or file in place of a device (tests: ``tests/test_input_evdev.py``); there ``EVIOCSCLOCKID``
fails (ENOTTY) and the records' own stamps are taken as they are.

Conversion of the records to station events: ``_evdev_records`` (``Converter``, one code path
for every device). Typing-task characters: ``_twin`` (``TwinChars``).

Evidence: every event of a device without evidence (``Policy.decide``) is emitted with
``injected`` set (and so counted, alerted and left out of every figure by the engine).

Failure modes: ``dev_dir`` missing or no readable node -> ``SourceHealth("lost")`` with the
reason (until a device is plugged in, or the next rescan); a node that cannot be opened
(EACCES) is listed in the health detail; a device unplugged -> "removed" and reading goes on
with the others; udev's socket overflowing (ENOBUFS) -> one rescan; failing otherwise -> rescans.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import select
import struct
import threading
from pathlib import Path
from typing import Any

from station.capture import platform
from station.capture.base import ThreadedSource
from station.clock import monotonic_ns
from station.events import DeviceEvent

from ._base import KeyPipeline
from ._evdev_records import EVENT, Converter, _Device, decode, encode, key_class  # noqa: F401 (one import for tests)
from ._twin import X_KEYCODE_OFFSET, TwinChars  # noqa: F401
from ._hotplug import RESCAN_HOW, SCAN_S, Uevent, open_monitor
from .devices import Identity, Policy, identity_from_sysfs, list_nodes

EVIOCSCLOCKID = 0x400445A0            # _IOW('E', 0xa0, int)
CLOCK_MONOTONIC = 1
READ_RECORDS = 256                    # records per os.read
READ_BUDGET_EVENTS = 48               # after a read with motion, wait until about this many records wait ...
READ_BATCH_MIN_S, READ_BATCH_MAX_S = 0.010, 0.200   # ... within these bounds (see EvdevInput._run)
INJECTED_DETECTION = ("evdev backend: input from devices without evidence (input.allow; virtual devices "
                      "such as uinput by default) is marked injected; XTEST and XSendEvent never reach the kernel "
                      "devices read")



class DeviceSet:
    """The open devices of ``dev_dir``: ``scan(t_ns)`` opens new nodes and closes vanished ones,
    ``on_uevent(ev, t_ns)`` opens or closes the one node a udev event names; both return the
    ``DeviceEvent``s of the change and open a node the same way (``_open``). ``close(node, t_ns,
    why)`` forgets one (read error / end of file)."""

    def __init__(self, dev_dir: str, sys_root: str, policy: Policy, counts: collections.Counter):
        self.dev_dir, self.sys_root, self.policy, self.counts = dev_dir, sys_root, policy, counts
        self.open: dict[str, tuple[int, _Device, Identity, tuple[int, int]]] = {}   # node -> fd, state, identity, inode
        self.dead: set[tuple[int, int]] = set()      # (st_dev, st_ino) of nodes read to end of file
        self.denied: list[str] = []
        self.no_sysfs: list[str] = []

    def scan(self, t_ns: int) -> list[DeviceEvent]:
        out: list[DeviceEvent] = []
        nodes = list_nodes(self.dev_dir)
        present = set(nodes)
        for node in list(self.open):
            if node not in present:
                out.append(self.close(node, t_ns, "removed"))
        self.denied, self.no_sysfs = [], []
        for node in nodes:
            if node not in self.open:
                ev = self._open(node, t_ns)
                if ev is not None:
                    out.append(ev)
        return out

    def on_uevent(self, uevent: Uevent, t_ns: int) -> list[DeviceEvent]:
        """Act on one udev event: "add" of an event node opens it (as ``scan`` would), "remove"
        closes it; every other event (change, bind, the ``inputN`` parent, ``mouseN``) is none of
        its business. The node is looked for in ``dev_dir`` by its name (``eventN``)."""
        name = uevent.event_node()
        if not name:
            return []
        node = str(Path(self.dev_dir) / name)
        if uevent.action == "add" and node not in self.open:
            self.denied = [n for n in self.denied if n != node]
            self.no_sysfs = [n for n in self.no_sysfs if n != node]
            ev = self._open(node, t_ns)
            return [ev] if ev is not None else []
        if uevent.action == "remove" and node in self.open:
            return [self.close(node, t_ns, "removed")]
        return []

    def _open(self, node: str, t_ns: int) -> DeviceEvent | None:
        """Open ``node`` when it is a keyboard or pointer not read to its end before; its
        "present" event, or None (gone, no sysfs entry, another kind of device, not readable:
        noted in ``no_sysfs`` / ``denied``)."""
        try:
            st = os.stat(node)
        except OSError:
            return None
        inode = (st.st_dev, st.st_ino)
        if inode in self.dead:
            return None
        ident = identity_from_sysfs(node, self.sys_root)
        if ident is None:
            self.no_sysfs.append(node)
            return None
        if not (ident.keyboard or ident.pointer):
            return None                     # power button, lid switch, sound jack: no input evidence
        try:
            fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                self.denied.append(node)
            return None
        try:
            fcntl.ioctl(fd, EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))
        except OSError:
            self.counts["clock_not_set"] += 1   # a FIFO or file (tests); stamps are checked anyway
        evidence, detail = self.policy.decide(ident)
        self.open[node] = (fd, _Device(node, evidence, detail), ident, inode)
        return ident.device_event(t_ns, node, "present", evidence, detail)

    def present(self, t_ns: int) -> list[DeviceEvent]:
        """The open devices as "present" events at ``t_ns`` (safe from another thread)."""
        return [v[2].device_event(t_ns, node, "present", not v[1].injected, v[1].detail) for node, v in dict(self.open).items()]

    def close(self, node: str, t_ns: int, why: str) -> DeviceEvent:
        fd, dev, ident, inode = self.open.pop(node)
        try:
            os.close(fd)
        except OSError:
            pass
        if why == "end of file":
            self.dead.add(inode)
        return ident.device_event(t_ns, node, "removed", not dev.injected, why)

    def close_all(self, t_ns: int) -> list[DeviceEvent]:
        return [self.close(n, t_ns, "capture stopped") for n in list(self.open)]


class EvdevInput(ThreadedSource):
    """The evdev backend of ``InputSource`` (see module docstring). ``dev_dir``/``sys_root``:
    where the nodes and sysfs are (tests: fixture trees)."""

    name = "input"
    thread_name = "station-input-evdev"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None,
                 connected: threading.Event | None = None, dev_dir: str = "/dev/input", sys_root: str = "/sys",
                 twin_chars: bool = True, hotplug: Any = None):
        self.cfg = cfg
        self.twin_chars = twin_chars   # read typing-task characters from the X display (TwinChars)
        self.twin: TwinChars | None = None
        self.focus_state = focus_state
        self.key_times = key_times
        self.connected = connected if connected is not None else threading.Event()
        self.dev_dir, self.sys_root = dev_dir, sys_root
        # hot-plug: udev's monitor (``_hotplug``), chosen at start; tests give an object with the same
        # fileno() / receive() / how (recorded udev events)
        self._monitor = hotplug
        self.hotplug = hotplug.how if hotplug is not None else "not started"
        self.counts: collections.Counter = collections.Counter()
        self.reconnects = 0
        self._conv: Converter | None = None
        self._devs: DeviceSet | None = None
        self._idle_since: int | None = None   # set while the thread waits with nothing left to read
        self._read_until = 0
        super().__init__()

    def status(self) -> dict[str, Any]:
        h = self._health
        twin = self.twin
        extra = {} if twin is None else {"chars_from_x": twin.connected, **{f"x_{k}": v for k, v in twin.counts.items()}}
        return {"state": h.state if h else "stopped", "detail": h.detail if h else "",
                "reconnects": self.reconnects, "queued": 0, "injected_detection": INJECTED_DETECTION,
                "hotplug": self.hotplug,
                **self.counts, **extra}

    def device_set(self) -> list[DeviceEvent]:
        """The devices open now, as "present" events stamped now (re-announced on a reconnect)."""
        devs = self._devs
        return devs.present(monotonic_ns()) if devs is not None and self._thread is not None else []

    def delivered_until(self) -> int | None:
        """Station time (ns) up to which every event read is in the sink: the time of the last
        poll that found nothing more to read (now, while the thread waits idle), held back to
        the first event still queued (an open mouse bin; a key waiting for its character grace,
        ``CHAR_GRACE_NS``)."""
        idle = self._idle_since
        t = monotonic_ns() - 1_000_000 if idle is not None else self._read_until
        conv = self._conv
        held = conv.held_back() if conv is not None else None
        if held is not None:
            t = min(t, held - 1)
        return t

    def _run(self) -> None:
        policy = Policy.from_config(self.cfg)
        twin = None
        if self.twin_chars and platform.detect().capturable:   # an X display: typing-task characters
            twin = self.twin = TwinChars(self.cfg, self.focus_state)
            twin.start()
        keys = KeyPipeline(self._sink, self.focus_state, self.key_times, self.counts,
                           resolve=twin.char_for if twin is not None else None)
        conv = self._conv = Converter(self._sink, keys, self.counts)
        conv.twin = twin
        devs = self._devs = DeviceSet(self.dev_dir, self.sys_root, policy, self.counts)
        monitor = self._monitor
        opened = None                 # the monitor this run opened (closed at its end)
        if monitor is None:
            monitor, why = open_monitor()
            opened = monitor
            self.hotplug = monitor.how if monitor is not None else f"{RESCAN_HOW} ({why})"
        next_scan: int | None = 0     # the device set at start; then only without a monitor (or after it failed)
        wake = self._wake_r
        pending: dict[str, bytes] = {}
        last_read = monotonic_ns()
        try:
            while not self._stop.is_set():
                now = monotonic_ns()
                if next_scan is not None and now >= next_scan:
                    changes = devs.scan(now)
                    if changes:
                        self._sink.put_many(changes)
                    self._report(devs)
                    next_scan = None if monitor is not None else now + int(SCAN_S * 1e9)
                fds = {v[0]: n for n, v in devs.open.items()}
                waits = [wake, *fds] if monitor is None else [wake, monitor.fileno(), *fds]
                dl = conv.deadline()
                until = min((t for t in (dl, next_scan) if t is not None), default=None)
                t_poll = monotonic_ns()
                r, _, _ = select.select(waits, [], [], 0)
                if not r:
                    self._read_until = t_poll - 1_000_000
                    self._idle_since = t_poll
                    if self.key_times is not None:
                        self.key_times.resume()
                    timeout = None if until is None else max(0.0, (until - monotonic_ns()) / 1e9)
                    r, _, _ = select.select(waits, [], [], timeout)   # None: until a device, udev or stop
                    self._idle_since = None
                    self.counts["idle_wakeups"] += 1
                if wake in r:
                    break
                if monitor is not None and monitor.fileno() in r:
                    monitor, next_scan = self._hotplug(monitor, devs, next_scan)
                read_ns = monotonic_ns()
                n_records = 0
                for fd in r:
                    node = fds.get(fd)
                    if node is None:
                        continue
                    try:
                        chunk = os.read(fd, EVENT.size * READ_RECORDS)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        self._sink.put(devs.close(node, read_ns, f"read failed: {os.strerror(e.errno)}"))
                        pending.pop(node, None)
                        continue
                    if not chunk:
                        self._sink.put(devs.close(node, read_ns, "end of file"))
                        pending.pop(node, None)
                        continue
                    buf = pending.pop(node, b"") + chunk
                    cut = len(buf) - len(buf) % EVENT.size
                    if cut < len(buf):
                        pending[node] = buf[cut:]
                    n_records += cut // EVENT.size
                    conv.feed(devs.open[node][1], decode(buf[:cut]), read_ns)
                conv.timers(monotonic_ns())
                since, last_read = read_ns - last_read, read_ns
                if conv.moved:
                    # Let more arrive before reading again: until about READ_BUDGET_EVENTS records
                    # wait at the recent rate (10-200 ms): a 125 Hz mouse costs ~10 wake-ups a second,
                    # a 1000 Hz one ~100, not one per frame. The kernel keeps the frames meanwhile
                    # with their stamps (evdev's client buffer holds at least 64 events; an overflow
                    # is a SYN_DROPPED, counted). Not after a read without motion (keys at once).
                    conv.moved = False
                    if self.key_times is not None:
                        self.key_times.defer(read_ns - 1_000_000)
                    rate = n_records / max(since, 1) * 1e9           # records per second lately
                    self._stop.wait(min(READ_BATCH_MAX_S, max(READ_BATCH_MIN_S, READ_BUDGET_EVENTS / max(rate, 1.0))))
        finally:
            if twin is not None:
                twin.stop()
            conv.timers(monotonic_ns(), force=True)
            for ev in devs.close_all(monotonic_ns()):
                self._sink.put(ev)
            if opened is not None:
                opened.close()
            self.connected.clear()

    def _hotplug(self, monitor: Any, devs: DeviceSet, next_scan: int | None) -> tuple[Any, int | None]:
        """Act on the udev events waiting; (the monitor still in use or None, the next rescan).
        ENOBUFS (events dropped: the thread fell behind): one rescan. Any other socket failure:
        rescans from now on."""
        now = monotonic_ns()
        try:
            uevents = monitor.receive()
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.counts["udev_overflows"] += 1
                return monitor, now
            self.hotplug = f"{RESCAN_HOW} (udev's netlink failed: {os.strerror(e.errno or 0)})"
            return None, now
        self.counts["udev_events"] += len(uevents)
        changes = [ev for u in uevents for ev in devs.on_uevent(u, now)]
        if changes:
            self._sink.put_many(changes)
            self._report(devs)
        return monitor, next_scan

    def _report(self, devs: DeviceSet) -> None:
        n = len(devs.open)
        evid = sum(1 for v in devs.open.values() if not v[1].injected)
        extra = ""
        if devs.denied:
            extra = f"; cannot read {', '.join(devs.denied)} (the capture account needs group input)"
        if n:
            self._health.report("ok", f"reading {n} evdev device(s) in {self.dev_dir}, {evid} with evidence{extra}")
            self.connected.set()
        else:
            self._health.report("lost", f"no readable keyboard or pointer in {self.dev_dir}{extra}")
            self.connected.clear()
