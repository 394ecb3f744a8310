"""Window focus: which window the candidate works in, event-driven, and its category.

``FocusSource(cfg, focus_state)`` (source name ``"focus"``) emits a ``FocusChange`` every time the
active window changes or the active window's title changes. X11 backend (python-xlib), no polling:

- the root window is watched for ``PropertyNotify`` of ``_NET_ACTIVE_WINDOW`` (EWMH, set by the
  window manager);
- the active window is watched for ``PropertyNotify`` of ``_NET_WM_NAME`` / ``WM_NAME``;
- the thread sleeps in ``select()`` on the X connection and a wake-up pipe (for ``stop()``).

Each change carries the window id, the class part of ``WM_CLASS``, the title as the privacy
setting allows (``Categorizer.private_title``: kept, hashed or dropped), ``_NET_WM_PID`` and the
process name (``/proc/PID/comm``, "" when unknown), and the category from
``Categorizer.match(class, title, process, instance)`` (on the full title, before privacy; a rule's
``class`` pattern may match either part of ``WM_CLASS``). An ``observer`` (``station categories``)
is called with a ``WindowSeen`` for every change: instance, class, full title, process, match.
``t_ns`` is stamped (station clock) as soon as the X event is read from the socket. "No active
window" (id 0) is reported only when it lasts ``NONE_DEBOUNCE_NS`` (50 ms): window managers such
as openbox clear ``_NET_ACTIVE_WINDOW`` for a moment between two windows, which would otherwise
count as extra window switches; the focus state says "other" at once all the same.

Failure modes: a window that vanishes between the event and the query (``BadWindow``) yields a
change with whatever could be read (class/title ""), never an exception; the X server going away
gives ``SourceHealth("lost")``, the focus state becomes ``"unknown"`` (so no characters are
recorded), and the source reconnects with backoff (0.1 s doubling to 2 s) and reports ``"ok"``
again; a window manager without ``_NET_ACTIVE_WINDOW`` gives ``"degraded"``; a Wayland or
display-less session gives ``"lost"`` with the reason from ``station.capture.platform``. On GNOME
under Wayland the focus comes from the station's GNOME Shell extension over D-Bus instead
(``station.capture.focus_gnome``), and on wlroots compositors (sway, labwc, ...) from the
foreign-toplevel protocol (``station.capture.focus_wlr``), both chosen by ``platform.focus_backend``.

``FocusState`` is the thread-safe current category, shared with the input source, which records
typed characters only while the category is ``typing_task``.
"""

from __future__ import annotations

import collections
import logging
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable

from station.capture import platform
from station.capture.base import ThreadedSource, reconnect_loop
from station.categories import Categorizer, Match
from station.capture.delivery import DeliveryBound
from station.clock import monotonic_ns
from station.events import FocusChange

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # category while focus cannot be observed (not a config category)
NONE_DEBOUNCE_NS = 50_000_000  # "no active window" shorter than this is not reported (WM blip)


@dataclass(frozen=True)
class WindowSeen:
    """What the focus source saw of the focused window (full title, before privacy) and the rule
    match it gave; for ``station categories``. t_ns: station clock."""

    t_ns: int
    window_id: int
    instance: str
    wm_class: str
    title: str
    pid: int
    process: str
    match: Match
    app_id: str = ""     # GNOME Wayland: the application id ("" under X11)


class FocusState:
    """Thread-safe current window category, with a short history of changes.

    Times are station-clock ns. ``category`` is ``"unknown"`` until the focus source has observed
    a window (and again while it is lost). ``history`` keeps the last ``keep`` changes so that a
    reader can ask what the category was at an earlier time (``category_at``) and whether it was
    steady over an interval (``steady``): the input source uses that to decide, after a short
    grace period, whether a key's character may be kept.
    """

    def __init__(self, keep: int = 256):
        self._lock = threading.Lock()
        self._hist: collections.deque[tuple[int, str, int]] = collections.deque(maxlen=keep)
        self._hist.append((0, UNKNOWN, 0))

    def set(self, category: str, t_ns: int, window_id: int = 0) -> None:
        with self._lock:
            self._hist.append((int(t_ns), category, int(window_id)))

    @property
    def category(self) -> str:
        with self._lock:
            return self._hist[-1][1]

    @property
    def window_id(self) -> int:
        with self._lock:
            return self._hist[-1][2]

    def category_at(self, t_ns: int) -> str:
        """Category in force at ``t_ns`` ("unknown" when older than the kept history)."""
        with self._lock:
            for t, cat, _ in reversed(self._hist):
                if t <= t_ns:
                    return cat
            return UNKNOWN

    def steady(self, category: str, t0_ns: int, t1_ns: int) -> bool:
        """True when the category was ``category`` at t0 and no change was recorded in (t0, t1]."""
        with self._lock:
            at = UNKNOWN
            for t, cat, _ in reversed(self._hist):
                if t <= t0_ns:
                    at = cat
                    break
                if t <= t1_ns:
                    return False  # a change inside (t0, t1]
            return at == category


def read_comm(pid: int) -> str:
    """Process name of ``pid`` from /proc/PID/comm ("" when unknown, gone or not local)."""
    if pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


class FocusSource(ThreadedSource):
    """Event-driven window-focus source (see module docstring). ``status()`` gives state and
    counters: changes emitted, reconnects, vanished windows."""

    name = "focus"
    thread_name = "station-focus"

    def __init__(self, cfg: Any, focus_state: FocusState | None = None,
                 observer: Callable[[WindowSeen], None] | None = None):
        self.cfg = cfg
        self.observer = observer
        self.focus_state = focus_state if focus_state is not None else FocusState()
        self.categorizer = Categorizer(cfg)
        super().__init__()
        self.changes = 0
        self.reconnects = 0
        self.vanished = 0
        self.connected = threading.Event()  # set while an X connection is up and watched
        # stamps are read times (taken after the wait, before reading): whatever the reader has
        # not read yet will be stamped later than any moment it waited at, readable or not
        self.bound = DeliveryBound(0, pending=lambda: False)

    # -- Source interface -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        h = self._health
        return {"state": h.state if h else "stopped", "detail": h.detail if h else "",
                "changes": self.changes, "reconnects": self.reconnects, "vanished": self.vanished}

    def delivered_until(self) -> int | None:
        """Station time (ns) below which every focus change is in the sink: the moment the
        watcher last waited with everything read handled, or now while it waits (an idle
        connection keeps up with now), but not past a "no window" change held for its debounce;
        None while lost (``station.capture.delivery``)."""
        return self.bound.until()

    # -- supervisor -------------------------------------------------------------------------
    def _run(self) -> None:
        backend = platform.detect()
        kind, reason = platform.focus_backend(backend)
        if kind == "gnome":
            reconnect_loop(self._stop, self._gnome_session, self._count_reconnect)
            return
        if kind == "wlroots":
            reconnect_loop(self._stop, self._wlr_session, self._count_reconnect)
            return
        if kind != "x11":
            self.focus_state.set(UNKNOWN, monotonic_ns())
            self._health.report("lost", reason)
            self._stop.wait()
            return
        reconnect_loop(self._stop, lambda connected: self._session(backend.display, connected),
                       self._count_reconnect)

    def _count_reconnect(self) -> None:
        self.reconnects += 1

    def _watch(self, connected, open_watcher, stopped: type, where: str) -> None:
        """One connection's worth of watching (see ``reconnect_loop``): ``open_watcher()`` connects
        (an exception: ``where`` unreachable; ``Unsupported``-like errors carry their own text in
        ``str(e)`` when their class says so), ``run()`` reads until the connection ends or
        ``stopped`` is raised by stop()."""
        try:
            watcher = open_watcher()
        except _OwnReason as e:
            self._lost(str(e))
            return
        except Exception as e:  # cannot connect: server not (yet) there, no bus, module missing
            self._lost(f"{where} unreachable: {_describe(e)}")
            return
        connected()
        try:
            watcher.run()
        except stopped:
            pass
        except Exception as e:  # connection closed, protocol error, the server went away
            self._lost(f"{where} connection lost: {_describe(e)}")
        finally:
            self.connected.clear()
            self.bound.lost()
            watcher.close()

    def _session(self, display: str, connected) -> None:
        """X11: one X connection (python-xlib, event-driven)."""
        self._watch(connected, lambda: _X11Watcher(self, display), _Stopped, f"X display {display}")

    def _gnome_session(self, connected) -> None:
        """GNOME Wayland: one session-bus connection to the station's Shell extension (``focus_gnome``)."""
        from station.capture import focus_gnome
        self._watch(connected, lambda: focus_gnome.GnomeWatcher(self, read_comm), focus_gnome.Stopped,
                    "D-Bus session bus")

    def _wlr_session(self, connected) -> None:
        """wlroots compositors: one Wayland connection (foreign-toplevel protocol, ``focus_wlr``)."""
        from station.capture import focus_wlr

        def open_watcher():
            try:
                return focus_wlr.WlrWatcher(self)
            except focus_wlr.Unsupported as e:
                raise _OwnReason(str(e)) from None
        self._watch(connected, open_watcher, focus_wlr.Stopped, "Wayland display")

    def _lost(self, detail: str) -> None:
        self.focus_state.set(UNKNOWN, monotonic_ns())
        self._health.report("lost", detail)
        self.bound.lost()     # after the loss is in the sink

    def _emit(self, t_ns: int, window_id: int, wm_class: str, title: str, pid: int,
              instance: str = "", app_id: str = "") -> None:
        process = read_comm(pid)
        match = self.categorizer.match(wm_class, title, process, instance, app_id)
        category = match.category
        self.focus_state.set(category, t_ns, window_id)
        if self.observer is not None:
            self.observer(WindowSeen(t_ns, window_id, instance, wm_class, title, pid, process, match, app_id))
        self._sink.put(FocusChange(t_ns, window_id, wm_class, self.categorizer.private_title(title),
                                   pid, process, category))
        self.changes += 1


class _Stopped(Exception):
    pass


class _OwnReason(Exception):
    """A connection that cannot work, with a reason already fit for the health detail."""


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


class _X11Watcher:
    """One X connection's worth of focus watching; raises on connection loss."""

    def __init__(self, source: FocusSource, display_name: str):
        import Xlib.display
        import Xlib.X

        self.src = source
        self.X = Xlib.X
        self.d = Xlib.display.Display(display_name or None)
        self.d.set_error_handler(self._on_async_error)  # BadWindow on vanished windows: ignore
        self.root = self.d.screen().root
        atom = self.d.intern_atom
        self.A_ACTIVE = atom("_NET_ACTIVE_WINDOW")
        self.A_NAME = atom("_NET_WM_NAME")
        self.A_WM_NAME = atom("WM_NAME")
        self.A_WM_CLASS = atom("WM_CLASS")
        self.A_PID = atom("_NET_WM_PID")
        self.A_UTF8 = atom("UTF8_STRING")
        self.A_SUPPORTED = atom("_NET_SUPPORTED")
        self.watched = 0  # window whose title we watch
        self.pending_none: int | None = None  # t_ns of an active-window-None not yet emitted
        self.last: tuple[int, str, str, int, str] | None = None
        self.root.change_attributes(event_mask=Xlib.X.PropertyChangeMask)
        self.d.sync()

    def _on_async_error(self, err, request=None) -> None:
        self.src.vanished += 1

    def close(self) -> None:
        try:
            self.d.close()
        except Exception:
            pass

    # -- queries (each tolerates a vanished window) ------------------------------------------
    def _prop(self, win, atom, type_=0):
        try:
            p = win.get_full_property(atom, type_)
        except Exception as e:
            if _is_connection_error(e):
                raise
            self.src.vanished += 1
            return None
        return p

    def _active_window_id(self) -> int:
        p = self._prop(self.root, self.A_ACTIVE, self.X.AnyPropertyType)
        if p is None or not len(p.value):
            return 0
        return int(p.value[0])

    def _describe_window(self, wid: int) -> tuple[str, str, int, str]:
        """(wm_class, title, pid, instance) of a window; empty values for what cannot be read.
        wm_class is the class part of WM_CLASS (the instance when the class is empty)."""
        if not wid:
            return "", "", 0, ""
        win = self.d.create_resource_object("window", wid)
        wm_class = instance = ""
        p = self._prop(win, self.A_WM_CLASS, self.X.AnyPropertyType)
        if p is not None and p.value:
            raw = p.value if isinstance(p.value, (bytes, str)) else bytes(p.value)
            if isinstance(raw, str):
                raw = raw.encode("latin-1", "replace")
            parts = raw.split(b"\0")
            wm_class = (parts[1] if len(parts) > 1 and parts[1] else parts[0]).decode("utf-8", "replace")
            instance = parts[0].decode("utf-8", "replace")
        title = ""
        p = self._prop(win, self.A_NAME, self.A_UTF8)
        if p is None or not p.value:
            p = self._prop(win, self.A_WM_NAME, self.X.AnyPropertyType)
        if p is not None and p.value:
            v = p.value
            title = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        pid = 0
        p = self._prop(win, self.A_PID, self.X.AnyPropertyType)
        if p is not None and len(p.value):
            pid = int(p.value[0])
        return wm_class, title, pid, instance

    def _watch_title(self, wid: int) -> None:
        if wid == self.watched:
            return
        if self.watched:
            old = self.d.create_resource_object("window", self.watched)
            old.change_attributes(event_mask=0)  # async; BadWindow ignored by the handler
        if wid:
            win = self.d.create_resource_object("window", wid)
            win.change_attributes(event_mask=self.X.PropertyChangeMask)
        self.watched = wid

    def _refresh(self, t_ns: int) -> None:
        wid = self._active_window_id()
        self._watch_title(wid)
        if wid == 0 and self.last is not None and self.last[0] != 0:
            # Window managers (openbox) clear _NET_ACTIVE_WINDOW for a moment between two windows.
            # The state says "other" at once (no characters), the event waits NONE_DEBOUNCE_NS.
            self.src.focus_state.set("other", t_ns, 0)
            if self.pending_none is None:
                self.pending_none = t_ns
            return
        self.pending_none = None
        wm_class, title, pid, instance = self._describe_window(wid)
        key = (wid, wm_class, title, pid, instance)
        if key == self.last:
            if self.src.focus_state.window_id != wid:  # back to the same window after a blip
                self.src.focus_state.set(self.src.categorizer.classify(wm_class, title, read_comm(pid),
                                                                       instance), t_ns, wid)
            return
        self.last = key
        self.src._emit(t_ns, wid, wm_class, title, pid, instance)

    def _flush_none(self) -> None:
        t_ns, self.pending_none = self.pending_none, None
        self.last = (0, "", "", 0, "")
        self.src._emit(t_ns, 0, "", "", 0)

    def _ewmh_ok(self) -> bool:
        p = self._prop(self.root, self.A_SUPPORTED, self.X.AnyPropertyType)
        return p is not None and self.A_ACTIVE in list(p.value)

    def _report_wm(self) -> None:
        if self._ewmh_ok():
            self.src._health.report("ok", f"watching _NET_ACTIVE_WINDOW on {self.d.get_display_name()}")
        else:
            self.src._health.report("degraded", "window manager does not announce _NET_ACTIVE_WINDOW "
                                                "(EWMH): focus changes are not seen until one does")

    # -- event loop -------------------------------------------------------------------------
    def run(self) -> None:
        src = self.src
        X = self.X
        self._report_wm()
        self._refresh(monotonic_ns())
        src.connected.set()
        fd = self.d.fileno()
        bound = src.bound
        while True:
            if src._stop.is_set():
                raise _Stopped()
            bound.drained(monotonic_ns(), self.pending_none)   # all read so far is handled
            if not self.d.pending_events():
                timeout = None
                if self.pending_none is not None:
                    timeout = max(0.0, (self.pending_none + NONE_DEBOUNCE_NS - monotonic_ns()) / 1e9)
                bound.waiting(self.pending_none)
                r, _, _ = select.select([fd, src._wake_r], [], [], timeout)
                bound.woke()
                if src._wake_r in r:
                    raise _Stopped()
                if not r:
                    self._flush_none()
                    continue
            t_ns = monotonic_ns()
            # pending_events() reads the socket; it raises ConnectionClosedError when the server
            # is gone. 0 means only replies/errors (or a partial event) arrived: wait again.
            n = self.d.pending_events()
            refresh = False
            for _ in range(n):
                ev = self.d.next_event()
                if ev.type != X.PropertyNotify:
                    continue
                wid = ev.window.id
                if wid == self.root.id:
                    if ev.atom == self.A_ACTIVE:
                        refresh = True
                    elif ev.atom == self.A_SUPPORTED:  # a window manager (re)started
                        self._report_wm()
                        refresh = True
                elif wid == self.watched and ev.atom in (self.A_NAME, self.A_WM_NAME):
                    refresh = True
            if refresh:
                self._refresh(t_ns)


def _is_connection_error(e: BaseException) -> bool:
    import Xlib.error
    return isinstance(e, (Xlib.error.ConnectionClosedError, OSError))
