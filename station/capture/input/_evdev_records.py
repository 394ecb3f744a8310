"""``input_event`` records -> station events: the one conversion of the evdev backend
(``_evdev.EvdevInput``) for every device, and for files and FIFOs in tests.

Conversion (``Converter``, one code path for every device; kernel semantics of
``Documentation/input/event-codes.rst``): each record's stamp is its own timeval (ns on the
station clock; a stamp more than ``MAX_EVENT_AGE_NS`` from the read time, e.g. a device whose
clock could not be set, is replaced by the read time and counted, ``clock_fallbacks``).

- ``EV_KEY`` keys (codes < ``BTN_MISC``): value 1 = press, 2 = kernel auto-repeat (a press with
  ``repeat=True``), 0 = release (dropped, counted ``stray_releases``, for a key not known down).
  Class from the key code (``KEY_CLASSES``, the table of ``classify_key``/``classify_keysym``;
  the code is the physical key, so a remapped layout does not change classes except for
  letters-vs-symbols). Characters: ``_twin``.
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

Evidence: a ``_Device`` without evidence (``devices.Policy.decide``) has every event emitted with
``injected`` set (counted, alerted and left out of every figure by the engine).
"""

from __future__ import annotations

import collections
import math
import struct
from typing import Any, Iterable

from evdev import ecodes as E

from station.events import KeyClass, MouseBin, MouseClick, MouseScroll

from ._base import BIN_NS, RESOLVE, KeyPipeline

EVENT = struct.Struct("@llHHi")       # struct input_event: struct timeval, __u16 type, code, __s32 value
BIN_CLOSE_LAG_NS = 20_000_000
MAX_EVENT_AGE_NS = 2_000_000_000
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
        self.twin: Any = None      # a _twin.TwinChars where an X display gives typing-task characters
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
        x = self.twin.next_decision() if self.twin is not None else None
        if x is not None:
            dl = x if dl is None else min(dl, x)
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
