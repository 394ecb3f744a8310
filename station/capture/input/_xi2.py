"""XInput 2 backend of the input source: ``Xi2Input`` (raw device events, XTEST flagged).

Chosen by ``station.capture.platform.input_backend`` (default on X11 with XInput >= 2.1);
``InputSource`` (``station.capture.input``) is the public class and describes the events.

How it reads: ONE thread with its own X connection. python-xlib opens the connection, reads the
server state (devices, keyboard mapping, XKB repeat controls, pointer position) and selects
``XI_RawKeyPress/RawKeyRelease/RawButtonPress/RawButtonRelease/RawMotion`` on the root window
for ``XIAllMasterDevices`` (each event once; its ``sourceid`` is the slave device that produced
it) plus ``XI_HierarchyChanged``. Then the thread takes the socket over and parses the stream
itself with ``struct`` (``_parse``): python-xlib's per-event machinery (locks, ``rq`` structs,
event objects) is not on the hot path, and the only request sent afterwards is a 8-byte
``QueryPointer`` per closed mouse bin, whose reply is read from the same stream without
waiting. After a read with motion, the thread waits ``READ_BATCH_S`` (400 ms) before reading
again: continuous motion, and typing meanwhile, cost ~3 wake-ups/s instead of one per event (a
Python wake-up costs 100-300 us of CPU on a busy machine: caches are cold). During such a wait
``key_times.defer`` tells the audio source's click rejection that presses after the last read
are not noted yet (it holds the frames near them). Stamps do not suffer from that: every raw event
carries the server's time, which Xorg/Xvfb take from CLOCK_MONOTONIC, the station clock's
source, in ms (``_stamp``: rounded up, 0-2 ms late, never before the event; read time when the
server's time is implausible). Mouse bins are closed when a later bin's move arrives, else
``BIN_CLOSE_LAG_NS`` (50 ms) after their end; a move read after its bin was closed counts in the
next bin.

Injected input: ``XIQueryDevice`` lists the slave devices; each gets an identity (from sysfs
when Xorg's driver names its kernel node in the "Device Node" property, else by name; those
whose name contains ``XTEST``, "Virtual core XTEST pointer/keyboard", one pair per master, are
the virtual XTEST devices) and the allow-list's decision (``devices.Policy``, ``input.allow``;
by default XTEST never gives evidence) and is announced as a ``DeviceEvent("input", "xi2:ID")``.
Every event whose ``sourceid`` is not a device with evidence is ``injected``. The list is read
again (and changes announced) on ``XI_HierarchyChanged``. NOT seen at all by raw events (so
neither counted nor flagged):
``XWarpPointer`` moves (``xdotool mousemove`` warps; ``mousemove_relative`` is XTEST) and
``XSendEvent`` events (delivered to one window, not through a device). See
``INJECTED_DETECTION``.

Keys: the class and character come from the keycode's keysym at the tracked modifier state
(``Keymap``: Shift, Caps Lock, Num Lock, AltGr = ISO_Level3_Shift (columns 4/5 of the core
mapping), Mode_switch (columns 2/3)); ``classify_keysym`` follows ``input.classify_key``'s table.
Initial Lock/NumLock state from the ``QueryPointer`` modifier mask; later toggled by their
presses. A raw release of a key not known to be down is dropped (the server drops it from
device events too; it also means a key held while connecting has no release). Limits: dead keys give a printable key without a character, compose sequences and
input methods are not followed, XKB group switches other than Mode_switch are not followed, a
keysym that xdotool maps on a spare keycode for a moment may be read after it was unmapped.
Auto-repeat: XKB's software auto-repeat does NOT produce raw events (measured on Xvfb/Xorg), so
repeats are derived: while a repeatable key (XKB per-key repeat mask, RepeatKeys control) is
the last key pressed and still down, a press with ``repeat=True`` is emitted at press time +
repeat delay, then every repeat interval (XKB ``GetControls``; 660/40 ms when XKB is absent),
until its release. Their stamps are those scheduled times (the server's own timer runs on the
same schedule, within a few ms). A raw press flagged ``XIKeyRepeat`` (the key was already down)
is a repeat press as the server says, and stops the derived repeats of that key.

Mouse: a ``RawMotion`` with an x or y valuator (bits 0/1 of its valuator mask; scroll-valuator
motion is not a move) counts as one move. Raw valuators cannot give the path: they are deltas
for relative motion but screen positions for absolute motion (XTEST, tablets) and the event does
not say which. So the thread asks for the pointer position (``QueryPointer``) once per read in
which bins closed (<= ~3/s while moving, none at rest): the straight line from the previous
position is shared by those bins in proportion to their move counts. The total over a straight
path is exact; a curve within one read (<= ~400 ms) counts as its chord, and a bin's share is an
estimate when the speed changed within the read. The first move of a burst (after
``BURST_GAP_NS`` = 100 ms without moves) asks for the position instead of using the last one,
so a warp during the pause does not count as distance; the moves read with that first one
(usually just it, a few px) are not counted in the distance. Bins still waiting for their reply when the connection drops are emitted
with distance 0. Buttons 4-7 are scroll steps (4 up = +dy, 5 down, 6 left = -dx, 7 right), on
press only; other buttons are clicks (press and release). Smooth-scroll valuators are not read:
the server's emulated button 4-7 events are.

Failure modes: X server gone (EOF / socket error) -> ``"lost"``, reconnect with backoff;
XInputExtension missing or < 2.0 -> ``"lost"`` with the hint to set
``STATION_INPUT_BACKEND=pynput`` (retried); Wayland / no display -> ``"lost"`` (platform message).
"""

from __future__ import annotations

import collections
import importlib.util
import math
import select
import struct
import threading
from pathlib import Path
from typing import Any, Iterable

from station.capture import platform
from station.capture.base import ThreadedSource, reconnect_loop
from station.capture.delivery import DeliveryBound
from station.clock import monotonic_ns
from station.events import DeviceEvent, KeyClass, MouseBin, MouseClick, MouseScroll

from ._base import BIN_NS, KeyPipeline
from .devices import Identity, Policy, identity_from_sysfs, xi2_identity

INJECTED_DETECTION = ("xi2 backend: events from slave devices without evidence (sourceid; XTEST unless on "
                      "input.allow) are marked injected; "
                      "XWarpPointer moves and XSendEvent events produce no raw events and are not seen")
DEFAULT_REPEAT_DELAY_MS = 660
DEFAULT_REPEAT_INTERVAL_MS = 40
BURST_GAP_NS = 100_000_000  # a move after this long without one starts a new burst (see _move)
STOP_DRAIN_S = 0.2
READ_BATCH_S = 0.400  # after a read with motion, wait this long before reading again
READ_MARGIN_NS = 5_000_000  # events stamped after (read time - this) may still be on their way
DELIVERY_MARGIN_NS = 100_000_000  # delivered_until: an event the server sends this much later than
                                  # its time (a frozen or very busy server) is late for the engine
BIN_CLOSE_LAG_NS = 50_000_000  # a bin without later moves is closed this long after its end
MAX_EVENT_AGE_NS = 2_000_000_000  # an event time older than this (vs read time) is not trusted  # on stop, wait this long at most for the last bins' pointer positions

# protocol numbers (X11, XI2, XKB)
_GENERIC_EVENT = 35
_MAPPING_NOTIFY = 34
_XI_HIERARCHY_CHANGED = 11
_XI_RAW_KEY_PRESS, _XI_RAW_KEY_RELEASE = 13, 14
_XI_RAW_BUTTON_PRESS, _XI_RAW_BUTTON_RELEASE, _XI_RAW_MOTION = 15, 16, 17
_XI_KEY_REPEAT = 1 << 16
_XI_ALL_DEVICES, _XI_ALL_MASTER_DEVICES = 0, 1
_XI_SLAVE_POINTER, _XI_SLAVE_KEYBOARD, _XI_FLOATING_SLAVE = 3, 4, 5
_RAW_MASK = sum(1 << e for e in (_XI_RAW_KEY_PRESS, _XI_RAW_KEY_RELEASE, _XI_RAW_BUTTON_PRESS,
                                 _XI_RAW_BUTTON_RELEASE, _XI_RAW_MOTION))
KEY_MASK = (1 << _XI_RAW_KEY_PRESS) | (1 << _XI_RAW_KEY_RELEASE)
_QUERY_POINTER_OPCODE = 38
_LOCK_MASK = 2
_SCROLL_BUTTONS = {4: (0, 1), 5: (0, -1), 6: (-1, 0), 7: (1, 0)}

# -- keysym classification ------------------------------------------------------------------
_KS = {  # keysym -> (KeyClass, char); the same table as input.classify_key for pynput keys
    0xff08: (KeyClass.BACKSPACE, ""),                                # BackSpace
    0xffff: (KeyClass.DELETE, ""), 0xff9f: (KeyClass.DELETE, ""),    # Delete, KP_Delete
    0xff0d: (KeyClass.ENTER, "\n"), 0xff8d: (KeyClass.ENTER, "\n"),  # Return, KP_Enter
    0x0020: (KeyClass.PRINTABLE, " "), 0xff80: (KeyClass.PRINTABLE, " "),  # space, KP_Space
    0xff09: (KeyClass.NAVIGATION, "\t"), 0xfe20: (KeyClass.NAVIGATION, "\t"),  # Tab, ISO_Left_Tab
    0xff89: (KeyClass.NAVIGATION, "\t"),                             # KP_Tab
}
for _ks in (0xff50, 0xff51, 0xff52, 0xff53, 0xff54, 0xff55, 0xff56, 0xff57,  # Home..End
            0xff95, 0xff96, 0xff97, 0xff98, 0xff99, 0xff9a, 0xff9b, 0xff9c):  # KP_Home..KP_End
    _KS[_ks] = (KeyClass.NAVIGATION, "")
_SHIFT_KS = {0xffe1, 0xffe2}                 # Shift_L, Shift_R
_CAPS_KS, _NUM_KS = 0xffe5, 0xff7f           # Caps_Lock, Num_Lock
_LEVEL3_KS = {0xfe03}                        # ISO_Level3_Shift (AltGr)
_MODE_SWITCH_KS = {0xff7e}                   # Mode_switch
for _ks in (0xffe1, 0xffe2, 0xffe3, 0xffe4, 0xffe5, 0xffe6, 0xffe7, 0xffe8, 0xffe9, 0xffea,
            0xffeb, 0xffec, 0xffed, 0xffee, 0xff7f, 0xff14, 0xfe03, 0xff7e, 0xfe11):
    _KS[_ks] = (KeyClass.MODIFIER, "")       # Shift/Control/Caps/Shift_Lock/Meta/Alt/Super/Hyper,
                                             # Num_Lock, Scroll_Lock, AltGr, Mode_switch, Level5
_KEYPAD_CHARS = {0xffaa: "*", 0xffab: "+", 0xffac: ",", 0xffad: "-", 0xffae: ".", 0xffaf: "/",
                 0xffbd: "=", **{0xffb0 + i: str(i) for i in range(10)}}
_legacy_chars: dict[int, str] | None = None


def _legacy_table() -> dict[int, str]:
    """keysym -> character for the legacy (non-Latin-1, non-Unicode) keysyms, from pynput's
    keysym table file (loaded by path: importing the pynput package needs a display)."""
    global _legacy_chars
    if _legacy_chars is None:
        table: dict[int, str] = {}
        try:
            spec = importlib.util.find_spec("pynput")
            path = Path(spec.origin).parent / "_util" / "xorg_keysyms.py" if spec and spec.origin else None
            if path is not None and path.exists():
                mspec = importlib.util.spec_from_file_location("_station_xorg_keysyms", path)
                mod = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(mod)
                for ks, ch in getattr(mod, "SYMBOLS", {}).values():
                    if ch and len(ch) == 1 and ks not in table:
                        table[ks] = ch
        except Exception:
            pass
        _legacy_chars = table
    return _legacy_chars


def keysym_char(keysym: int) -> str:
    """The character a keysym types ("" for none or unknown)."""
    if 0x20 <= keysym <= 0x7e or 0xa0 <= keysym <= 0xff:
        return chr(keysym)
    if 0x1000100 <= keysym <= 0x110ffff:
        return chr(keysym - 0x1000000)
    ch = _KEYPAD_CHARS.get(keysym)
    if ch is not None:
        return ch
    return _legacy_table().get(keysym, "")


def classify_keysym(keysym: int) -> tuple[int, str]:
    """(KeyClass, character) of an X keysym, as ``input.classify_key`` does for pynput keys.
    Dead keys (0xfe50-0xfe8f) are printable without a character; NoSymbol is OTHER."""
    hit = _KS.get(keysym)
    if hit is not None:
        return hit
    if 0xfe50 <= keysym <= 0xfe8f:
        return KeyClass.PRINTABLE, ""
    ch = keysym_char(keysym) if keysym else ""
    if ch and ch.isprintable():
        return KeyClass.PRINTABLE, ch
    return KeyClass.OTHER, ""


def _is_keypad(keysym: int) -> bool:
    return 0xff80 <= keysym <= 0xffbd


class Keymap:
    """keycode -> keysym at a modifier state, from the core keyboard mapping.

    ``rows``: {keycode: keysyms (columns of GetKeyboardMapping)}. ``keysym(kc, shift, caps,
    num, level3, mode_switch)`` picks the column as Xlib does for an XKB-made core map (0/1:
    group 1 levels 1/2, 2/3: group 2, 4/5: group 1 levels 3/4), with Caps Lock upper-casing
    letters (Shift+Caps gives lower case, as XKB's ALPHABETIC type) and Num Lock choosing the
    keypad's digit column.
    """

    def __init__(self, rows: dict[int, tuple[int, ...]]):
        self.rows = rows
        self.role: dict[int, int] = {}  # keycode -> keysym of column 0 (for modifier roles)
        for kc, row in rows.items():
            if row:
                self.role[kc] = row[0]

    def keysym(self, keycode: int, shift: bool = False, caps: bool = False, num: bool = False,
               level3: bool = False, mode_switch: bool = False) -> int:
        row = self.rows.get(keycode, ())
        base = 4 if level3 else 2 if mode_switch else 0

        def col(i: int) -> int:
            return row[i] if i < len(row) else 0

        lower, upper = col(base), col(base + 1)
        if base and not lower and not upper:
            lower, upper = col(0), col(1)
        if num and _is_keypad(upper):
            return lower if shift else upper
        ks = upper if (shift and upper) else lower
        ch = keysym_char(ks) if ks else ""
        if ch and ch.isalpha() and ch.lower() != ch.upper():
            # letters: level by Shift XOR Caps; a one-column letter row has an implicit upper case
            want_upper = shift != caps
            if want_upper and ch.islower():
                up = upper if upper and keysym_char(upper) == ch.upper() else _keysym_of(ch.upper())
                return up or ks
            if not want_upper and ch.isupper():
                lo = lower if keysym_char(lower) == ch.lower() else _keysym_of(ch.lower())
                return lo or ks
        return ks


def _keysym_of(ch: str) -> int:
    o = ord(ch)
    if 0x20 <= o <= 0x7e or 0xa0 <= o <= 0xff:
        return o
    return 0x1000000 + o if o >= 0x100 else 0


def xtest_device_ids(devices: Iterable[tuple[int, str, int]]) -> frozenset[int]:
    """Ids of the XTEST slave devices among ``(deviceid, name, use)`` of ``XIQueryDevice``:
    slave or floating devices whose name contains "XTEST" (the server names them
    "<master name> XTEST pointer/keyboard")."""
    return frozenset(dev for dev, name, use in devices
                     if "XTEST" in name and use in (_XI_SLAVE_POINTER, _XI_SLAVE_KEYBOARD,
                                                    _XI_FLOATING_SLAVE))


def is_injected(sourceid: int, xtest_ids: frozenset[int]) -> bool:
    """Whether a raw event came from an XTEST device (its ``sourceid`` is one of them)."""
    return sourceid in xtest_ids


# -- server state read through python-xlib --------------------------------------------------
class _ServerState:
    """What the reader needs from the server besides events; read with python-xlib requests."""

    def __init__(self, d: Any, policy: Policy | None = None):
        devs = d.xinput_query_device(_XI_ALL_DEVICES).devices
        self.devices = [(int(x.deviceid), str(x.name), int(x.use)) for x in devs]
        self.xtest = xtest_device_ids(self.devices)
        policy = policy if policy is not None else Policy()
        # slave devices: identity and the evidence decision; events of any other sourceid
        # (XTEST by default, devices off the allow-list, ids not known yet) are injected
        self.slaves: dict[int, tuple[Identity, bool, str]] = {}
        for dev, name, use in self.devices:
            if use in (_XI_SLAVE_POINTER, _XI_SLAVE_KEYBOARD, _XI_FLOATING_SLAVE):
                ident = _slave_identity(d, dev, name)
                if ident.sys_path and not (ident.keyboard or ident.pointer):
                    continue   # a power button, lid switch, video bus: neither announced nor evidence
                self.slaves[dev] = (ident, *policy.decide(ident))
        self.evidence = frozenset(dev for dev, (_, ok, _) in self.slaves.items() if ok)
        info = d.display.info
        first, last = info.min_keycode, info.max_keycode
        rows = d.get_keyboard_mapping(first, last - first + 1)
        self.keymap = Keymap({first + i: tuple(r) for i, r in enumerate(rows)})
        self.num_mask = 0
        for i, kcs in enumerate(d.get_modifier_mapping()):
            if any(self.keymap.role.get(kc) == _NUM_KS for kc in kcs if kc):
                self.num_mask = 1 << i
        self.repeat_delay_ms, self.repeat_interval_ms = DEFAULT_REPEAT_DELAY_MS, DEFAULT_REPEAT_INTERVAL_MS
        self.repeat_on, self.per_key = True, bytes(32)
        try:
            self.repeat_delay_ms, self.repeat_interval_ms, self.repeat_on, self.per_key = _xkb_repeat(d)
        except Exception:  # no XKEYBOARD: core keyboard control (per-key mask, global switch)
            kc = d.get_keyboard_control()
            self.repeat_on = bool(kc.global_auto_repeat)
            self.per_key = bytes(kc.auto_repeats)

    def repeats(self, keycode: int) -> bool:
        return self.repeat_on and bool(self.per_key[keycode >> 3] & (1 << (keycode & 7)))


XTEST_PROPERTY = "XTEST Device"   # the X server sets it on the XTEST devices it creates (dix/xtest.c)


def _is_xtest(d: Any, deviceid: int, name: str) -> bool:
    """Whether the server marks ``deviceid`` as its XTEST device (the ``XTEST Device`` property:
    a device a program names "... XTEST keyboard" does not have it). A server that does not know
    the property at all (older than XI2's XTEST devices): by the name it gives them."""
    try:
        atom = d.intern_atom(XTEST_PROPERTY, only_if_exists=True)
        if not atom:
            return "XTEST" in name
        return atom in d.xinput_list_device_properties(deviceid).atoms
    except Exception:
        return "XTEST" in name


def _slave_identity(d: Any, deviceid: int, name: str) -> Identity:
    """An X slave device's identity: from sysfs when the driver names its kernel node (Xorg's
    evdev/libinput drivers set the "Device Node" property), else by name (``xi2_identity``:
    XTEST devices, as the server marks them, virtual). Never raises."""
    xtest = _is_xtest(d, deviceid, name)
    if not xtest:
        try:
            atom = d.intern_atom("Device Node", only_if_exists=True)
            if atom:
                r = d.xinput_get_device_property(deviceid, atom, 0, 0, 256)   # AnyPropertyType
                data = r.value[1] if isinstance(r.value, tuple) else r.value
                data = data.encode() if isinstance(data, str) else bytes(data or b"")
                node = data.split(b"\0")[0].decode(errors="replace")
                if node.startswith("/dev/input/event"):
                    ident = identity_from_sysfs(node)
                    if ident is not None:
                        return ident
        except Exception:
            pass
    return xi2_identity(name, xtest)


def _xkb_repeat(d: Any) -> tuple[int, int, bool, bytes]:
    """(repeat delay ms, repeat interval ms, RepeatKeys enabled, per-key repeat bitmask) from
    XKB GetControls. Raises when the server has no XKEYBOARD extension."""
    from Xlib.protocol import rq

    class UseExtension(rq.ReplyRequest):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(0), rq.RequestLength(),
                             rq.Card16("major"), rq.Card16("minor"))
        _reply = rq.Struct(rq.ReplyCode(), rq.Card8("supported"), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Card16("server_major"), rq.Card16("server_minor"),
                           rq.Pad(20))

    class GetControls(rq.ReplyRequest):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(6), rq.RequestLength(),
                             rq.Card16("device_spec"), rq.Pad(2))
        _reply = rq.Struct(rq.ReplyCode(), rq.Card8("device_id"), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Pad(12), rq.Card16("repeat_delay"),
                           rq.Card16("repeat_interval"), rq.Pad(32), rq.Card32("enabled_ctrls"),
                           rq.FixedList("per_key_repeat", 32, rq.Card8Obj))

    ext = d.query_extension("XKEYBOARD")
    if not ext or not ext.present:
        raise RuntimeError("no XKEYBOARD")
    op = ext.major_opcode
    if not UseExtension(display=d.display, opcode=op, major=1, minor=0).supported:
        raise RuntimeError("XKEYBOARD 1.0 refused")
    r = GetControls(display=d.display, opcode=op, device_spec=0x100)  # XkbUseCoreKbd
    return int(r.repeat_delay), int(r.repeat_interval), bool(r.enabled_ctrls & 1), bytes(r.per_key_repeat)


def _open_state(display: str, policy: Policy | None = None) -> _ServerState:
    """Read the server state on a short-lived side connection (device or mapping changes)."""
    import Xlib.display
    d = Xlib.display.Display(display or None)
    try:
        return _ServerState(d, policy)
    finally:
        d.close()


# -- the source backend ---------------------------------------------------------------------
class _Stopped(Exception):
    pass


class _Unsupported(Exception):
    pass


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


class Xi2Input(ThreadedSource):
    """The XI2 backend of ``InputSource`` (see module docstring): one reader thread that
    connects, reads and reconnects with backoff."""

    name = "input"
    thread_name = "station-input-xi2"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None,
                 connected: threading.Event | None = None, keys: Any = None, raw_mask: int = 0):
        """keys: where key presses/releases go instead of a ``KeyPipeline`` on the sink (the evdev
        backend's ``TwinChars``); raw_mask: the XI2 raw events to select (default: keys, buttons,
        motion; ``KEY_MASK``: keys only)."""
        self.cfg = cfg
        self._keys = keys
        self.raw_mask = raw_mask or _RAW_MASK
        self.focus_state = focus_state
        self.key_times = key_times
        self.connected = connected if connected is not None else threading.Event()
        self.counts: collections.Counter = collections.Counter()
        self.reconnects = 0
        self.policy = Policy.from_config(cfg)
        self._known: dict[int, tuple[Identity, bool, str]] = {}   # slave devices announced (DeviceEvent)
        # a later event is stamped at most the margin before a moment the socket was drained,
        # and its mouse bin starts up to BIN_NS before its stamp
        self.bound = DeliveryBound(DELIVERY_MARGIN_NS, BIN_NS)
        super().__init__()

    def delivered_until(self) -> int | None:
        """Station time (ns) below which every event is in the sink: the last moment the X
        socket was drained less ``DELIVERY_MARGIN_NS`` (events carry the server's time; an
        event sent later than that after its time counts as late) and one mouse bin, or the
        same taken now while the reader waits with nothing unread (an idle connection keeps
        up with now); never past an event still held (``_Reader._held``). None while lost or
        not yet reading (``station.capture.delivery``)."""
        return self.bound.until()

    def status(self) -> dict[str, Any]:
        h = self._health
        return {"state": h.state if h else "stopped", "detail": h.detail if h else "",
                "reconnects": self.reconnects, "queued": 0,
                "injected_detection": INJECTED_DETECTION, **self.counts}

    def device_set(self) -> list[DeviceEvent]:
        """The slave devices announced last, as "present" events stamped now."""
        now = monotonic_ns()
        return [_device_event(now, dev, "present", *v) for dev, v in dict(self._known).items()]

    def announce(self, state: "_ServerState", t_ns: int, full: bool = False) -> None:
        """DeviceEvents for the slave devices of ``state``: all of them when ``full`` (a new
        connection), else those that appeared, changed or went away since the last call."""
        known = {} if full else self._known
        out = []
        for dev, (ident, ok, detail) in self._known.items():   # gone (a restarted server: not there now)
            if dev not in state.slaves:
                out.append(_device_event(t_ns, dev, "removed", ident, ok, detail))
        for dev, (ident, ok, detail) in state.slaves.items():
            if known.get(dev) != (ident, ok, detail):
                out.append(_device_event(t_ns, dev, "changed" if dev in known else "present", ident, ok, detail))
        self._known = dict(state.slaves)
        if out:
            self._sink.put_many(out)

    def _run(self) -> None:
        backend = platform.detect()
        if not backend.capturable:
            self._health.report("lost", platform.unavailable_reason(backend))
            self._stop.wait()
            return
        keys = self._keys or KeyPipeline(self._sink, self.focus_state, self.key_times, self.counts)
        reconnect_loop(self._stop, lambda connected: self._session(keys, backend.display, connected),
                       self._count_reconnect)
        keys.release_due(monotonic_ns(), force=True)

    def _count_reconnect(self) -> None:
        self.reconnects += 1

    def _session(self, keys: KeyPipeline, display: str, connected) -> None:
        """One X connection's worth of reading (see ``reconnect_loop``)."""
        try:
            reader = _Reader(self, keys, display)
        except _Unsupported as e:
            self._health.report("lost", f"X display {display}: {e}; set "
                                f"{platform.INPUT_ENV_OVERRIDE}=pynput to record through X RECORD")
            return
        except Exception as e:  # cannot connect: X server not (yet) there
            self._health.report("lost", f"X display {display} unreachable: {_describe(e)}")
            return
        connected()
        self._health.report("ok", f"reading XInput {reader.version[0]}.{reader.version[1]} "
                            f"raw events on {display}")
        self.connected.set()
        try:
            reader.run()
        except _Stopped:
            reader.finish(monotonic_ns(), drain=True)
        except Exception as e:  # connection closed, protocol garbage, ...
            self._health.report("lost", f"X connection to {display} lost: {_describe(e)}")
            reader.finish(monotonic_ns(), drain=False)
        finally:
            self.connected.clear()
            self.bound.lost()    # what finish() emitted is in the sink, and the loss before it
            reader.close()
            if self.key_times is not None:
                self.key_times.resume()   # nothing more will be read from that connection


def _device_event(t_ns: int, dev: int, state: str, ident: Identity, evidence: bool, detail: str) -> DeviceEvent:
    return ident.device_event(t_ns, f"xi2:{dev}", state, evidence, detail)


class _Reader:
    """One X connection's worth of reading (see module docstring); raises on connection loss."""

    def __init__(self, src: Xi2Input, keys: KeyPipeline, display: str):
        import Xlib.display
        from Xlib.ext import xinput

        self.src, self.keys, self.display_name = src, keys, display
        self.sink = src._sink
        self.counts = src.counts
        d = Xlib.display.Display(display or None)
        self.d = d
        try:
            if not d.query_extension(xinput.extname):
                raise _Unsupported("no XInputExtension (XInput 2)")
            self.xi_opcode = d.display.get_extension_major(xinput.extname)
            r = xinput.XIQueryVersion(display=d.display, opcode=self.xi_opcode, major_version=2,
                                      minor_version=2)
            self.version = (int(r.major_version), int(r.minor_version))
            if self.version < (2, 0):
                raise _Unsupported(f"XInputExtension {self.version[0]}.{self.version[1]} < 2.0")
            self.state = _ServerState(d, src.policy)
            src.announce(self.state, monotonic_ns(), full=True)
            root = d.screen().root
            self.root_id = root.id
            root.xinput_select_events([(xinput.AllMasterDevices, src.raw_mask),
                                       (xinput.AllDevices, xinput.HierarchyChangedMask)])
            p = root.query_pointer()
            self.pos: tuple[int, int] | None = (int(p.root_x), int(p.root_y))
            self.caps = bool(p.mask & _LOCK_MASK)
            self.num = bool(p.mask & self.state.num_mask)
            d.sync()
        except Exception:
            try:
                d.close()
            except Exception:
                pass  # the connection may be gone already
            raise
        # Take the socket over: what python-xlib already read (queued events, a partial packet)
        # goes first into our buffer, in order.
        disp = d.display
        self.sock = disp.socket
        pre = bytearray()
        self.refresh_devices = self.refresh_keymap = False
        for e in disp.event_queue:
            data = getattr(e, "data", None)
            if e.type & 0x7f == _GENERIC_EVENT:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    pre += bytes(e._binary) + bytes(data)
                else:
                    self.refresh_devices = True  # a parsed XI_HierarchyChanged
            elif e.type & 0x7f == _MAPPING_NOTIFY:
                self.refresh_keymap = True
        del disp.event_queue[:]
        pre += bytes(disp.data_recv)
        disp.data_recv = b""
        disp.recv_packet_len = 0
        self.buf = pre
        self.buf_t0: int | None = monotonic_ns() if pre else None  # when a partial event's first part was read
        # state
        self.shift: set[int] = set()
        self.level3: set[int] = set()
        self.mode_switch: set[int] = set()
        self.down: set[int] = set()
        self.moved = False   # the last read had a move
        self.repeat_kc = 0
        self.repeat_next = 0
        self.repeat_inj = False
        self.bin_t = -1
        self.bin_count = self.bin_inj = 0
        self.last_move_t = 0
        self.closed_until = 0  # end of the last closed bin (ns): no bin may start before it
        # per QueryPointer sent, in request order: the closed bins [(bin_t, count, injected)]
        # sharing its position, or None for a burst start (the position is only the new base)
        self.awaiting: collections.deque = collections.deque()
        self._qp = struct.pack("=BxHI", _QUERY_POINTER_OPCODE, 2, self.root_id)
        self.out = bytearray()  # requests to send (one write per read)
        self.closing: list = []  # bins closed during this read (one QueryPointer for all)

    def close(self) -> None:
        try:
            self.d.display.close_internal("client")
        except Exception:
            pass

    # -- loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        src = self.src
        fd, wake = self.sock.fileno(), src._wake_r
        if self.refresh_devices or self.refresh_keymap:
            self._refresh()
        if self.buf:
            self._parse(monotonic_ns())
            self._flush()
            if not self.buf:
                self.buf_t0 = None
        rlist = [fd, wake]
        stop_wait = src._stop.wait
        key_times = src.key_times
        bound = src.bound
        readable = select.select

        def pending() -> bool:   # for delivered_until(), from another thread
            return bool(readable([fd], [], [], 0)[0])
        while True:
            if src._stop.is_set():
                raise _Stopped()
            timeout = self._timeout(monotonic_ns())
            t0 = monotonic_ns()
            r, _, _ = select.select(rlist, [], [], 0)
            if not r:
                bound.drained(t0, self._held())
                if key_times is not None:
                    key_times.resume()   # nothing waits to be read: every press so far is noted
                bound.waiting(self._held(), pending)
                r, _, _ = select.select(rlist, [], [], timeout)
                bound.woke()
            if wake in r:
                raise _Stopped()
            if r:
                t0 = monotonic_ns()
                chunk = self.sock.recv(262144)
                if not chunk:
                    raise ConnectionError("X server closed the connection")
                read_ns = monotonic_ns()
                self.buf += chunk
                self.moved = False
                self._parse(read_ns)
                if self.buf and self.buf_t0 is None:
                    self.buf_t0 = t0      # part of an event waits for the rest
                elif not self.buf:
                    self.buf_t0 = None
                if key_times is not None:
                    key_times.resume()
                self._timers(monotonic_ns())
                self._flush()
                if len(chunk) < 262144:   # the socket was drained at t0
                    bound.drained(t0, self._held())
                if self.moved:
                    # Let more arrive before the next read, so that continuous motion (and typing
                    # meanwhile) costs one wake-up per READ_BATCH_S, not one per event. Events
                    # carry the server's time (see _stamp): the wait does not move stamps. Not
                    # after a read without motion: the first move of a burst is read at once,
                    # its QueryPointer gives the burst's starting position.
                    if key_times is not None:
                        key_times.defer(read_ns - READ_MARGIN_NS)
                    stop_wait(READ_BATCH_S)
            else:
                self._timers(monotonic_ns())
                self._flush()

    def _held(self) -> int | None:
        """The earliest station time (ns) of an event this reader still holds: a key within its
        grace, the open mouse bin, closed bins waiting for the pointer position, the next
        derived repeat press, a partly read event (its stamp may be up to the margin and a bin
        before the read that brought its first part); None when nothing is held."""
        c = []
        if self.keys.pending:
            c.append(self.keys.pending[0][0].t_ns)
        if self.bin_t >= 0:
            c.append(self.bin_t)
        if self.closing:
            c.append(self.closing[0][0])
        for group in self.awaiting:
            if group:
                c.append(group[0][0])
                break
        if self.repeat_kc:
            c.append(self.repeat_next)
        if self.buf_t0 is not None:
            c.append(self.buf_t0 - DELIVERY_MARGIN_NS - BIN_NS)
        return min(c) if c else None

    def _flush(self) -> None:
        if self.closing:
            self.awaiting.append(self.closing)
            self.closing = []
            self.out += self._qp
        if self.out:
            self.sock.sendall(self.out)
            self.out.clear()

    def _stamp(self, server_ms: int, now: int) -> int:
        """Station-clock ns of an event from its 32-bit server time (ms).

        Xorg/Xvfb take event times from CLOCK_MONOTONIC (ms; possibly the coarse clock, up to
        one tick behind), the station clock's source: the time is widened to 64 bits near
        ``now`` and rounded up to the end of the next ms, so a stamp is never before the event
        (0-2 ms late), and capped at ``now`` (the read time). A time more than
        ``MAX_EVENT_AGE_NS`` before ``now`` or after it (a server on another clock, e.g. remote)
        is replaced by ``now`` and counted (``clock_fallbacks``).
        """
        now_ms = now // 1_000_000
        full = (now_ms & ~0xFFFFFFFF) | server_ms
        if full > now_ms + 0x80000000:
            full -= 1 << 32
        elif full < now_ms - 0x80000000:
            full += 1 << 32
        t = (full + 2) * 1_000_000 - 1
        if t > now:
            if full * 1_000_000 > now + 2_000_000:
                self.counts["clock_fallbacks"] += 1
            return now
        if now - t > MAX_EVENT_AGE_NS:
            self.counts["clock_fallbacks"] += 1
            return now
        return t

    def _timeout(self, now: int) -> float | None:
        dl = self.keys.deadline()
        if self.bin_t >= 0:
            b = self.bin_t + BIN_NS + BIN_CLOSE_LAG_NS
            dl = b if dl is None else min(dl, b)
        if self.repeat_kc:
            dl = self.repeat_next if dl is None else min(dl, self.repeat_next)
        return None if dl is None else max(0.0, (dl - now) / 1e9)

    def _timers(self, now: int) -> None:
        if self.repeat_kc and now >= self.repeat_next:
            self._repeat_until(now + 1)
        if self.bin_t >= 0 and now >= self.bin_t + BIN_NS + BIN_CLOSE_LAG_NS:
            self._close_bin()
        self.keys.release_due(now)

    def finish(self, now: int, drain: bool) -> None:
        """End of this connection. drain (on stop): read what the server already sent, close
        the open bin and wait (at most STOP_DRAIN_S) for the positions of the bins still
        waiting. Bins left waiting are emitted with distance 0; held keys are forgotten."""
        try:
            if drain:
                fd = self.sock.fileno()
                deadline = monotonic_ns() + int(STOP_DRAIN_S * 1e9)
                closed = False
                while monotonic_ns() < deadline:
                    r, _, _ = select.select([fd], [], [], 0.0 if not closed else
                                            max(0.0, (deadline - monotonic_ns()) / 1e9))
                    if r:
                        chunk = self.sock.recv(262144)
                        if not chunk:
                            break
                        self.buf += chunk
                        self._parse(monotonic_ns())
                    elif not closed:
                        self._close_bin()
                        self._flush()
                        closed = True
                    if closed and not self.awaiting:
                        break
                    if closed and not r:
                        break
        except Exception:
            pass
        if self.bin_t >= 0 and self.bin_count:
            self.closing.append((self.bin_t, self.bin_count, self.bin_inj))
        self.bin_t, self.bin_count, self.bin_inj = -1, 0, 0
        if self.closing:
            self.awaiting.append(self.closing)
            self.closing = []
        while self.awaiting:
            group = self.awaiting.popleft()
            if group:
                self._emit_bins(group, 0.0)
        self.keys.release_due(now)
        self.repeat_kc = 0

    # -- parsing ------------------------------------------------------------------------------
    def _parse(self, now: int) -> None:
        buf = self.buf
        n = len(buf)
        off = 0
        unpack = struct.unpack_from
        xi = self.xi_opcode
        while n - off >= 32:
            typ = buf[off] & 0x7f
            if typ == _GENERIC_EVENT or typ == 1:
                size = 32 + 4 * unpack("=I", buf, off + 4)[0]
                if n - off < size:
                    break
            else:
                size = 32
            if typ == _GENERIC_EVENT:
                if buf[off + 1] == xi:
                    evtype = unpack("=H", buf, off + 8)[0]
                    if evtype == _XI_RAW_MOTION:
                        # valuator mask right after the 32-byte header: a move has x or y
                        if unpack("=H", buf, off + 22)[0] and buf[off + 32] & 3:
                            server_ms, _, sourceid = unpack("=IIH", buf, off + 12)
                            self._move(self._stamp(server_ms, now), sourceid not in self.state.evidence)
                    elif _XI_RAW_KEY_PRESS <= evtype <= _XI_RAW_BUTTON_RELEASE:
                        server_ms, detail, sourceid, _, flags = unpack("=IIHHI", buf, off + 12)
                        self._button_or_key(self._stamp(server_ms, now), evtype, detail,
                                            sourceid not in self.state.evidence, flags)
                    elif evtype == _XI_HIERARCHY_CHANGED:
                        self._refresh(devices=True)
            elif typ == 1:
                x, y = unpack("=hh", buf, off + 16)
                self._on_pointer(x, y)
            elif typ == 0:
                self.counts["x_errors"] += 1
            elif typ == _MAPPING_NOTIFY:
                if buf[off + 4] in (0, 1):  # MappingModifier, MappingKeyboard
                    self._refresh(keymap=True)
            off += size
        if off:
            del buf[:off]

    def _refresh(self, devices: bool = True, keymap: bool = True) -> None:
        """Re-read devices / keyboard mapping on a side connection (rare: hierarchy or mapping
        changes). The event stream waits meanwhile (the server buffers it)."""
        try:
            self.state = _open_state(self.display_name, self.src.policy)
            self.src.announce(self.state, monotonic_ns())
            self.counts["refreshes"] += 1
        except Exception:
            self.counts["refresh_failures"] += 1
        self.refresh_devices = self.refresh_keymap = False

    # -- keys -----------------------------------------------------------------------------------
    def _classify(self, kc: int) -> tuple[int, str]:
        ks = self.state.keymap.keysym(kc, bool(self.shift), self.caps, self.num, bool(self.level3),
                                      bool(self.mode_switch))
        return classify_keysym(ks)

    def _repeat_until(self, t: int) -> None:
        """Emit the derived auto-repeat presses scheduled before t (ns)."""
        interval = max(1, self.state.repeat_interval_ms) * 1_000_000
        while self.repeat_kc and self.repeat_next < t:
            cls, ch = self._classify(self.repeat_kc)
            self.keys.press(self.repeat_next, cls, ch, self.repeat_inj, True, code=self.repeat_kc)
            self.repeat_next += interval

    def _button_or_key(self, t: int, evtype: int, detail: int, inj: bool, flags: int) -> None:
        if self.repeat_kc:
            self._repeat_until(t)
        if evtype == _XI_RAW_KEY_PRESS:
            kc = detail
            role = self.state.keymap.role.get(kc, 0)
            repeat = bool(flags & _XI_KEY_REPEAT)  # the server says: this key was already down
            cls, ch = self._classify(kc)
            self.keys.press(t, cls, ch, inj, repeat, code=kc)
            if repeat:
                self.counts["server_repeats"] += 1
                if kc == self.repeat_kc:
                    self.repeat_kc = 0  # the server repeats this key itself: do not derive too
                return
            self.down.add(kc)
            if role in _SHIFT_KS:
                self.shift.add(kc)
            elif role in _LEVEL3_KS:
                self.level3.add(kc)
            elif role in _MODE_SWITCH_KS:
                self.mode_switch.add(kc)
            elif role == _CAPS_KS:
                self.caps = not self.caps
            elif role == _NUM_KS:
                self.num = not self.num
            if self.state.repeats(kc):
                self.repeat_kc, self.repeat_inj = kc, inj
                self.repeat_next = t + max(1, self.state.repeat_delay_ms) * 1_000_000
        elif evtype == _XI_RAW_KEY_RELEASE:
            kc = detail
            if kc not in self.down:
                # raw events include releases of keys that are not down (xdotool releases
                # modifiers twice); the server drops those from core/XI events: so do we
                self.counts["stray_releases"] += 1
                return
            cls, _ = self._classify(kc)
            self.keys.release(t, cls, inj, code=kc)
            self.down.discard(kc)
            self.shift.discard(kc)
            self.level3.discard(kc)
            self.mode_switch.discard(kc)
            if kc == self.repeat_kc:
                self.repeat_kc = 0
        elif evtype == _XI_RAW_BUTTON_PRESS:
            scroll = _SCROLL_BUTTONS.get(detail)
            if scroll is not None:
                self.sink.put(MouseScroll(t, scroll[0], scroll[1], inj))
                self.counts["scrolls"] += 1
            else:
                self.sink.put(MouseClick(t, detail, True, inj))
                self.counts["clicks"] += 1
        else:  # _XI_RAW_BUTTON_RELEASE
            if detail not in _SCROLL_BUTTONS:
                self.sink.put(MouseClick(t, detail, False, inj))
                self.counts["clicks"] += 1

    # -- mouse ----------------------------------------------------------------------------------
    def _move(self, t: int, inj: bool) -> None:
        b = t - t % BIN_NS
        if b != self.bin_t:
            if b < self.closed_until:
                b = self.closed_until  # read after its bin was closed: goes to the next bin
                if b == self.bin_t:
                    self.bin_count += 1
                    self.bin_inj += inj
                    self.counts["moves"] += 1
                    return
            self._close_bin()
            if t - self.last_move_t > BURST_GAP_NS:
                # a new burst after a pause: start from where the pointer is now (a warp made
                # during the pause is not a move); the moves of this read are not in the distance
                if self.closing:
                    self.awaiting.append(self.closing)
                    self.closing = []
                    self.out += self._qp
                self.awaiting.append(None)
                self.out += self._qp
            self.bin_t = b
        self.last_move_t = t
        self.moved = True
        self.bin_count += 1
        self.bin_inj += inj
        self.counts["moves"] += 1

    def _close_bin(self) -> None:
        if self.bin_t >= 0 and self.bin_count:
            self.closing.append((self.bin_t, self.bin_count, self.bin_inj))
            self.closed_until = self.bin_t + BIN_NS
        self.bin_t, self.bin_count, self.bin_inj = -1, 0, 0

    def _on_pointer(self, x: int, y: int) -> None:
        group = self.awaiting.popleft() if self.awaiting else None
        if group:
            dist = math.hypot(x - self.pos[0], y - self.pos[1]) if self.pos is not None else 0.0
            self._emit_bins(group, dist)
        self.pos = (x, y)

    def _emit_bins(self, group: list, dist: float) -> None:
        """Emit closed bins sharing ``dist`` px by their move counts (rounded so that the
        emitted distances add up to round(dist))."""
        total = sum(b[1] for b in group)
        acc, sent = 0.0, 0
        for bin_t, count, inj in group:
            acc += dist * count / total
            d = int(round(acc)) - sent
            sent += d
            self.sink.put(MouseBin(bin_t, count, d, inj))
            self.counts["mouse_bins"] += 1
