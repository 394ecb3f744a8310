"""Window focus on wlroots compositors (sway, labwc, Wayfire, river, Hyprland) under Wayland: the
``zwlr_foreign_toplevel_manager_v1`` protocol, through pywayland.

The compositor announces every toplevel window as a handle and sends, for each, its ``title``,
``app_id`` and ``state`` (an array in which 2 = activated), each batch closed by ``done``;
``closed`` when the window goes. The watcher keeps the handles and emits a focus change when the
activated handle, or its title or app id, changes after a ``done``: event-driven, the thread
sleeps in ``select()`` on the Wayland socket and the source's wake-up pipe. The protocol carries
no process id: ``pid`` is 0 and ``process`` "" (rules on ``process`` do not match here). Window
ids are the watcher's own handle numbers (1, 2, ...). "No window activated" is reported only when
it lasts ``NONE_DEBOUNCE_NS`` (the old window's "not activated" may come just before the new one's
"activated").

Failure modes: no Wayland display -> raises out of the constructor (the source reports "lost" and
retries); a compositor without the protocol (KDE Plasma's KWin, GNOME without the station's
extension) -> ``Unsupported`` with the reason (reported "lost", retried); the compositor going away
-> raises out of ``run``.
"""

from __future__ import annotations

import select
import struct

from station.clock import monotonic_ns

MANAGER = "zwlr_foreign_toplevel_manager_v1"
ACTIVATED = 2
NONE_DEBOUNCE_NS = 50_000_000
UNSUPPORTED = (f"this Wayland compositor offers no {MANAGER} (wlroots foreign-toplevel protocol): window "
               "focus is NOT observed (KDE Plasma is not supported; use an X11 session)")


class Stopped(Exception):
    """The source's stop() woke the watcher."""


class Unsupported(Exception):
    """The compositor does not offer the protocol."""


class _Toplevel:
    __slots__ = ("id", "title", "app_id", "active")

    def __init__(self, wid: int):
        self.id, self.title, self.app_id, self.active = wid, "", "", False


def probe() -> tuple[bool, str]:
    """For ``station doctor``: does this Wayland compositor offer the protocol? Never raises."""
    try:
        from pywayland.client import Display
        d = Display()
        d.connect()
    except Exception as e:
        return False, f"Wayland display unreachable ({type(e).__name__}: {e})"
    try:
        found = []
        reg = d.get_registry()
        reg.dispatcher["global"] = lambda r, name, interface, version: found.append(interface)
        d.roundtrip()
        if MANAGER in found:
            return True, f"{MANAGER} offered: window focus is observed"
        return False, UNSUPPORTED
    except Exception as e:
        return False, f"Wayland display failed ({type(e).__name__}: {e})"
    finally:
        d.disconnect()


class WlrWatcher:
    """One Wayland connection's worth of focus watching for ``source`` (a FocusSource)."""

    def __init__(self, source):
        from pywayland.client import Display

        from station.capture.wlr_toplevel_protocol import ZwlrForeignToplevelManagerV1

        self.src = source
        self.display = Display()
        self.display.connect()          # ValueError without a reachable $WAYLAND_DISPLAY
        self.handles: dict[int, _Toplevel] = {}
        self.next_id = 1
        self.last: tuple | None = None
        self.pending_none: int | None = None
        self.t_ns = monotonic_ns()
        found = {}

        def on_global(registry, name, interface, version):
            if interface == MANAGER:
                found["manager"] = registry.bind(name, ZwlrForeignToplevelManagerV1, min(version, 3))

        self.registry = self.display.get_registry()
        self.registry.dispatcher["global"] = on_global
        self.display.roundtrip()
        if "manager" not in found:
            self.close()
            raise Unsupported(UNSUPPORTED)
        self.manager = found["manager"]
        self.manager.dispatcher["toplevel"] = self._on_toplevel
        self.manager.dispatcher["finished"] = self._on_finished
        self.finished = False

    def close(self) -> None:
        try:
            self.display.disconnect()
        except Exception:
            pass

    # -- protocol events ----------------------------------------------------------------------
    def _on_toplevel(self, manager, handle) -> None:
        top = _Toplevel(self.next_id)
        self.next_id += 1
        self.handles[id(handle)] = top
        handle.user_data = top

        def on_title(h, title):
            top.title = title

        def on_app_id(h, app_id):
            top.app_id = app_id

        def on_state(h, states):
            raw = bytes(states)
            top.active = ACTIVATED in struct.unpack(f"={len(raw) // 4}I", raw[: len(raw) // 4 * 4])

        def on_closed(h):
            top.active = False
            self.handles.pop(id(handle), None)
            self._changed()

        handle.dispatcher["title"] = on_title
        handle.dispatcher["app_id"] = on_app_id
        handle.dispatcher["state"] = on_state
        handle.dispatcher["done"] = lambda h: self._changed()
        handle.dispatcher["closed"] = on_closed

    def _on_finished(self, manager) -> None:
        self.finished = True

    def _changed(self) -> None:
        active = next((t for t in self.handles.values() if t.active), None)
        if active is None:
            if self.last is not None and self.last[0] != 0 and self.pending_none is None:
                self.src.focus_state.set("other", self.t_ns, 0)   # no characters meanwhile
                self.pending_none = self.t_ns
            return
        self.pending_none = None
        key = (active.id, active.app_id, active.title)
        if key != self.last:
            self.last = key
            self.src._emit(self.t_ns, active.id, active.app_id, active.title, 0, "", active.app_id)

    def _flush_none(self) -> None:
        t_ns, self.pending_none = self.pending_none, None
        self.last = (0, "", "")
        self.src._emit(t_ns, 0, "", "", 0)

    # -- loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        src = self.src
        src._health.report("ok", f"wlroots foreign-toplevel protocol on {self._name()}")
        self.display.roundtrip()           # the existing windows and their states
        src.connected.set()
        fd = self.display.get_fd()
        while True:
            self.display.dispatch(block=False)
            self.display.flush()
            if self.finished:
                raise ConnectionError("the compositor stopped the foreign-toplevel manager")
            timeout = None
            if self.pending_none is not None:
                timeout = max(0.0, (self.pending_none + NONE_DEBOUNCE_NS - monotonic_ns()) / 1e9)
            src.bound.drained(monotonic_ns(), self.pending_none)   # all read so far is handled
            src.bound.waiting(self.pending_none)
            r, _, _ = select.select([fd, src._wake_r], [], [], timeout)
            src.bound.woke()
            if src._wake_r in r:
                raise Stopped()
            if not r:
                self._flush_none()
                continue
            self.t_ns = monotonic_ns()
            self.display.read()           # raises RuntimeError when the compositor is gone
            self.display.dispatch(block=False)

    @staticmethod
    def _name() -> str:
        import os
        return os.environ.get("WAYLAND_DISPLAY", "wayland-0")
