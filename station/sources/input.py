"""Keyboard and mouse timing: key classes, mouse bins, clicks, scrolls.

``InputSource(cfg, focus_state, key_times=None)`` (source name ``"input"``) is the public class.
It picks its backend once, in ``start()``, through ``station.sources.platform.input_backend``
(the one place that decides; override ``STATION_INPUT_BACKEND=xi2|pynput``):

- ``"xi2"`` (``station.sources.input_xi2``, default on X11 with XInput >= 2.1): XI2 raw events
  read by one thread on its own X connection, parsed with ``struct``; flags XTEST-injected input;
- ``"pynput"`` (``station.sources.input_pynput``): pynput's xorg backend (X RECORD); cannot tell
  XTEST-injected input from real input; several times the CPU cost.

Both backends emit the same events:

- ``KeyEvent`` (class only, see ``KeyClass``; ``repeat`` = keyboard auto-repeat press;
  ``char`` only inside ``typing_task`` windows, see below); ``key_times.note(t_ns)`` is called
  for every key press (``RecentKeyPresses`` of the audio source, for keyboard-click rejection);
- ``MouseBin``: moves aggregated per 10 ms bin aligned on the station clock (count, path length
  in px rounded, how many moves were injected);
- ``MouseClick`` (X button number: 1-3, 8, 9...), ``MouseScroll`` (steps, +dy = up, +dx = right).

Privacy rule for ``char`` (``KeyPipeline``): a key press keeps its character only if the focus
category was ``typing_task`` at the key's time AND stayed so for ``CHAR_GRACE_NS`` afterwards
(the focus source learns of a focus change a few ms after the X server made it; a key typed into
a newly focused crm window in that gap must not be taken for a typing-task key). Key events are
therefore emitted up to 60 ms after they happen; their ``t_ns`` is the stamp, not the emission
time. Characters recorded: printable characters, " " (space), "\\n" (enter), "\\t" (tab); never
for releases.

Failure modes (both backends): X server gone -> ``SourceHealth("lost")`` (what happens meanwhile
is unknown, not inactivity), reconnect with backoff (0.1 s doubling to 2 s) -> ``"ok"``; missing
extension (RECORD / XInput 2) -> ``"lost"`` with that reason (retried); Wayland or no display ->
``"lost"`` with the reason from ``station.sources.platform`` (not retried).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from ..events import KeyClass, KeyEvent
from . import platform
from .base import EventSink

BIN_NS = 10_000_000           # mouse bin length: 10 ms
BIN_SLACK_NS = 2_000_000      # a bin is closed this long after its end if no later move came
CHAR_GRACE_NS = 50_000_000    # focus must stay typing_task this long after a key to keep its char
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 2.0

_NAVIGATION = {"left", "right", "up", "down", "home", "end", "page_up", "page_down", "tab"}
_MODIFIERS = {"alt", "alt_l", "alt_r", "alt_gr", "ctrl", "ctrl_l", "ctrl_r", "shift", "shift_l",
              "shift_r", "cmd", "cmd_l", "cmd_r", "caps_lock", "num_lock", "scroll_lock"}
_SPECIAL_CHARS = {"space": " ", "enter": "\n", "tab": "\t"}


def classify_key(key: Any) -> tuple[int, str]:
    """(KeyClass, character) of a pynput key (``Key`` member, ``KeyCode`` or None).

    The character is what the key would type ("" for none); the caller decides whether it may be
    kept. Dead keys (accents) count as printable without a character. (The XI2 backend classifies
    X keysyms with ``input_xi2.classify_keysym``, which follows the same table.)
    """
    if key is None:
        return KeyClass.OTHER, ""
    name = getattr(key, "name", None)  # pynput.keyboard.Key members have a name
    if name is not None and not hasattr(key, "char"):
        if name == "backspace":
            return KeyClass.BACKSPACE, ""
        if name == "delete":
            return KeyClass.DELETE, ""
        if name == "enter":
            return KeyClass.ENTER, "\n"
        if name == "space":
            return KeyClass.PRINTABLE, " "
        if name in _NAVIGATION:
            return KeyClass.NAVIGATION, _SPECIAL_CHARS.get(name, "")
        if name in _MODIFIERS:
            return KeyClass.MODIFIER, ""
        return KeyClass.OTHER, ""
    char = getattr(key, "char", None)
    if getattr(key, "is_dead", False):
        return KeyClass.PRINTABLE, ""
    if char and len(char) == 1 and char.isprintable():
        return KeyClass.PRINTABLE, char
    return KeyClass.OTHER, ""


class KeyPipeline:
    """Key presses/releases -> ``KeyEvent`` on the sink, applying the ``char`` privacy rule.

    Used by one thread of a backend (not thread-safe). ``press``/``release`` queue an event;
    ``release_due(now_ns)`` emits queued events whose grace period is over (all with
    ``force=True``); ``deadline()`` is the station-clock ns at which the oldest queued event with
    a character becomes due (None when nothing waits). Events leave in arrival order.
    """

    def __init__(self, sink: EventSink, focus_state: Any, key_times: Any, counts: collections.Counter):
        self.sink = sink
        self.focus_state = focus_state
        self.key_times = key_times
        self.counts = counts
        self.pending: collections.deque = collections.deque()  # (KeyEvent without char, char)

    def press(self, t_ns: int, key_class: int, char: str, injected: bool, repeat: bool) -> None:
        if self.key_times is not None:
            try:
                self.key_times.note(t_ns)
            except Exception:
                pass
        ev = KeyEvent(t_ns, int(key_class), True, repeat, injected, "")
        keep = char if char and self.focus_state.category_at(t_ns) == "typing_task" else ""
        self.pending.append((ev, keep))
        self.counts["keys"] += 1

    def release(self, t_ns: int, key_class: int, injected: bool) -> None:
        self.pending.append((KeyEvent(t_ns, int(key_class), False, False, injected, ""), ""))

    def deadline(self) -> int | None:
        return self.pending[0][0].t_ns + CHAR_GRACE_NS + 1 if self.pending else None

    def release_due(self, now_ns: int, force: bool = False) -> None:
        pending = self.pending
        while pending:
            ev, char = pending[0]
            if char and not force and now_ns < ev.t_ns + CHAR_GRACE_NS:
                return
            pending.popleft()
            if char and self.focus_state.steady("typing_task", ev.t_ns, ev.t_ns + CHAR_GRACE_NS):
                ev = KeyEvent(ev.t_ns, ev.key_class, ev.down, ev.repeat, ev.injected, char)
            self.sink.put(ev)


class InputSource:
    """Keyboard + mouse source (see module docstring). ``backend`` is the chosen backend name
    (after ``start()``); ``status()`` gives state, detail, backend, how injected input is
    detected, reconnects, queue depth and counters (keys, moves, mouse_bins, clicks, scrolls)."""

    name = "input"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None):
        self.cfg = cfg
        self.focus_state = focus_state
        self.key_times = key_times
        self.connected = threading.Event()  # set while the backend reads input from the X server
        self.backend = ""
        self.backend_reason = ""
        self._impl: Any = None
        self._last: Any = None  # the stopped backend, for status()

    def start(self, sink: EventSink) -> None:
        if self._impl is not None:
            raise RuntimeError("input source already started")
        self.backend, self.backend_reason = platform.input_backend(platform.detect())
        if self.backend == "xi2":
            from .input_xi2 import Xi2Input as impl_cls
        else:
            from .input_pynput import PynputInput as impl_cls
        self._impl = impl_cls(self.cfg, self.focus_state, self.key_times, connected=self.connected)
        self._impl.start(sink)

    def stop(self) -> None:
        if self._impl is not None:
            self._impl.stop()
            self._last, self._impl = self._impl, None

    def status(self) -> dict[str, Any]:
        impl = self._impl or self._last
        if impl is None:
            return {"state": "stopped", "detail": "", "backend": self.backend}
        return {**impl.status(), "backend": self.backend}

    @property
    def counts(self) -> collections.Counter:
        impl = self._impl or self._last
        return impl.counts if impl is not None else collections.Counter()

    @property
    def reconnects(self) -> int:
        impl = self._impl or self._last
        return impl.reconnects if impl is not None else 0
