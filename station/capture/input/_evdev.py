"""evdev backend of the input source: ``EvdevInput`` reads the kernel's input devices
(``/dev/input/event*``) itself, so input the display server never saw from hardware (XTEST,
``XSendEvent``, a Wayland compositor's) cannot pass for it.

Chosen by ``station.capture.platform.input_backend`` where ``/dev/input`` is readable by the
capture account (group ``input``), under X11 and Wayland alike; ``InputSource``
(``station.capture.input``) is the public class and describes the events.

How it reads: ONE thread. Every ``SCAN_S`` (0.5 s) it lists ``dev_dir`` (``DeviceSet.scan``):
a new node is opened (``O_RDONLY | O_NONBLOCK``, never grabbed: the candidate's session keeps
its input), its clock set to CLOCK_MONOTONIC (``EVIOCSCLOCKID``: the station clock's source), its
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

Conversion (``Converter``, one code path for every device; kernel semantics of
``Documentation/input/event-codes.rst``): each record's stamp is its own timeval (ns on the
station clock; a stamp more than ``MAX_EVENT_AGE_NS`` from the read time, e.g. a device whose
clock could not be set, is replaced by the read time and counted, ``clock_fallbacks``).

- ``EV_KEY`` keys (codes < ``BTN_MISC``): value 1 = press, 2 = kernel auto-repeat (a press with
  ``repeat=True``), 0 = release (dropped, counted ``stray_releases``, for a key not known down).
  Class from the key code (``KEY_CLASSES``, the table of ``classify_key``/``classify_keysym``;
  the code is the physical key, so a remapped layout does not change classes except for
  letters-vs-symbols). Characters: see "Characters" below.
- ``EV_KEY`` buttons: BTN_LEFT/MIDDLE/RIGHT/SIDE/EXTRA = X buttons 1/2/3/8/9 (``MouseClick``),
  press and release (repeats ignored); touch and tool bits are not clicks.
- ``EV_REL`` REL_X/REL_Y: summed per ``SYN_REPORT`` frame; a frame with motion is ONE move of
  length hypot(dx, dy) (device counts, = px without pointer acceleration). REL_WHEEL (+1 = up =
  +dy) and REL_HWHEEL (+1 = right = +dx) are ``MouseScroll`` steps; REL_WHEEL_HI_RES and
  REL_HWHEEL_HI_RES (120 per notch) are ignored: the kernel sends the detent events too.
- ``EV_ABS`` ABS_X/ABS_Y (touchpads, tablets): a frame that changes them is one move, length in
  device units.
- ``EV_SYN`` SYN_REPORT ends a frame; SYN_DROPPED (the device's buffer overflowed): everything
  up to the next SYN_REPORT is discarded, as the kernel documents, and counted (``dropped``).
- ``EV_MSC`` (MSC_SCAN), LEDs, others: ignored.

Mouse bins: moves of all devices go into 10 ms bins on the station clock (``MouseBin``: count,
path length rounded, how many of the moves were injected); a bin is emitted when a later bin's
move arrives, else ``BIN_CLOSE_LAG_NS`` after its end; a move read after its bin was emitted
counts in the next one.

Characters (typing-task windows, D5): the kernel gives key codes, not what a key types under the
session's layout, so characters come from the display server, and only for keys the kernel saw.
Where an X display is reachable, ``TwinChars`` reads XInput 2 raw key events (keys only, its own
connection and thread; keymap and modifiers as the XI2 backend). A kernel press in a typing-task
window waits its grace (``CHAR_GRACE_NS``) and takes the character of its X twin: the X press of
X keycode = code + 8 within ``TWIN_NS`` (20 ms). An X press without a kernel twin (XTEST, i.e.
``xdotool``; a device the capture cannot read) is emitted as an injected key, with its character
inside a typing-task window, ``SETTLE_NS`` after its time. Outside typing-task windows no
character is kept (the X side still tells injected presses). Without a display (Wayland) there are
no characters. Limits: auto-repeated characters are not recorded (X and the kernel repeat on
their own schedules); a remapped keyboard whose X keycodes are not code + 8 gets no characters.

Evidence: every event of a device without evidence (``Policy.decide``) is emitted with
``injected`` set (and so counted, alerted and left out of every figure by the engine).

Failure modes: ``dev_dir`` missing or no readable node -> ``SourceHealth("lost")`` with the
reason (rescanned); a node that cannot be opened (EACCES) is listed in the health detail;
a device unplugged -> "removed" and reading goes on with the others.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import math
import os
import select
import struct
import threading
from typing import Any, Iterable

from evdev import ecodes as E

from station.capture import platform
from station.capture.base import ThreadedSource
from station.clock import monotonic_ns
from station.events import DeviceEvent, KeyClass, MouseBin, MouseClick, MouseScroll

from ._base import BIN_NS, CHAR_GRACE_NS, RESOLVE, KeyPipeline
from .devices import Identity, Policy, identity_from_sysfs, list_nodes

EVENT = struct.Struct("@llHHi")       # struct input_event: struct timeval, __u16 type, code, __s32 value
EVIOCSCLOCKID = 0x400445A0            # _IOW('E', 0xa0, int)
CLOCK_MONOTONIC = 1
SCAN_S = 0.5
READ_RECORDS = 256                    # records per os.read
READ_BUDGET_EVENTS = 48               # after a read with motion, wait until about this many records wait ...
READ_BATCH_MIN_S, READ_BATCH_MAX_S = 0.010, 0.200   # ... within these bounds (see EvdevInput._run)
BIN_CLOSE_LAG_NS = 20_000_000
MAX_EVENT_AGE_NS = 2_000_000_000
INJECTED_DETECTION = ("evdev backend: input from devices without evidence (input.allow; virtual devices "
                      "such as uinput by default) is marked injected; XTEST and XSendEvent never reach the kernel "
                      "devices read")

BUTTONS = {E.BTN_LEFT: 1, E.BTN_MIDDLE: 2, E.BTN_RIGHT: 3, E.BTN_SIDE: 8, E.BTN_EXTRA: 9}


def _key_classes() -> dict[int, int]:
    t: dict[int, int] = {}
    printable = [*range(E.KEY_1, E.KEY_EQUAL + 1), *range(E.KEY_Q, E.KEY_RIGHTBRACE + 1),
                 *range(E.KEY_A, E.KEY_GRAVE + 1), *range(E.KEY_BACKSLASH, E.KEY_SLASH + 1), E.KEY_SPACE,
                 E.KEY_102ND, E.KEY_KPASTERISK, *range(E.KEY_KP7, E.KEY_KPDOT + 1), E.KEY_KPSLASH,
                 E.KEY_KPEQUAL, E.KEY_KPCOMMA]
    for c in printable:
        t[c] = KeyClass.PRINTABLE
    for c in (E.KEY_LEFTCTRL, E.KEY_LEFTSHIFT, E.KEY_RIGHTSHIFT, E.KEY_LEFTALT, E.KEY_CAPSLOCK,
              E.KEY_NUMLOCK, E.KEY_SCROLLLOCK, E.KEY_RIGHTCTRL, E.KEY_RIGHTALT, E.KEY_LEFTMETA,
              E.KEY_RIGHTMETA):
        t[c] = KeyClass.MODIFIER
    for c in (E.KEY_TAB, E.KEY_LEFT, E.KEY_RIGHT, E.KEY_UP, E.KEY_DOWN, E.KEY_HOME, E.KEY_END,
              E.KEY_PAGEUP, E.KEY_PAGEDOWN):
        t[c] = KeyClass.NAVIGATION
    t[E.KEY_BACKSPACE] = KeyClass.BACKSPACE
    t[E.KEY_DELETE] = KeyClass.DELETE
    t[E.KEY_ENTER] = t[E.KEY_KPENTER] = KeyClass.ENTER
    # keypad digits: navigation keys with Num Lock off; the code does not say, printable is kept
    # (a typing burst either way)
    for c in (E.KEY_KPMINUS, E.KEY_KPPLUS):
        t[c] = KeyClass.PRINTABLE
    return t


KEY_CLASSES = _key_classes()


def key_class(code: int) -> int:
    """KeyClass of a kernel key code (``KEY_*``); OTHER for anything not in ``KEY_CLASSES``."""
    return KEY_CLASSES.get(code, KeyClass.OTHER)


def decode(buf: bytes | bytearray | memoryview) -> list[tuple[int, int, int, int]]:
    """Whole ``input_event`` records of ``buf`` -> [(t_ns, type, code, value)]; a trailing
    partial record is ignored (the caller keeps it; a device read never returns one)."""
    n = len(buf) - len(buf) % EVENT.size
    return [(sec * 1_000_000_000 + usec * 1000, typ, code, value)
            for sec, usec, typ, code, value in EVENT.iter_unpack(memoryview(buf)[:n])]


def encode(records: Iterable[tuple[int, int, int, int]]) -> bytes:
    """The inverse of ``decode`` (tests write recorded streams with it)."""
    return b"".join(EVENT.pack(t // 1_000_000_000, (t % 1_000_000_000) // 1000, typ, code, value)
                    for t, typ, code, value in records)


class _Device:
    """Conversion state of one device: evidence, the frame being assembled, keys held."""

    def __init__(self, node: str, evidence: bool, detail: str = ""):
        self.node = node
        self.injected = not evidence
        self.detail = detail
        self.dx = self.dy = 0
        self.abs: list[int | None] = [None, None]
        self.abs_moved = False
        self.abs_dist = 0.0
        self.dropping = False
        self.down: set[int] = set()


class Converter:
    """``input_event`` records -> station events on ``keys`` (a ``KeyPipeline``) and ``sink``
    (see module docstring). One per source; not thread-safe."""

    def __init__(self, sink: Any, keys: KeyPipeline, counts: collections.Counter):
        self.sink, self.keys, self.counts = sink, keys, counts
        self.twin: TwinChars | None = None
        self.moved = False          # a move since the reader last looked (read batching)
        self.bin_t = -1
        self.bin_count = self.bin_inj = 0
        self.bin_dist = 0.0
        self.closed_until = 0

    def feed(self, dev: _Device, records: Iterable[tuple[int, int, int, int]], now: int) -> None:
        for t, typ, code, value in records:
            if now - t > MAX_EVENT_AGE_NS or t - now > MAX_EVENT_AGE_NS:
                self.counts["clock_fallbacks"] += 1
                t = now
            if dev.dropping:
                if typ == E.EV_SYN and code == E.SYN_REPORT:
                    dev.dropping = False
                    dev.dx = dev.dy = 0
                    dev.abs_moved = False
                continue
            if typ == E.EV_SYN:
                if code == E.SYN_REPORT:
                    self._frame(dev, t)
                elif code == E.SYN_DROPPED:
                    self.counts["dropped"] += 1
                    dev.dropping = True
            elif typ == E.EV_KEY:
                self._key(dev, t, code, value)
            elif typ == E.EV_REL:
                if code == E.REL_X:
                    dev.dx += value
                elif code == E.REL_Y:
                    dev.dy += value
                elif code == E.REL_WHEEL and value:
                    self.sink.put(MouseScroll(t, 0, value, dev.injected))
                    self.counts["scrolls"] += 1
                elif code == E.REL_HWHEEL and value:
                    self.sink.put(MouseScroll(t, value, 0, dev.injected))
                    self.counts["scrolls"] += 1
            elif typ == E.EV_ABS and code in (E.ABS_X, E.ABS_Y):
                i = 0 if code == E.ABS_X else 1
                old = dev.abs[i]
                if old is not None and old != value:
                    dev.abs_moved = True
                    dev.abs_dist += (value - old) ** 2
                dev.abs[i] = value

    def _frame(self, dev: _Device, t: int) -> None:
        if dev.dx or dev.dy:
            self._move(t, math.hypot(dev.dx, dev.dy), dev.injected)
        elif dev.abs_moved:
            self._move(t, math.sqrt(dev.abs_dist), dev.injected)
        dev.dx = dev.dy = 0
        dev.abs_moved, dev.abs_dist = False, 0.0

    def _key(self, dev: _Device, t: int, code: int, value: int) -> None:
        if code >= E.BTN_MISC and code < E.KEY_OK:
            button = BUTTONS.get(code)
            if button is not None and value in (0, 1):
                self.sink.put(MouseClick(t, button, bool(value), dev.injected))
                self.counts["clicks"] += 1
            return
        cls = key_class(code)
        if value == 1:
            dev.down.add(code)
            if self.twin is not None:
                self.twin.note(t, code)
                self.keys.press(t, cls, RESOLVE, dev.injected, False, code=code)
            else:
                self.keys.press(t, cls, "", dev.injected, False)
        elif value == 2:
            self.keys.press(t, cls, "", dev.injected, True)
            self.counts["kernel_repeats"] += 1
        elif value == 0:
            if code not in dev.down:
                self.counts["stray_releases"] += 1
                return
            dev.down.discard(code)
            self.keys.release(t, cls, dev.injected)

    def _move(self, t: int, dist: float, inj: bool) -> None:
        b = t - t % BIN_NS
        if b < self.closed_until:
            b = self.closed_until       # read after its bin was emitted: counts in the next one
        if self.bin_t >= 0 and b < self.bin_t:
            b = self.bin_t              # another device's earlier move, read later
        if b != self.bin_t:
            self.close_bin()
            self.bin_t = b
        self.bin_count += 1
        self.bin_inj += inj
        self.bin_dist += dist
        self.moved = True
        self.counts["moves"] += 1

    def close_bin(self) -> None:
        if self.bin_t >= 0 and self.bin_count:
            self.sink.put(MouseBin(self.bin_t, self.bin_count, int(round(self.bin_dist)), self.bin_inj))
            self.counts["mouse_bins"] += 1
            self.closed_until = self.bin_t + BIN_NS
        self.bin_t, self.bin_count, self.bin_inj, self.bin_dist = -1, 0, 0, 0.0

    def deadline(self) -> int | None:
        """Station-clock ns of the next timer (bin close, key char grace, X twin decision); None when none."""
        dl = self.keys.deadline()
        x = self.twin.held_back() if self.twin is not None else None
        if x is not None:
            dl = x + SETTLE_NS + 1 if dl is None else min(dl, x + SETTLE_NS + 1)
        if self.bin_t >= 0:
            b = self.bin_t + BIN_NS + BIN_CLOSE_LAG_NS
            dl = b if dl is None else min(dl, b)
        return dl

    def timers(self, now: int, force: bool = False) -> None:
        if self.bin_t >= 0 and (force or now >= self.bin_t + BIN_NS + BIN_CLOSE_LAG_NS):
            self.close_bin()
        self.keys.release_due(now, force=force)   # first: kernel presses ask their X twin's character
        if self.twin is not None:
            self.twin.sweep(now, self.keys, force=force)
            self.keys.release_due(now, force=force)

    def held_back(self) -> int | None:
        """The earliest station time (ns) of an event not emitted yet (open bin, queued key)."""
        out = self.bin_t if self.bin_t >= 0 else None
        try:
            p = self.keys.pending[0][0].t_ns
        except IndexError:
            p = None
        if p is not None:
            out = p if out is None else min(out, p)
        x = self.twin.held_back() if self.twin is not None else None
        if x is not None:
            out = x if out is None else min(out, x)
        return out


def _present(t_ns: int, node: str, ident: Identity, evidence: bool, detail: str) -> DeviceEvent:
    return DeviceEvent(t_ns, "input", node, "present", name=ident.name, bus=ident.bus, vendor=ident.vendor,
                       product=ident.product, serial=ident.serial, phys=ident.phys, virtual=ident.virtual,
                       evidence=evidence, detail=detail)


TWIN_NS = 20_000_000       # an X key press and its evdev twin are at most this far apart (ms stamps, read lag)
X_KEYCODE_OFFSET = 8       # X keycode = kernel key code + 8 (Xorg's evdev / libinput drivers, Xvfb's keymap)
SETTLE_NS = CHAR_GRACE_NS + 30_000_000   # an X press is decided (twin or injected) this long after its time
EV_LOG_NS = 2_000_000_000


class _NullSink:
    """The twin reader's own health and device events stay in it (the input source reports)."""

    def put(self, ev: Any) -> None:
        pass

    def put_many(self, evs: Iterable[Any]) -> None:
        pass

    def put_batch(self, batch: Any) -> None:
        pass


class TwinChars:
    """Typing-task characters from the display server, only for keys the kernel saw (see the
    module docstring, "Characters").

    An XInput 2 reader (``_xi2.Xi2Input`` on raw key events only, its own X connection and
    thread) hands every key press here (``press``, with the character only when the focus was
    ``typing_task``) and its releases. The evdev thread notes every kernel press (``note``);
    a typing-task press asks for its character when its grace is over (``char_for``: the X
    press of X keycode = code + 8 within ``TWIN_NS``); ``sweep`` decides every X press
    ``SETTLE_NS`` after its time: one with an evdev twin is done, one without (XTEST,
    ``XSendEvent``-free injection through the server, a device the capture cannot read) is put
    on the key pipeline flagged injected, with its character in a typing-task window, and so is
    its release. X auto-repeat presses are not twins of anything and are ignored."""

    def __init__(self, cfg: Any, focus_state: Any):
        from ._xi2 import KEY_MASK, Xi2Input
        self.focus_state = focus_state
        self._lock = threading.Lock()
        self.x: collections.deque = collections.deque()       # [t, kind "p"/"r", kc, cls, char, matched]
        self.ev: collections.deque = collections.deque()      # (t, code) of kernel presses
        self.done: collections.deque = collections.deque()    # X presses decided as twins (char_for)
        self.unmatched_down: set[int] = set()
        self.counts: collections.Counter = collections.Counter()
        self.reader = Xi2Input(cfg, focus_state, keys=self, raw_mask=KEY_MASK)
        self.pending = ()                                     # the reader's _timeout asks deadline()

    def start(self) -> None:
        self.reader.start(_NullSink())

    def stop(self) -> None:
        self.reader.stop()

    @property
    def connected(self) -> bool:
        return self.reader.connected.is_set()

    # -- the X reader's side (its thread) ---------------------------------------------------
    def press(self, t: int, cls: int, ch: str, inj: bool, repeat: bool, code: int = 0) -> None:
        if repeat:
            return
        keep = ch if ch and self.focus_state.category_at(t) == "typing_task" else ""
        with self._lock:
            self.x.append([t, "p", code, cls, keep, False])

    def release(self, t: int, cls: int, inj: bool, code: int = 0) -> None:
        with self._lock:
            self.x.append([t, "r", code, cls, "", False])

    def deadline(self) -> int | None:
        return None

    def release_due(self, now: int, force: bool = False) -> None:
        pass

    # -- the evdev thread's side ------------------------------------------------------------
    def note(self, t: int, code: int) -> None:
        with self._lock:
            self.ev.append((t, code))
            while self.ev and self.ev[0][0] < t - EV_LOG_NS:
                self.ev.popleft()

    def char_for(self, t: int, code: int) -> str:
        """The character of the X twin of the kernel press (t, code); "" when it has none."""
        kc = code + X_KEYCODE_OFFSET
        with self._lock:
            for queue in (self.x, self.done):
                for e in queue:
                    if e[1] == "p" and e[2] == kc and abs(e[0] - t) <= TWIN_NS and not e[5]:
                        e[5] = True
                        return e[4]
        self.counts["twin_missing"] += 1
        return ""

    def sweep(self, now: int, keys: KeyPipeline, force: bool = False) -> None:
        """Decide the X events older than ``now - SETTLE_NS`` (all with ``force``)."""
        out = []
        with self._lock:
            while self.x and (force or self.x[0][0] < now - SETTLE_NS):
                e = self.x.popleft()
                t, kind, kc, cls, ch, matched = e
                if kind == "p":
                    if not matched:
                        code = kc - X_KEYCODE_OFFSET
                        matched = any(c == code and abs(et - t) <= TWIN_NS for et, c in self.ev)
                    if matched:
                        self.done.append(e)        # its character stays askable (char_for) a little longer
                        while self.done and self.done[0][0] < t - EV_LOG_NS:
                            self.done.popleft()
                        self.counts["twins"] += 1
                        self.unmatched_down.discard(kc)
                    else:
                        self.counts["no_twin"] += 1
                        self.unmatched_down.add(kc)
                        out.append(("p", t, cls, ch))
                elif kc in self.unmatched_down:
                    self.unmatched_down.discard(kc)
                    out.append(("r", t, cls, ""))
        for kind, t, cls, ch in out:
            if kind == "p":
                keys.press(t, cls, ch, True, False)
            else:
                keys.release(t, cls, True)

    def held_back(self) -> int | None:
        with self._lock:
            return self.x[0][0] if self.x else None


class DeviceSet:
    """The open devices of ``dev_dir``: ``scan(t_ns)`` opens new nodes and closes vanished ones,
    returning the ``DeviceEvent``s of the change (the monitor: the same code at start and on
    hot-plug). ``close(node, t_ns, why)`` forgets one (read error / end of file)."""

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
            if node in self.open:
                continue
            try:
                st = os.stat(node)
            except OSError:
                continue
            inode = (st.st_dev, st.st_ino)
            if inode in self.dead:
                continue
            ident = identity_from_sysfs(node, self.sys_root)
            if ident is None:
                self.no_sysfs.append(node)
                continue
            if not (ident.keyboard or ident.pointer):
                continue                    # power button, lid switch, sound jack: no input evidence
            try:
                fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    self.denied.append(node)
                continue
            try:
                fcntl.ioctl(fd, EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))
            except OSError:
                self.counts["clock_not_set"] += 1   # a FIFO or file (tests); stamps are checked anyway
            evidence, detail = self.policy.decide(ident)
            self.open[node] = (fd, _Device(node, evidence, detail), ident, inode)
            out.append(_present(t_ns, node, ident, evidence, detail))
        return out

    def present(self, t_ns: int) -> list[DeviceEvent]:
        """The open devices as "present" events at ``t_ns`` (safe from another thread)."""
        return [_present(t_ns, node, v[2], not v[1].injected, v[1].detail) for node, v in dict(self.open).items()]

    def close(self, node: str, t_ns: int, why: str) -> DeviceEvent:
        fd, dev, ident, inode = self.open.pop(node)
        try:
            os.close(fd)
        except OSError:
            pass
        if why == "end of file":
            self.dead.add(inode)
        return DeviceEvent(t_ns, "input", node, "removed", name=ident.name, bus=ident.bus, vendor=ident.vendor,
                           product=ident.product, serial=ident.serial, phys=ident.phys, virtual=ident.virtual,
                           evidence=not dev.injected, detail=why)

    def close_all(self, t_ns: int) -> list[DeviceEvent]:
        return [self.close(n, t_ns, "capture stopped") for n in list(self.open)]


class EvdevInput(ThreadedSource):
    """The evdev backend of ``InputSource`` (see module docstring). ``dev_dir``/``sys_root``:
    where the nodes and sysfs are (tests: fixture trees)."""

    name = "input"
    thread_name = "station-input-evdev"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None,
                 connected: threading.Event | None = None, dev_dir: str = "/dev/input", sys_root: str = "/sys",
                 twin_chars: bool = True):
        self.cfg = cfg
        self.twin_chars = twin_chars   # read typing-task characters from the X display (TwinChars)
        self.twin: TwinChars | None = None
        self.focus_state = focus_state
        self.key_times = key_times
        self.connected = connected if connected is not None else threading.Event()
        self.dev_dir, self.sys_root = dev_dir, sys_root
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
        next_scan = 0
        wake = self._wake_r
        pending: dict[str, bytes] = {}
        last_read = monotonic_ns()
        try:
            while not self._stop.is_set():
                now = monotonic_ns()
                if now >= next_scan:
                    changes = devs.scan(now)
                    if changes:
                        self._sink.put_many(changes)
                    self._report(devs)
                    next_scan = now + int(SCAN_S * 1e9)
                fds = {v[0]: n for n, v in devs.open.items()}
                dl = conv.deadline()
                until = next_scan if dl is None else min(dl, next_scan)
                t_poll = monotonic_ns()
                r, _, _ = select.select([wake, *fds], [], [], 0)
                if not r:
                    self._read_until = t_poll - 1_000_000
                    self._idle_since = t_poll
                    if self.key_times is not None:
                        self.key_times.resume()
                    r, _, _ = select.select([wake, *fds], [], [], max(0.0, (until - monotonic_ns()) / 1e9))
                    self._idle_since = None
                if wake in r:
                    break
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
            self.connected.clear()

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
