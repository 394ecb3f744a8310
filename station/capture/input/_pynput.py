"""pynput (X RECORD) backend of the input source: ``PynputInput``.

Chosen by ``station.capture.platform.input_backend`` when the X server has no XInput 2 (or when
``STATION_INPUT_BACKEND=pynput``); ``InputSource`` (``station.capture.input``) is the public class.

Threads:

- pynput's listener threads (X RECORD) call our callbacks, which only stamp ``monotonic_ns()``
  and put a tuple on a ``queue.SimpleQueue`` (lock-free put, never blocks);
- a worker thread turns those tuples into events (``classify_key`` for the class and character,
  ``KeyPipeline`` for the typing-task privacy rule, 10 ms ``MouseBin``; the distance is the path
  length over the motion events' root positions; the first move after (re)connecting has no
  previous position and adds 0 px); auto-repeat = a press of a key (X keycode) already down;
- a supervisor thread connects, watches the listeners and reconnects with backoff.

Injected (synthetic) input: pynput's xorg backend reports ``injected`` = the X event's
``send_event`` bit, which marks events sent with ``XSendEvent``. Events injected through the
XTEST extension (``xdotool``, pynput's Controller from another process, most remote-control and
automation tools) are processed by the X server as device events and are NOT distinguishable in
X RECORD: they arrive with ``injected=False``. See ``INJECTED_LIMITATION``.

Cost (benchmarks/capture_bench.py, XTEST relative motion, shared 2-core machine): input+focus
1.7-2.1 % of one core at 125 Hz mouse + 8 keys/s, 7.7-8.4 % at 1000 Hz + 20 keys/s (the XI2
backend: 1.0 % and 1.4 %); with pointer warps (``xdotool mousemove X Y``) as motion, 6.3 % /
14.9 %.
X RECORD hands motion over in bursts, stamped on arrival: mouse bins are coarser than the motion.

Failure modes: X server gone -> ``SourceHealth("lost")``, listeners restarted with backoff (0.1 s
doubling to 2 s) -> ``"ok"``; no X RECORD extension -> ``"lost"`` with that reason (retried);
Wayland or no display -> ``"lost"`` with the reason from ``station.capture.platform``.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from typing import Any

from station.capture import platform
from station.capture.base import HealthReporter, reconnect_loop
from station.capture.delivery import DeliveryBound
from station.clock import monotonic_ns
from station.eventqueue import EventSink
from station.events import MouseBin, MouseClick, MouseScroll
from station.osthread import named

from ._base import BIN_NS, BIN_SLACK_NS, KeyPipeline, classify_key

WORKER_BATCH_S = 0.010     # the worker collects raw events this long after a wake-up
DELIVERY_MARGIN_NS = 50_000_000  # a hook callback queues its event within this after stamping it
INJECTED_LIMITATION = ("pynput/xorg backend: injected marks XSendEvent events only; XTEST injection "
                       "(xdotool, automation tools) is indistinguishable from real input")

# raw tuple kinds on the hook -> worker queue
_PRESS, _RELEASE, _MOVE, _CLICK, _SCROLL, _RESET, _QUIT = range(7)


class PynputInput:
    """The pynput (X RECORD) backend of ``InputSource`` (see module docstring). ``status()`` counts
    keys, moves, clicks, scrolls, reconnects and the queue depth."""

    name = "input"

    def __init__(self, cfg: Any, focus_state: Any, key_times: Any = None,
                 connected: threading.Event | None = None):
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
        self.connected = connected if connected is not None else threading.Event()  # both listeners run
        self.counts = collections.Counter()
        self.reconnects = 0
        # events are stamped in the hook callbacks, then queued: one stamped before a moment the
        # queue was empty may still come (DELIVERY_MARGIN_NS); a move's bin starts up to BIN_NS
        # before its stamp
        self.bound = DeliveryBound(DELIVERY_MARGIN_NS, BIN_NS, pending=lambda: not self._q.empty())

    # -- Source interface -------------------------------------------------------------------
    def delivered_until(self) -> int | None:
        """Station time (ns) below which every event is in the sink: the last moment the worker
        found the queue empty less ``DELIVERY_MARGIN_NS`` (a callback stamps, then queues) and
        one mouse bin, or the same taken now while the worker waits on an empty queue (idle
        keeps up with now); never past the open mouse bin or a key within its grace. None
        while the X connection is not up (``station.capture.delivery``)."""
        if not self.connected.is_set():
            return None
        return self.bound.until()

    def start(self, sink: EventSink) -> None:
        if self._sup is not None:
            raise RuntimeError("input source already started")
        self._sink = sink
        self._health = HealthReporter(self.name, sink)
        self._stop.clear()
        self._worker = threading.Thread(target=named(self._work), name="station-input-worker", daemon=True)
        self._worker.start()
        self._sup = threading.Thread(target=named(self._supervise), name="station-input", daemon=True)
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
        reconnect_loop(self._stop, lambda connected: self._session(backend.display, connected),
                       self._count_reconnect)
        self._disconnect()

    def _count_reconnect(self) -> None:
        self.reconnects += 1

    def _session(self, display: str, connected) -> None:
        """One X connection's worth of recording (see ``reconnect_loop``)."""
        problem = self._connect(display)
        if problem is not None:
            self._health.report("lost", problem)
            return
        connected()
        self._health.report("ok", f"recording keyboard and mouse on {display} (X RECORD)")
        self.connected.set()
        self._wake.clear()
        while not self._stop.is_set() and all(li.is_alive() for li in self._listeners):
            self._wake.wait()  # a listener ended (X server gone) or stop()
            self._wake.clear()
        self.connected.clear()
        if self._stop.is_set():
            return
        errors = [getattr(li, "station_error", None) for li in self._listeners]
        err = next((e for e in errors if e), "listener ended")
        self._health.report("lost", f"X connection to {display} lost: {err}")
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
        keys = KeyPipeline(self._sink, self.focus_state, self.key_times, self.counts)
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
                    keys.press(t, key_class, char, bool(inj), repeat)
                else:
                    down.discard(ident)
                    keys.release(t, key_class, bool(inj))
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
                keys.release_due(monotonic_ns(), force=True)
                return True
            return False

        def held() -> int | None:
            """The earliest time (ns) of an event still held: the open bin, a key in its grace."""
            k = keys.pending[0][0].t_ns if keys.pending else None
            if bin_t < 0:
                return k
            return bin_t if k is None else min(bin_t, k)

        bound = self.bound
        q = self._q
        while True:
            now = monotonic_ns()
            deadlines = []
            if bin_t >= 0:
                deadlines.append(bin_t + BIN_NS + BIN_SLACK_NS)
            d = keys.deadline()
            if d is not None:
                deadlines.append(d)
            timeout = max(0.0, (min(deadlines) - now) / 1e9) if deadlines else None
            bound.waiting(held())
            try:
                items = [q.get(timeout=timeout)]
            except queue.Empty:
                bound.woke()
                t0 = now = monotonic_ns()
                if bin_t >= 0 and now >= bin_t + BIN_NS + BIN_SLACK_NS:
                    flush_bin()
                keys.release_due(now)
                if q.empty():
                    bound.drained(t0, held())
                continue
            bound.woke()
            # Woken by an event: let more arrive, then take them all (at most ~1/WORKER_BATCH_S
            # wake-ups per second under load instead of one per event; stamps are already taken).
            if items[0][1] != _QUIT:
                time.sleep(WORKER_BATCH_S)
            try:
                while True:
                    t0 = monotonic_ns()
                    items.append(q.get_nowait())
            except queue.Empty:
                pass       # the queue was empty at t0
            for item in items:
                if process(item):
                    bound.lost()
                    return
            keys.release_due(monotonic_ns())
            bound.drained(t0, held())


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
