"""Hot-plug of evdev devices: udev's events over netlink, or a rescan where there are none.

``UdevMonitor`` listens on udev's netlink group through pyudev (libudev): the events udev sends
*after* it has processed a device, so an added ``/dev/input/eventN`` already has its group
(``input``) and mode, and the capture account can open it. It is filtered to the ``input``
subsystem in the kernel (libudev's socket filter), so the capture thread wakes only when an input
device comes or goes. Each event becomes a ``Uevent`` (``from_properties``: the properties udev
sends, as ``udevadm monitor --udev --property`` prints them), and ``DeviceSet.on_uevent``
(``_evdev``) acts on it: "add" of an event node opens it, "remove" closes it, anything else
(change, bind, the ``inputN`` parent, ``mouseN``/``jsN`` nodes) is ignored. Tests feed the same
code with recorded events (``tests/evdev_fixtures.py``, ``tests/udev_records/``): through an
object with the same ``fileno`` and ``receive``, and, framed as udevd multicasts them, through
this very monitor in a private network namespace.

Where udev does not run (no ``/run/udev/control``: a container, a minimal system) or pyudev /
libudev cannot be loaded, there is no event to wait for: ``open_monitor`` says why, and the
backend lists ``/dev/input`` every ``SCAN_S`` (0.5 s) instead. ``station doctor`` and the source's
status name the one in use (``how``).

Failure modes: ``open_monitor`` never raises (None and the reason); ``UdevMonitor.receive``
raises ``OSError`` when the socket fails (e.g. ENOBUFS: the kernel dropped events because the
thread fell behind): the caller then rescans once, so nothing plugged meanwhile is missed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

UDEV_CONTROL = "/run/udev/control"   # udevd's control socket: present while udev runs
SCAN_S = 0.5                         # the rescan period (s) where there are no udev events
RESCAN_HOW = f"rescan of the device directory every {SCAN_S:g} s"


@dataclass(frozen=True)
class Uevent:
    """One udev event. action: "add", "remove", "change", "bind", ... devname: the device node
    (DEVNAME, "/dev/input/event5"; "" for an event without one, such as the ``inputN`` parent).
    subsystem: SUBSYSTEM ("input")."""

    action: str
    devname: str
    subsystem: str

    def event_node(self) -> str:
        """The evdev node's file name ("event5") when this is about one, else ""."""
        base = os.path.basename(self.devname)
        if self.subsystem == "input" and base.startswith("event") and base[5:].isdigit():
            return base
        return ""


def from_properties(props: Mapping[str, str]) -> Uevent:
    """A ``Uevent`` from udev's properties (ACTION, DEVNAME, SUBSYSTEM; missing ones are "")."""
    return Uevent(props.get("ACTION", ""), props.get("DEVNAME", ""), props.get("SUBSYSTEM", ""))


class UdevMonitor:
    """udev's netlink events of the ``input`` subsystem (pyudev). ``fileno()`` for select;
    ``receive()`` returns the events waiting (never blocks)."""

    how = "udev events over netlink (pyudev)"

    def __init__(self) -> None:
        import pyudev
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="udev")
        self._monitor.filter_by("input")
        self._monitor.start()

    def fileno(self) -> int:
        return self._monitor.fileno()

    def receive(self) -> list[Uevent]:
        out = []
        while True:
            dev = self._monitor.poll(timeout=0)
            if dev is None:
                return out
            props = dict(dev.properties)
            props.setdefault("ACTION", dev.action or "")
            props.setdefault("DEVNAME", dev.device_node or "")
            props.setdefault("SUBSYSTEM", dev.subsystem or "")
            out.append(from_properties(props))

    def close(self) -> None:
        """Drop the monitor: libudev closes its socket with the last reference."""
        self._monitor = None


def open_monitor(control: str = UDEV_CONTROL) -> tuple[UdevMonitor | None, str]:
    """(udev's monitor, "") or (None, why not: then rescan). Never raises."""
    if not os.path.exists(control):
        return None, f"udev is not running here (no {control})"
    try:
        return UdevMonitor(), ""
    except ImportError as e:
        return None, f"pyudev cannot be loaded ({e})"
    except Exception as e:   # libudev missing (ImportError/OSError), netlink refused (OSError)
        return None, f"udev's netlink cannot be opened ({type(e).__name__}: {e})"


def describe(control: str = UDEV_CONTROL) -> tuple[bool, str]:
    """(udev's events can be used, how the evdev backend follows hot-plug here) for ``station
    doctor``; opens and drops a monitor to find out. Never raises."""
    monitor, why = open_monitor(control)
    if monitor is None:
        return False, f"{RESCAN_HOW}: {why}"
    monitor.close()
    return True, UdevMonitor.how
