"""Typing-task characters for the evdev backend: from the display server, only for keys the
kernel saw (``TwinChars``).

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
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable

from ._base import CHAR_GRACE_NS, KeyPipeline

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

    def next_decision(self) -> int | None:
        """Station-clock ns at which ``sweep`` has the next X event to decide (None: none waits)."""
        t = self.held_back()
        return None if t is None else t + SETTLE_NS + 1

    def held_back(self) -> int | None:
        with self._lock:
            return self.x[0][0] if self.x else None
