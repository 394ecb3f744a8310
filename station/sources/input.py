"""Keyboard and mouse timing (pynput, xorg backend): key classes, mouse bins, clicks, scrolls.

``InputSource(cfg, focus_state, key_times=None)`` (source name ``"input"``).

Threads:

- pynput's listener threads (X RECORD) call our callbacks, which only stamp
  ``monotonic_ns()`` and put a tuple on a ``queue.SimpleQueue`` (lock-free put, never blocks);
- a worker thread turns those tuples into events:
  ``KeyEvent`` (class only, see ``classify_key``; ``repeat`` = a press of a key already down,
  i.e. keyboard auto-repeat; ``char`` only inside ``typing_task`` windows, see below),
  ``MouseBin`` (moves aggregated per 10 ms bin aligned on the station clock: count and path
  length in px, rounded; the first move after (re)connecting has no previous position and adds
  0 px), ``MouseClick`` (X button number) and ``MouseScroll`` (steps, +dy = up);
  and calls ``key_times.note(t_ns)`` for every key press (``RecentKeyPresses`` of the audio
  source, for keyboard-click rejection);
- a supervisor thread connects, watches the listeners and reconnects with backoff.

Privacy rule for ``char``: a key press keeps its character only if the focus category was
``typing_task`` at the key's time AND stayed so for ``CHAR_GRACE_NS`` afterwards (the focus
source learns of a focus change a few ms after the X server made it; a key typed into a newly
focused crm window in that gap must not be taken for a typing-task key). Key events are therefore
emitted up to 60 ms after they happen; their ``t_ns`` is the stamp, not the emission time.
Characters recorded: printable characters, " " (space), "\\n" (enter), "\\t" (tab); never for
releases.

Injected (synthetic) input: pynput's xorg backend reports ``injected`` = the X event's
``send_event`` bit, which marks events sent with ``XSendEvent``. Events injected through the
XTEST extension (``xdotool``, pynput's Controller from another process, most remote-control and
automation tools) are processed by the X server as device events and are NOT distinguishable in
X RECORD: they arrive with ``injected=False``. See ``INJECTED_LIMITATION``.

Failure modes: X server gone -> ``SourceHealth("lost")`` (what happens meanwhile is unknown, not
inactivity), listeners restarted with backoff (0.1 s doubling to 2 s) -> ``"ok"``; no X RECORD
extension -> ``"lost"`` with that reason (retried); Wayland or no display -> ``"lost"`` with the
reason from ``station.sources.platform`` (not retried: the session type does not change).
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from typing import Any

from ..clock import monotonic_ns
from ..events import KeyClass, KeyEvent, MouseBin, MouseClick, MouseScroll
from . import platform
from .base import EventSink, HealthReporter

BIN_NS = 10_000_000           # mouse bin length: 10 ms
BIN_SLACK_NS = 2_000_000      # a bin is closed this long after its end if no later move came
CHAR_GRACE_NS = 50_000_000    # focus must stay typing_task this long after a key to keep its char
WORKER_BATCH_S = 0.010     # the worker collects raw events this long after a wake-up
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 2.0
INJECTED_LIMITATION = ("xorg backend: injected marks XSendEvent events only; XTEST injection "
                       "(xdotool, automation tools) is indistinguishable from real input")

# raw tuple kinds on the hook -> worker queue
_PRESS, _RELEASE, _MOVE, _CLICK, _SCROLL, _RESET, _QUIT = range(7)

_NAVIGATION = {"left", "right", "up", "down", "home", "end", "page_up", "page_down", "tab"}
_MODIFIERS = {"alt", "alt_l", "alt_r", "alt_gr", "ctrl", "ctrl_l", "ctrl_r", "shift", "shift_l",
              "shift_r", "cmd", "cmd_l", "cmd_r", "caps_lock", "num_lock", "scroll_lock"}
_SPECIAL_CHARS = {"space": " ", "enter": "\n", "tab": "\t"}


def classify_key(key: Any) -> tuple[int, str]:
    """(KeyClass, character) of a pynput key (``Key`` member, ``KeyCode`` or None).

    The character is what the key would type ("" for none); the caller decides whether it may be
    kept. Dead keys (accents) count as printable without a character.
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


class InputSource:
    """Keyboard + mouse source (see module docstring). ``status()`` counts keys, moves, clicks,
    scrolls, reconnects and the queue depth."""

    name = "input"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None):
        self.cfg = cfg
        self.focus_state = focus_state
        self.key_times = key_times
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._sink: EventSink | None = None
        self._health: HealthReporter | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set on stop or when a listener thread ends
        self._sup: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._listeners: list[Any] = []
        self.connected = threading.Event()  # set while both listeners run
        self.counts = collections.Counter()
        self.reconnects = 0

    # -- Source interface -------------------------------------------------------------------
    def start(self, sink: EventSink) -> None:
        if self._sup is not None:
            raise RuntimeError("input source already started")
        self._sink = sink
        self._health = HealthReporter(self.name, sink)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="station-input-worker", daemon=True)
        self._worker.start()
        self._sup = threading.Thread(target=self._supervise, name="station-input", daemon=True)
        self._sup.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sup is not None:
            self._sup.join(timeout=2.0)
            self._sup = None
        self._q.put((0, _QUIT))
        if self._worker is not None:
            self._worker.join(timeout=2.0)
            self._worker = None

    def status(self) -> dict[str, Any]:
        h = self._health
        return {"state": h.state if h else "stopped", "detail": h.detail if h else "",
                "reconnects": self.reconnects, "queued": self._q.qsize(),
                "injected_detection": INJECTED_LIMITATION, **self.counts}

    # -- hook callbacks: stamp and enqueue, nothing else ------------------------------------
    def _on_press(self, key, injected=False):
        self._q.put((monotonic_ns(), _PRESS, key, injected, self._detail(self._listeners[0])))

    def _on_release(self, key, injected=False):
        self._q.put((monotonic_ns(), _RELEASE, key, injected, self._detail(self._listeners[0])))

    def _on_move(self, x, y, injected=False):
        self._q.put((monotonic_ns(), _MOVE, x, y, injected))

    def _on_click(self, x, y, button, pressed, injected=False):
        self._q.put((monotonic_ns(), _CLICK, button, pressed, injected))

    def _on_scroll(self, x, y, dx, dy, injected=False):
        self._q.put((monotonic_ns(), _SCROLL, dx, dy, injected))

    @staticmethod
    def _detail(listener) -> int | None:
        return getattr(listener, "station_keycode", None)

    # -- supervisor -------------------------------------------------------------------------
    def _supervise(self) -> None:
        backend = platform.detect()
        if not backend.capturable:
            self._health.report("lost", platform.unavailable_reason(backend))
            self._stop.wait()
            return
        delay = BACKOFF_START_S
        first = True
        while not self._stop.is_set():
            problem = self._connect(backend.display)
            if problem is None:
                if not first:
                    self.reconnects += 1
                first = False
                delay = BACKOFF_START_S
                self._health.report("ok", f"recording keyboard and mouse on {backend.display} (X RECORD)")
                self.connected.set()
                self._wake.clear()
                while not self._stop.is_set() and all(li.is_alive() for li in self._listeners):
                    self._wake.wait()  # a listener ended (X server gone) or stop()
                    self._wake.clear()
                self.connected.clear()
                if self._stop.is_set():
                    break
                errors = [getattr(li, "station_error", None) for li in self._listeners]
                err = next((e for e in errors if e), "listener ended")
                self._health.report("lost", f"X connection to {backend.display} lost: {err}")
                self._disconnect()
            else:
                self._health.report("lost", problem)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, BACKOFF_MAX_S)
        self._disconnect()

    def _connect(self, display: str) -> str | None:
        """Start both listeners; None on success, else the reason."""
        ok, detail = platform.x11_probe(display)
        if not ok:
            return detail
        try:
            has_record = _has_record(display)
        except Exception as e:
            return f"X display {display} unreachable: {type(e).__name__}"
        if not has_record:
            return f"X display {display} has no RECORD extension: keyboard and mouse cannot be recorded"
        try:
            kb_cls, mouse_cls = _listener_classes(self._wake)
        except ImportError as e:
            return f"pynput xorg backend unavailable: {str(e).splitlines()[0]}"
        kb = kb_cls(on_press=self._on_press, on_release=self._on_release)
        mouse = mouse_cls(on_move=self._on_move, on_click=self._on_click, on_scroll=self._on_scroll)
        self._listeners = [kb, mouse]
        self._q.put((monotonic_ns(), _RESET))
        for li in self._listeners:
            li.daemon = True
            li.start()
        for li in self._listeners:
            if not li.station_ready.wait(5.0) or not li.is_alive():
                err = getattr(li, "station_error", None) or "did not start"
                self._disconnect()
                return f"pynput listener on {display}: {err}"
        return None

    def _disconnect(self) -> None:
        for li in self._listeners:
            if not li.is_alive():
                continue  # ended (pynput's stop() would wait forever for a context never made)
            try:
                li.stop()
            except Exception:
                pass  # the X connection may already be gone
        for li in self._listeners:
            li.join(timeout=1.0)
        if self._listeners:
            self._listeners = [self._listeners[0]]  # keep [0] for late callbacks' keycode lookup
        self._q.put((monotonic_ns(), _RESET))

    # -- worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        down: set = set()
        pending: collections.deque = collections.deque()  # (KeyEvent without char, char)
        bin_t = -1
        bin_count = bin_inj = 0
        bin_dist = 0.0
        last_xy: tuple[int, int] | None = None
        sink = self._sink

        def flush_bin():
            nonlocal bin_t, bin_count, bin_inj, bin_dist
            if bin_t >= 0 and bin_count:
                sink.put(MouseBin(bin_t, bin_count, int(round(bin_dist)), bin_inj))
                self.counts["mouse_bins"] += 1
            bin_t, bin_count, bin_inj, bin_dist = -1, 0, 0, 0.0

        def release_keys(now: int, force: bool = False):
            while pending:
                ev, char = pending[0]
                if char and not force and now < ev.t_ns + CHAR_GRACE_NS:
                    return
                pending.popleft()
                if char and self.focus_state.steady("typing_task", ev.t_ns, ev.t_ns + CHAR_GRACE_NS):
                    ev = KeyEvent(ev.t_ns, ev.key_class, ev.down, ev.repeat, ev.injected, char)
                sink.put(ev)

        def process(item) -> bool:
            """Handle one raw tuple; True on quit."""
            nonlocal bin_t, bin_count, bin_inj, bin_dist, last_xy
            t, kind = item[0], item[1]
            if kind == _MOVE:
                _, _, x, y, inj = item
                b = t - t % BIN_NS
                if b != bin_t:
                    flush_bin()
                    bin_t = b
                if last_xy is not None:
                    bin_dist += math.hypot(x - last_xy[0], y - last_xy[1])
                last_xy = (x, y)
                bin_count += 1
                bin_inj += bool(inj)
                self.counts["moves"] += 1
            elif kind in (_PRESS, _RELEASE):
                _, _, key, inj, keycode = item
                ident = keycode if keycode is not None else key
                key_class, char = classify_key(key)
                if kind == _PRESS:
                    repeat = ident in down
                    down.add(ident)
                    if self.key_times is not None:
                        try:
                            self.key_times.note(t)
                        except Exception:
                            pass
                    ev = KeyEvent(t, int(key_class), True, repeat, bool(inj), "")
                    pending.append((ev, char if self.focus_state.category_at(t) == "typing_task" else ""))
                    self.counts["keys"] += 1
                else:
                    down.discard(ident)
                    pending.append((KeyEvent(t, int(key_class), False, False, bool(inj), ""), ""))
            elif kind == _CLICK:
                _, _, button, pressed, inj = item
                num = getattr(button, "value", button)
                sink.put(MouseClick(t, int(num) if isinstance(num, int) else 0, bool(pressed), bool(inj)))
                self.counts["clicks"] += 1
            elif kind == _SCROLL:
                _, _, dx, dy, inj = item
                sink.put(MouseScroll(t, int(dx), int(dy), bool(inj)))
                self.counts["scrolls"] += 1
            elif kind == _RESET:
                flush_bin()
                last_xy = None
                down.clear()
            elif kind == _QUIT:
                flush_bin()
                release_keys(monotonic_ns(), force=True)
                return True
            return False

        while True:
            now = monotonic_ns()
            deadlines = []
            if bin_t >= 0:
                deadlines.append(bin_t + BIN_NS + BIN_SLACK_NS)
            if pending:
                deadlines.append(pending[0][0].t_ns + CHAR_GRACE_NS + 1)
            timeout = max(0.0, (min(deadlines) - now) / 1e9) if deadlines else None
            try:
                items = [self._q.get(timeout=timeout)]
            except queue.Empty:
                now = monotonic_ns()
                if bin_t >= 0 and now >= bin_t + BIN_NS + BIN_SLACK_NS:
                    flush_bin()
                release_keys(now)
                continue
            # Woken by an event: let more arrive, then take them all (at most ~1/WORKER_BATCH_S
            # wake-ups per second under load instead of one per event; stamps are already taken).
            if items[0][1] != _QUIT:
                time.sleep(WORKER_BATCH_S)
            try:
                while True:
                    items.append(self._q.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if process(item):
                    return
            release_keys(monotonic_ns())


def _has_record(display: str) -> bool:
    import Xlib.display
    d = Xlib.display.Display(display or None)
    try:
        return d.has_extension("RECORD")
    finally:
        d.close()


def _listener_classes(wake: threading.Event) -> tuple[type, type]:
    """pynput's xorg Listener classes, extended to (1) expose the X keycode of the event being
    handled (``station_keycode``, for auto-repeat detection independent of shift state),
    (2) signal readiness and (3) end quietly, setting ``wake``, when the X server goes away.

    Imported lazily: importing pynput.keyboard fails (ImportError) while no X server is reachable.
    """
    import pynput.keyboard
    import pynput.mouse

    def extend(base):
        class Listener(base):
            station_keycode = None
            station_error = None

            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.station_ready = threading.Event()

            def _mark_ready(self):
                super()._mark_ready()
                self.station_ready.set()

            def _handle_message(self, display, event, injected):
                self.station_keycode = getattr(event, "detail", None)
                super()._handle_message(display, event, injected)

            def run(self):
                try:
                    super().run()
                except BaseException as e:  # X connection closed, X error: the supervisor retries
                    self.station_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                finally:
                    self.station_ready.set()
                    wake.set()

        return Listener

    return extend(pynput.keyboard.Listener), extend(pynput.mouse.Listener)
