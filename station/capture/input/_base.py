"""What the input backends share: key classification, the key pipeline with the ``char``
privacy rule, mouse bin length. Backends import this module, never the front
(``station.capture.input``)."""


from __future__ import annotations

import collections
from typing import Any

from station.eventqueue import EventSink
from station.events import KeyClass, KeyEvent

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


class _Resolve(str):
    """The placeholder character of a key whose character is asked for later (``KeyPipeline.resolve``)."""


RESOLVE = _Resolve("?")


class KeyPipeline:
    """Key presses/releases -> ``KeyEvent`` on the sink, applying the ``char`` privacy rule.

    Used by one thread of a backend (not thread-safe). ``press``/``release`` queue an event;
    ``release_due(now_ns)`` emits queued events whose grace period is over (all with
    ``force=True``); ``deadline()`` is the station-clock ns at which the oldest queued event with
    a character becomes due (None when nothing waits). Events leave in arrival order.
    """

    def __init__(self, sink: EventSink, focus_state: Any, key_times: Any, counts: collections.Counter,
                 resolve: Any = None):
        """resolve: ``f(t_ns, code) -> char`` for a backend that learns a key's character only
        later (the evdev backend asks the display server's twin of the key, ``_evdev.TwinChars``):
        a press in a typing_task window with ``char=RESOLVE`` asks it when its grace is over."""
        self.sink = sink
        self.focus_state = focus_state
        self.key_times = key_times
        self.counts = counts
        self.resolve = resolve
        self.pending: collections.deque = collections.deque()  # (KeyEvent without char, char, code)

    def press(self, t_ns: int, key_class: int, char: str, injected: bool, repeat: bool, code: int = 0) -> None:
        if self.key_times is not None:
            try:
                self.key_times.note(t_ns)
            except Exception:
                pass
        ev = KeyEvent(t_ns, int(key_class), True, repeat, injected, "")
        keep = char if char and self.focus_state.category_at(t_ns) == "typing_task" else ""
        self.pending.append((ev, keep, code))
        self.counts["keys"] += 1

    def release(self, t_ns: int, key_class: int, injected: bool, code: int = 0) -> None:
        self.pending.append((KeyEvent(t_ns, int(key_class), False, False, injected, ""), "", code))

    def deadline(self) -> int | None:
        return self.pending[0][0].t_ns + CHAR_GRACE_NS + 1 if self.pending else None

    def release_due(self, now_ns: int, force: bool = False) -> None:
        pending = self.pending
        while pending:
            ev, char, code = pending[0]
            if char and not force and now_ns < ev.t_ns + CHAR_GRACE_NS:
                return
            pending.popleft()
            if char is RESOLVE:
                char = self.resolve(ev.t_ns, code) if self.resolve is not None else ""
            if char and self.focus_state.steady("typing_task", ev.t_ns, ev.t_ns + CHAR_GRACE_NS):
                ev = KeyEvent(ev.t_ns, ev.key_class, ev.down, ev.repeat, ev.injected, char)
            self.sink.put(ev)
