"""Keyboard and mouse timing: key classes, mouse bins, clicks, scrolls.

``InputSource(cfg, focus_state, key_times=None)`` (source name ``"input"``) is the public class.
It picks its backend once, in ``start()``, through ``station.capture.platform.input_backend``
(the one place that decides; ``input.backend``, override ``STATION_INPUT_BACKEND=evdev|xi2|pynput``):

- ``"evdev"`` (``station.capture.input._evdev``, default wherever ``/dev/input`` is readable, X11
  or Wayland): the kernel's devices, each with its identity (``DeviceEvent``) and the allow-list;
- ``"xi2"`` (``station.capture.input._xi2``, default on X11 with XInput >= 2.1): XI2 raw events
  read by one thread on its own X connection, parsed with ``struct``; flags XTEST-injected input;
- ``"pynput"`` (``station.capture.input._pynput``): pynput's xorg backend (X RECORD); cannot tell
  XTEST-injected input from real input; several times the CPU cost.

Every backend emits the same events:

- ``DeviceEvent("input", device, ...)``: every input device with its identity and whether it
  gives evidence (``devices.Policy``, config ``input.allow``), the whole set when the backend
  connects, then on hot-plug / removal;

- ``KeyEvent`` (class only, see ``KeyClass``; ``repeat`` = keyboard auto-repeat press;
  ``char`` only inside ``typing_task`` windows, see below); ``key_times.note(t_ns)`` is called
  for every key press (``RecentKeyPresses`` of the audio source, for keyboard-click rejection);
- ``MouseBin``: moves aggregated per 10 ms bin aligned on the station clock (count, path length
  in px rounded, how many moves were injected);
- ``MouseClick`` (X button number: 1-3, 8, 9...), ``MouseScroll`` (steps, +dy = up, +dx = right).

``injected`` on each of them means: NOT from a device with evidence (XTEST, uinput, a device
off the allow-list). The engine counts, alerts and reports such input and leaves it out of every
figure.

Characters under evdev: from the display server's keymap (XInput 2), and only for keys that
have their kernel twin within a few ms; an X key without one is injected (``_evdev.TwinChars``).

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
``"lost"`` with the reason from ``station.capture.platform`` (not retried).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from station.capture import platform
from station.eventqueue import EventSink


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
        configured = getattr(getattr(self.cfg, "input", None), "backend", "auto")
        self.backend, self.backend_reason = platform.input_backend(platform.detect(), configured=configured)
        if self.backend == "evdev":
            from ._evdev import EvdevInput as impl_cls
        elif self.backend == "xi2":
            from ._xi2 import Xi2Input as impl_cls
        else:
            from ._pynput import PynputInput as impl_cls
        self._impl = impl_cls(self.cfg, self.focus_state, self.key_times, connected=self.connected)
        self._impl.start(sink)

    def stop(self) -> None:
        if self._impl is not None:
            self._impl.stop()
            self._last, self._impl = self._impl, None

    def delivered_until(self) -> int | None:
        """The backend's delivery bound (station ns below which every event is in the sink;
        None when stopped, lost or not reading): see each backend's ``delivered_until``."""
        impl = self._impl
        until = getattr(impl, "delivered_until", None)
        return until() if until is not None else None

    def status(self) -> dict[str, Any]:
        impl = self._impl or self._last
        if impl is None:
            return {"state": "stopped", "detail": "", "backend": self.backend}
        return {**impl.status(), "backend": self.backend}

    def device_set(self) -> list:
        """The input devices the backend reads now, as ``DeviceEvent("present")`` stamped now
        (re-announced to a recorder after a reconnect); [] for a backend without devices."""
        impl = self._impl
        fn = getattr(impl, "device_set", None)
        return fn() if fn is not None else []

    @property
    def counts(self) -> collections.Counter:
        impl = self._impl or self._last
        return impl.counts if impl is not None else collections.Counter()

    @property
    def reconnects(self) -> int:
        impl = self._impl or self._last
        return impl.reconnects if impl is not None else 0
