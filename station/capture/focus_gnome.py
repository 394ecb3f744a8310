"""Window focus on GNOME under Wayland: the station's GNOME Shell extension, over the session bus.

A Wayland client cannot see other applications' windows, so the station ships a GNOME Shell
extension (``station/capture/gnome-extension/station-focus@station.be``, installed and enabled by
``station install``). Inside gnome-shell it owns the name ``be.station.Focus`` on the session bus
and emits ``be.station.Focus1.FocusChanged(app_id, wm_class, wm_instance, title, pid, window_id)``
(D-Bus signature ``ssssut``) whenever the focused window or its title changes; ``GetFocus()``
returns the same tuple for the current window. Empty strings and zeros: no focused window.

``GnomeWatcher`` is the capture side, event-driven like the X11 backend: one D-Bus connection
(jeepney), match rules for ``FocusChanged`` from the name's owner and ``NameOwnerChanged`` of the
name, and a ``select()`` on the bus socket and the source's wake-up pipe. ``t_ns`` is stamped when
the bus socket becomes readable.

What the candidate could try, and what happens (each journaled as ``SourceHealth`` of source
"focus", alerted to the assessors within 2 s, a data gap in the report):

- disable the extension (``gnome-extensions disable``, the Extensions app) or restart the shell:
  the name vanishes -> "lost" with ``NOT_RUNNING``; "ok" again when it comes back;
- run a program that takes the name to feed invented focus: the owner's process is checked
  (``GetConnectionUnixProcessID`` -> ``/proc/PID/comm`` must be ``gnome-shell``); any other owner
  -> "lost" naming the process, and its signals are ignored. Signals from any other sender are
  ignored too (the bus daemon stamps the sender; it cannot be forged).

Failure modes: no session bus, or the bus going away, raise out of ``run`` (the focus source
reports "lost" and reconnects with backoff); a malformed reply or signal is counted and ignored.
"""

from __future__ import annotations

import collections
import select

from jeepney import DBusAddress, MatchRule, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from station.clock import monotonic_ns

BUS_NAME = "be.station.Focus"
OBJECT_PATH = "/be/station/Focus"
INTERFACE = "be.station.Focus1"
EXTENSION_UUID = "station-focus@station.be"
SHELL_COMM = "gnome-shell"
CALL_TIMEOUT_S = 2.0
NOT_RUNNING = (f"the station's GNOME Shell extension ({EXTENSION_UUID}) is not running (disabled, not "
               f"installed, or GNOME Shell restarting): focus is NOT observed; enable it with "
               f"`gnome-extensions enable {EXTENSION_UUID}` (installed by `station install`)")

_FOCUS = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=INTERFACE)


class Stopped(Exception):
    """The source's stop() woke the watcher."""


def owner_check(comm: str, pid: int) -> str:
    """"" when a name owner with process name ``comm`` may be trusted, else the reason."""
    if comm == SHELL_COMM:
        return ""
    return (f"{BUS_NAME} is owned by process {pid} ({comm or 'unknown'}), not gnome-shell: a program posing "
            f"as the station's GNOME Shell extension; its focus reports are ignored")


def probe(read_comm) -> tuple[bool, str]:
    """For ``station doctor``: is the extension on this session bus, owned by gnome-shell, and
    answering? (ok, detail); never raises."""
    try:
        conn = open_dbus_connection(bus="SESSION")
    except Exception as e:
        return False, f"D-Bus session bus unreachable ({type(e).__name__}: {e})"
    try:
        def call(msg):
            return unwrap_msg(conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT_S))
        try:
            owner = call(message_bus.GetNameOwner(BUS_NAME))[0]
        except DBusErrorResponse:
            return False, NOT_RUNNING
        pid = int(call(message_bus.GetConnectionUnixProcessID(owner))[0])
        why = owner_check(read_comm(pid), pid)
        if why:
            return False, why
        body = call(new_method_call(DBusAddress(OBJECT_PATH, bus_name=owner, interface=INTERFACE), "GetFocus"))
        return True, (f"GNOME Shell extension {EXTENSION_UUID} answers (gnome-shell pid {pid}); focused "
                      f"window: {body[1] or body[0] or 'none'}")
    except Exception as e:
        return False, f"the GNOME Shell extension does not answer ({type(e).__name__}: {e})"
    finally:
        conn.close()


class GnomeWatcher:
    """One session-bus connection's worth of focus watching for ``source`` (a FocusSource:
    ``_emit``, ``_lost``, ``_health``, ``_stop``, ``_wake_r``, ``connected``). Raises on
    connection loss; ``close()`` always."""

    def __init__(self, source, read_comm):
        self.src = source
        self.read_comm = read_comm
        self.conn = open_dbus_connection(bus="SESSION")
        self.signals: collections.deque = collections.deque()
        self._filter = self.conn.filter(MatchRule(type="signal"), queue=self.signals)
        self.owner = ""          # the unique bus name of the gnome-shell we trust ("" = none)
        self.ignored = 0         # signals from other senders, malformed ones
        self.last: tuple | None = None
        focus = MatchRule(type="signal", sender=BUS_NAME, interface=INTERFACE, member="FocusChanged",
                          path=OBJECT_PATH)
        owner = MatchRule(type="signal", sender="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                          member="NameOwnerChanged", path="/org/freedesktop/DBus")
        owner.add_arg_condition(0, BUS_NAME)
        for rule in (focus, owner):
            self._call(message_bus.AddMatch(rule))

    def close(self) -> None:
        try:
            self._filter.close()
            self.conn.close()
        except Exception:
            pass

    def _call(self, msg):
        return unwrap_msg(self.conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT_S))

    # -- the name's owner ---------------------------------------------------------------------
    def _adopt(self, t_ns: int) -> None:
        """Find, check and follow the owner of ``be.station.Focus``; report health."""
        try:
            owner = self._call(message_bus.GetNameOwner(BUS_NAME))[0]
        except DBusErrorResponse:
            owner = ""
        if not owner:
            self._drop(t_ns, NOT_RUNNING)
            return
        try:
            pid = int(self._call(message_bus.GetConnectionUnixProcessID(owner))[0])
        except DBusErrorResponse:      # the owner left meanwhile: its NameOwnerChanged follows
            self._drop(t_ns, NOT_RUNNING)
            return
        why = owner_check(self.read_comm(pid), pid)
        if why:
            self._drop(t_ns, why)
            return
        self.owner = owner
        try:
            body = self._call(new_method_call(DBusAddress(OBJECT_PATH, bus_name=owner, interface=INTERFACE),
                                              "GetFocus"))
        except DBusErrorResponse as e:
            self._drop(t_ns, f"the GNOME Shell extension does not answer GetFocus ({e.name})")
            return
        self.src._health.report("ok", f"GNOME Shell extension {EXTENSION_UUID} (gnome-shell pid {pid})", t_ns)
        self.last = None
        self._focus(t_ns, body)

    def _drop(self, t_ns: int, why: str) -> None:
        self.owner = ""
        self.last = None
        self.src._lost(why)

    # -- messages -----------------------------------------------------------------------------
    def _focus(self, t_ns: int, body) -> None:
        try:
            app_id, wm_class, instance, title, pid, wid = (str(body[0]), str(body[1]), str(body[2]),
                                                           str(body[3]), int(body[4]), int(body[5]))
        except (TypeError, ValueError, IndexError):
            self.ignored += 1
            return
        key = (wid, app_id, wm_class, instance, title, pid)
        if key == self.last:
            return
        self.last = key
        self.src._emit(t_ns, wid & 0x7FFF_FFFF_FFFF_FFFF, wm_class, title, pid, instance, app_id)

    def _handle(self, t_ns: int, msg) -> None:
        h = msg.header
        if h.message_type != MessageType.signal:
            return
        member = h.fields.get(HeaderFields.member)
        sender = h.fields.get(HeaderFields.sender, "")
        if member == "NameOwnerChanged" and sender == "org.freedesktop.DBus":
            if msg.body and msg.body[0] == BUS_NAME:
                if msg.body[2]:
                    self._adopt(t_ns)
                else:
                    self._drop(t_ns, NOT_RUNNING)
        elif member == "FocusChanged" and h.fields.get(HeaderFields.interface) == INTERFACE:
            if self.owner and sender == self.owner:
                self._focus(t_ns, msg.body)
            else:
                self.ignored += 1

    def run(self) -> None:
        """Watch until the connection fails (raises) or the source stops (``Stopped``)."""
        src = self.src
        self._adopt(monotonic_ns())
        src.connected.set()
        fd = self.conn.sock.fileno()
        t_ns = monotonic_ns()
        while True:
            # what is already read (a method call's reply may bring signals along) and what
            # the socket holds; handling a signal may call methods and read more
            while True:
                try:
                    self.conn.recv_messages(timeout=0)
                except TimeoutError:
                    if not self.signals:
                        break
                while self.signals:
                    self._handle(t_ns, self.signals.popleft())
            if src._stop.is_set():
                raise Stopped()
            if self.owner:          # following the extension (else lost: no bound)
                src.bound.drained(monotonic_ns())
                src.bound.waiting()
            r, _, _ = select.select([fd, src._wake_r], [], [])
            src.bound.woke()
            if src._wake_r in r:
                raise Stopped()
            t_ns = monotonic_ns()
