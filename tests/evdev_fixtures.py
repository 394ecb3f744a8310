"""Kernel input streams and sysfs trees for the evdev backend's tests (this machine has no
/dev/input and no uinput).

Where the streams come from: generated from the kernel's documented event semantics
(``Documentation/input/event-codes.rst``, ``input.rst``), the way a USB HID keyboard and mouse
report through ``hid-input`` / ``usbhid``:

- a key press: ``EV_MSC MSC_SCAN <HID usage 0x7000xx>``, ``EV_KEY <code> 1``, ``EV_SYN SYN_REPORT 0``;
  a release: the same with value 0; the kernel's software auto-repeat: ``EV_KEY <code> 2``,
  ``SYN_REPORT`` (no scan code), first after the repeat delay (250 ms) then every period (33 ms);
- mouse motion: ``EV_REL REL_X dx``, ``EV_REL REL_Y dy`` (either left out when 0), ``SYN_REPORT``;
- a wheel notch on a high-resolution mouse: ``REL_WHEEL 1`` (+1 = away from the user) and
  ``REL_WHEEL_HI_RES 120`` in the same frame; a button: ``MSC_SCAN 0x9000n``, ``BTN_LEFT 1``,
  ``SYN_REPORT``.

Each record is ``(t_ns, type, code, value)``; ``_evdev.encode`` turns them into the kernel's
``struct input_event`` bytes (timeval + type + code + value, 24 bytes on 64-bit).

sysfs trees (``make_sysfs``) follow the layout of real machines: ``class/input/eventN`` is a
symlink into ``devices/.../inputM/eventN``; ``inputM`` holds ``name``, ``phys``, ``uniq``,
``id/{bustype,vendor,product,version}`` and ``capabilities/{ev,key,rel,abs}`` (hex longs, most
significant first), as ``udevadm info -a`` shows them.

udev events (``udev_records``, ``RecordedUdev``): transcripts in ``tests/udev_records/`` in the
layout ``udevadm monitor --udev --property`` prints (where they come from: each file's header),
fed to the backend's hot-plug code in place of udev's netlink socket.
"""

from __future__ import annotations

import os
from pathlib import Path

from evdev import ecodes as E

MS = 1_000_000

# HID usages of keyboard keys (usage page 7) for MSC_SCAN
_HID = {E.KEY_A: 0x04, E.KEY_B: 0x05, E.KEY_H: 0x0B, E.KEY_E: 0x08, E.KEY_L: 0x0F, E.KEY_O: 0x12,
        E.KEY_ENTER: 0x28, E.KEY_BACKSPACE: 0x2A, E.KEY_TAB: 0x2B, E.KEY_SPACE: 0x2C, E.KEY_LEFTSHIFT: 0xE1,
        E.KEY_DELETE: 0x4C, E.KEY_LEFT: 0x50, E.KEY_F1: 0x3A}


def key(t: int, code: int, value: int) -> list[tuple[int, int, int, int]]:
    """A USB keyboard's report of one key transition (value 1 press, 0 release, 2 repeat)."""
    out = []
    if value != 2:
        out.append((t, E.EV_MSC, E.MSC_SCAN, 0x70000 | _HID.get(code, 0)))
    out += [(t, E.EV_KEY, code, value), (t, E.EV_SYN, E.SYN_REPORT, 0)]
    return out


def tap(t: int, code: int, hold_ns: int = 80 * MS) -> list:
    return key(t, code, 1) + key(t + hold_ns, code, 0)


def held(t: int, code: int, hold_ns: int, delay_ns: int = 250 * MS, period_ns: int = 33 * MS) -> list:
    """A key held down: press, the kernel's auto-repeats, release."""
    out = key(t, code, 1)
    r = t + delay_ns
    while r < t + hold_ns:
        out += key(r, code, 2)
        r += period_ns
    return out + key(t + hold_ns, code, 0)


def move(t: int, dx: int, dy: int) -> list:
    out = []
    if dx:
        out.append((t, E.EV_REL, E.REL_X, dx))
    if dy:
        out.append((t, E.EV_REL, E.REL_Y, dy))
    return out + [(t, E.EV_SYN, E.SYN_REPORT, 0)]


def wheel(t: int, notches: int) -> list:
    return [(t, E.EV_REL, E.REL_WHEEL, notches), (t, E.EV_REL, E.REL_WHEEL_HI_RES, 120 * notches),
            (t, E.EV_SYN, E.SYN_REPORT, 0)]


def button(t: int, code: int, value: int) -> list:
    return [(t, E.EV_MSC, E.MSC_SCAN, 0x90001 + (code - E.BTN_LEFT)), (t, E.EV_KEY, code, value),
            (t, E.EV_SYN, E.SYN_REPORT, 0)]


# -- sysfs ----------------------------------------------------------------------------------

def _bits(*bits: int) -> str:
    """A kernel capability bitmap: hex unsigned longs, most significant first, no leading zero words."""
    v = 0
    for b in bits:
        v |= 1 << b
    words = []
    while v:
        words.append(v & (2 ** 64 - 1))
        v >>= 64
    return " ".join(f"{w:x}" for w in reversed(words)) or "0"


KEYBOARD_CAPS = {"ev": _bits(E.EV_SYN, E.EV_KEY, E.EV_MSC, E.EV_LED, E.EV_REP),
                 "key": _bits(*range(1, 128)), "rel": "0", "abs": "0"}
MOUSE_CAPS = {"ev": _bits(E.EV_SYN, E.EV_KEY, E.EV_REL, E.EV_MSC),
              "key": _bits(E.BTN_LEFT, E.BTN_RIGHT, E.BTN_MIDDLE, E.BTN_SIDE, E.BTN_EXTRA),
              "rel": _bits(E.REL_X, E.REL_Y, E.REL_HWHEEL, E.REL_WHEEL, E.REL_WHEEL_HI_RES, E.REL_HWHEEL_HI_RES),
              "abs": "0"}
TOUCHPAD_CAPS = {"ev": _bits(E.EV_SYN, E.EV_KEY, E.EV_ABS),
                 "key": _bits(E.BTN_LEFT, E.BTN_TOOL_FINGER, E.BTN_TOUCH, E.BTN_TOOL_DOUBLETAP),
                 "rel": "0", "abs": _bits(E.ABS_X, E.ABS_Y, E.ABS_PRESSURE, E.ABS_MT_POSITION_X, E.ABS_MT_POSITION_Y)}
BUTTON_CAPS = {"ev": _bits(E.EV_SYN, E.EV_KEY), "key": _bits(E.KEY_POWER), "rel": "0", "abs": "0"}

# (sysfs path of inputM under /sys, name, phys, uniq, bustype, vendor, product, caps)
DEVICES = {
    "usb_keyboard": ("devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C31C.0001/input/input5",
                     "Logitech USB Keyboard", "usb-0000:00:14.0-2/input0", "", "0003", "046d", "c31c", KEYBOARD_CAPS),
    "usb_mouse": ("devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/0003:046D:C077.0002/input/input6",
                  "Logitech USB Optical Mouse", "usb-0000:00:14.0-3/input0", "", "0003", "046d", "c077", MOUSE_CAPS),
    "i8042_keyboard": ("devices/platform/i8042/serio0/input/input3", "AT Translated Set 2 keyboard",
                       "isa0060/serio0/input0", "", "0011", "0001", "0001", KEYBOARD_CAPS),
    "ps2_touchpad": ("devices/platform/i8042/serio1/input/input7", "SynPS/2 Synaptics TouchPad",
                     "isa0060/serio1/input0", "", "0011", "0002", "0007", TOUCHPAD_CAPS),
    # python-evdev's UInput() defaults: bus USB, vendor/product 0001, no phys; under /sys/devices/virtual
    "uinput": ("devices/virtual/input/input20", "py-evdev-uinput", "", "", "0003", "0001", "0001", KEYBOARD_CAPS),
    # a key injector plugged in mid-exam: to the kernel, a USB keyboard (here claiming to be Apple's)
    "usb_injector": ("devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/0003:05AC:0220.0004/input/input22",
                     "Apple Keyboard", "usb-0000:00:14.0-4/input0", "", "0003", "05ac", "0220", KEYBOARD_CAPS),
    # a USB gadget of this very PC (g_hid on dummy_hcd): an emulated host controller
    "dummy_gadget": ("devices/platform/dummy_hcd.0/usb3/3-1/3-1:1.0/0003:1D6B:0104.0003/input/input21",
                     "HID Gadget", "usb-dummy_hcd.0-1/input0", "", "0003", "1d6b", "0104", KEYBOARD_CAPS),
    "power_button": ("devices/LNXSYSTM:00/LNXPWRBN:00/input/input2", "Power Button", "LNXPWRBN/button/input0",
                     "", "0019", "0000", "0001", BUTTON_CAPS),
}


def add_device(sys_root: Path, event: str, kind: str) -> Path:
    """Create ``kind``'s inputM directory with ``event`` (e.g. "event3") under ``sys_root`` and
    the ``class/input/<event>`` symlink to it; returns the event directory."""
    rel, name, phys, uniq, bus, vendor, product, caps = DEVICES[kind]
    inp = sys_root / rel
    (inp / "id").mkdir(parents=True, exist_ok=True)
    (inp / "capabilities").mkdir(exist_ok=True)
    for f, v in (("name", name), ("phys", phys), ("uniq", uniq)):
        (inp / f).write_text(v + "\n")
    for f, v in (("bustype", bus), ("vendor", vendor), ("product", product), ("version", "0110")):
        (inp / "id" / f).write_text(v + "\n")
    for f, v in caps.items():
        (inp / "capabilities" / f).write_text(v + "\n")
    ev = inp / event
    ev.mkdir(exist_ok=True)
    (ev / "dev").write_text("13:67\n")
    if not (ev / "device").exists():
        os.symlink(os.path.relpath(inp, ev), ev / "device")
    cls = sys_root / "class" / "input"
    cls.mkdir(parents=True, exist_ok=True)
    link = cls / event
    if link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(ev, cls), link)
    return ev


def remove_device(sys_root: Path, event: str) -> None:
    (sys_root / "class" / "input" / event).unlink()


# -- recorded udev events --------------------------------------------------------------------------

UDEV_RECORDS = Path(__file__).parent / "udev_records"


def udev_records(path: str | Path) -> list[list[dict[str, str]]]:
    """The events of a ``udevadm monitor --udev --property`` transcript (``tests/udev_records/``),
    as property dicts, in groups separated by a ``--`` line (e.g. [plug events, unplug events]).
    Comment lines (#), the monitor's banner and the "UDEV  [...]" headers are skipped."""
    groups: list[list[dict[str, str]]] = [[]]
    current: dict[str, str] | None = None
    for line in Path(path).read_text().splitlines():
        if line.strip() == "--":
            groups.append([])
            current = None
        elif line.startswith("UDEV  ["):   # "UDEV  [uptime] action devpath (subsystem)"
            current = {}
            groups[-1].append(current)
        elif current is not None and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            current[k] = v
        elif not line.strip():
            current = None
    return groups


class RecordedUdev:
    """Recorded udev events fed to the evdev backend in place of ``_hotplug.UdevMonitor``: the
    same ``fileno()`` (a pipe's read end, readable while events wait), ``receive()`` (the
    waiting events as ``_hotplug.from_properties`` makes them from udev's properties) and ``how``.
    ``send(events)`` hands a list of property dicts over, as udevd would multicast them."""

    how = "recorded udev events (tests/udev_records)"

    def __init__(self) -> None:
        import threading
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._lock = threading.Lock()
        self._waiting: list[dict[str, str]] = []
        self.received = 0

    def send(self, events: list[dict[str, str]]) -> None:
        with self._lock:
            self._waiting.extend(events)
        os.write(self._w, b"!")

    def fileno(self) -> int:
        return self._r

    def receive(self) -> list:
        from station.capture.input._hotplug import from_properties
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            events, self._waiting = self._waiting, []
        self.received += len(events)
        return [from_properties(p) for p in events]

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def _murmur2(data: bytes, seed: int = 0) -> int:
    """MurmurHash2 (32 bit), the hash libudev's socket filter compares (systemd's
    ``string_hash32``)."""
    m = 0x5BD1E995
    h = (seed ^ len(data)) & 0xFFFFFFFF
    n = len(data) - len(data) % 4
    for i in range(0, n, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = data[n:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def udev_frame(props: dict[str, str]) -> bytes:
    """One event as udevd multicasts it on netlink (systemd's ``monitor_netlink_header``,
    sd-device/device-monitor.c): "libudev\\0", magic 0xfeedcafe and the subsystem / devtype
    hashes in network order, header size, properties offset and length in host order, no tag
    bloom; then the properties as NUL-terminated KEY=VALUE strings."""
    import struct
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in props.items())
    devtype = props.get("DEVTYPE", "")
    return (b"libudev\0" + struct.pack(">I", 0xFEEDCAFE) + struct.pack("=III", 40, 40, len(body))
            + struct.pack(">III", _murmur2(props.get("SUBSYSTEM", "").encode()),
                          _murmur2(devtype.encode()) if devtype else 0, 0) + struct.pack(">I", 0) + body)


def udev_netlink_child(root: str) -> None:
    """Run in a private network namespace (``unshare --net``: netlink's uevent groups are per
    namespace, so nothing outside sees these events): the evdev backend on an empty fixture
    tree at ``root`` with udev's real monitor (``_hotplug.UdevMonitor``: libudev through
    pyudev); once its first scan found nothing, the keyboard of the recorded transcript is made
    (sysfs entry, FIFO node) and its plug multicast on udev's group as udevd would
    (``udev_frame``), then it is taken away and the unplug sent. Prints one JSON line per
    DeviceEvent, then the status."""
    import dataclasses
    import json
    import socket
    import time

    from station.capture.focus import FocusState
    from station.capture.input._evdev import EvdevInput
    from station.capture.input._hotplug import UdevMonitor
    from station.config import load
    from station.eventqueue import EventQueue
    from station.events import DeviceEvent

    plug, unplug = udev_records(UDEV_RECORDS / "usb_keyboard.txt")
    for d in ("dev-input", "sys"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    q = EventQueue()
    src = EvdevInput(load(system=False), FocusState(), dev_dir=f"{root}/dev-input", sys_root=f"{root}/sys",
                     twin_chars=False, hotplug=UdevMonitor())
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)   # NETLINK_KOBJECT_UEVENT
    sender.bind((0, 0))
    got: list = []

    def wait(pred, what: str) -> None:
        deadline = time.monotonic() + 5
        while not pred():
            got.extend(e for e in q.drain_events() if isinstance(e, DeviceEvent))
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {got}")
            time.sleep(0.005)

    src.start(q)
    try:
        wait(lambda: src.status()["state"] == "lost", "the first scan (no device yet)")
        add_device(Path(root) / "sys", "event22", "usb_injector")
        os.mkfifo(f"{root}/dev-input/event22")
        for props in plug:
            sender.sendto(udev_frame(props), (0, 2))                   # udev's multicast group
        wait(lambda: any(e.state == "present" for e in got), "the plug")
        os.unlink(f"{root}/dev-input/event22")
        remove_device(Path(root) / "sys", "event22")
        for props in unplug:
            sender.sendto(udev_frame(props), (0, 2))
        wait(lambda: any(e.state == "removed" for e in got), "the unplug")
        status = src.status()
    finally:
        src.stop()
    for e in got:
        print(json.dumps(dataclasses.asdict(e)))
    print(json.dumps({"status": {k: status.get(k) for k in ("hotplug", "udev_events")}}))


if __name__ == "__main__":   # python -m tests.evdev_fixtures udev-netlink ROOT (see udev_netlink_child)
    import sys
    if sys.argv[1:2] == ["udev-netlink"] and len(sys.argv) == 3:
        udev_netlink_child(sys.argv[2])
    else:
        raise SystemExit("usage: python -m tests.evdev_fixtures udev-netlink ROOT")
