"""Input device identity and the allow-list that decides which devices give evidence.

Identity (``Identity``): what the kernel says about an input device: name, its hardware
(``station.hardware.Hardware``: bus, vendor, product, serial = ``uniq``), phys, and whether it is
*virtual* (no hardware behind it). Read from sysfs for
an evdev node (``identity_from_sysfs``: ``<sys>/class/input/eventN/device/{name,phys,uniq,
id/bustype,id/vendor,id/product}``, the same values as the EVIOCGNAME/EVIOCGPHYS/EVIOCGID ioctls),
or given by the XInput 2 backend for an X slave device (``xi2_identity``).

Virtual (``is_virtual``): any of

- the device's sysfs path is under ``/sys/devices/virtual`` (uinput, and every input device a
  program creates),
- its bus is ``BUS_VIRTUAL`` (0x06),
- its phys is empty (every physical keyboard or pointer reports where it is plugged in:
  ``usb-0000:00:14.0-1/input0``, ``isa0060/serio0/input0``; uinput's is empty unless the program
  sets one, and then the sysfs path still gives it away),
- it hangs off an emulated USB host controller (``dummy_hcd``: a USB gadget on the exam PC itself),
- for X: it is an XTEST device (``... XTEST keyboard/pointer``: the server's injection device).

A USB gadget on *another* machine (a key injector, a "rubber ducky") is a real USB keyboard to
the kernel: only the allow-list, which pins the exam PC's own keyboard and mouse by vendor,
product (and phys: the port), keeps it out of the evidence.

Allow-list (``Policy``, config ``input.allow``): a list of match tables over ``name``, ``bus``,
``vendor``, ``product``, ``phys`` (each given key must equal the device's, case-insensitively)
and ``virtual`` (bool). Empty (an unconfigured station): every physical device gives evidence,
virtual ones never. Non-empty: exactly the devices matching an entry give evidence, virtual or
not (tests put the XTEST devices there to drive input with xdotool: ``tests/support.py``
``XTEST_ALLOW``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from station.events import DeviceEvent
from station.hardware import Hardware, device_event

# linux/input.h BUS_* -> name (what DeviceEvent.bus and the allow-list's "bus" use)
BUS_NAMES = {0x01: "pci", 0x02: "isapnp", 0x03: "usb", 0x04: "hil", 0x05: "bluetooth", 0x06: "virtual",
             0x10: "isa", 0x11: "i8042", 0x12: "xtkbd", 0x13: "rs232", 0x14: "gameport", 0x15: "parport",
             0x16: "amiga", 0x17: "adb", 0x18: "i2c", 0x19: "host", 0x1a: "gsc", 0x1b: "atari", 0x1c: "spi",
             0x1d: "rmi", 0x1e: "cec", 0x1f: "intel-ishtp", 0x20: "amd-sfh"}
MATCH_KEYS = ("name", "bus", "vendor", "product", "phys")
HARDWARE_KEYS = frozenset(f.name for f in dataclasses.fields(Hardware))


@dataclass(frozen=True)
class Identity:
    """An input device's identity. hardware: bus, vendor/product (4 lowercase hex digits), serial
    ("" = unknown). phys: where it is plugged in. sys_path: the resolved sysfs path ("" for X
    devices). keyboard/pointer: what it can send. xtest: the X server's XTEST device (as the server
    marks it: its "XTEST Device" property)."""

    name: str
    hardware: Hardware = Hardware()
    phys: str = ""
    virtual: bool = False
    sys_path: str = ""
    keyboard: bool = False
    pointer: bool = False
    xtest: bool = False

    @property
    def role(self) -> str:
        """Its ``DeviceEvent.role``: "xtest", "keyboard" (can send keys) or "pointer"."""
        return "xtest" if self.xtest else "keyboard" if self.keyboard else "pointer"

    def value(self, key: str) -> str:
        """A field by its allow-list / DeviceEvent name ("name", "bus", "vendor", "product",
        "serial", "phys")."""
        return getattr(self.hardware if key in HARDWARE_KEYS else self, key)

    def as_dict(self) -> dict[str, Any]:
        """Flat: name, bus, vendor, product, serial, phys, virtual, sys_path, keyboard, pointer, xtest."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "hardware"}
        return {"name": d.pop("name"), **dataclasses.asdict(self.hardware), **d}

    def device_event(self, t_ns: int, device: str, state: str, evidence: bool, detail: str) -> DeviceEvent:
        """This device's ``DeviceEvent`` (kind "input"; ``device``: the node or "xi2:ID")."""
        return device_event(t_ns, "input", device, state, name=self.name, hardware=self.hardware,
                            role=self.role, phys=self.phys, virtual=self.virtual, evidence=evidence, detail=detail)

    def allow_entry(self) -> str:
        """A ready-to-paste ``input.allow`` entry (TOML inline table) matching this device."""
        hw = self.hardware
        if hw.vendor or hw.product:
            parts = [f'vendor = "{hw.vendor}"', f'product = "{hw.product}"']
        else:
            parts = [f'name = {_toml_str(self.name)}']
        if self.phys:
            parts.append(f'phys = {_toml_str(self.phys)}')
        return "{ " + ", ".join(parts) + " }"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _bitmap(text: str) -> int:
    """A sysfs capability bitmap ("120013" or "10000 0 0 e": hex longs, most significant first)."""
    value = 0
    words = text.split()
    for w in words:
        try:
            value = (value << 64) | int(w, 16)
        except ValueError:
            return 0
    return value


def is_virtual(sys_path: str, bus: str, phys: str) -> bool:
    """See the module docstring."""
    p = sys_path.replace("\\", "/")
    return ("/devices/virtual/" in p + "/" or bus == "virtual" or not phys or "dummy_hcd" in p)


def identity_from_sysfs(node: str, sys_root: str | Path = "/sys") -> Identity | None:
    """Identity of ``node`` ("event3" or "/dev/input/event3") from ``<sys_root>/class/input``;
    None when sysfs has no such device (gone, or not an input device). Never raises."""
    base = os.path.basename(node)
    cls = Path(sys_root) / "class" / "input" / base
    try:
        real = Path(os.path.realpath(cls))
    except OSError:
        return None
    dev = real.parent     # .../inputN (name, phys, uniq, id/, capabilities/); eventN/device links to it
    if not (dev / "name").exists():
        return None
    try:
        rel = "/" + str(real.relative_to(Path(os.path.realpath(sys_root))))
    except ValueError:
        rel = str(real)
    try:
        bus_n = int(_read(dev / "id" / "bustype") or "0", 16)
    except ValueError:
        bus_n = 0
    bus = BUS_NAMES.get(bus_n, f"0x{bus_n:02x}" if bus_n else "")
    phys = _read(dev / "phys")
    caps = dev / "capabilities"
    ev, key, rel_bits, abs_bits = (_bitmap(_read(caps / n)) for n in ("ev", "key", "rel", "abs"))
    keyboard = bool(ev & (1 << 1)) and bool(key & (1 << 30))           # EV_KEY with KEY_A
    pointer = (bool(ev & (1 << 2)) and (rel_bits & 3) == 3) or (       # EV_REL REL_X+REL_Y
        bool(ev & (1 << 3)) and (abs_bits & 3) == 3 and bool(key & ((1 << 0x110) | (1 << 0x14a))))
    hardware = Hardware(bus=bus, vendor=_read(dev / "id" / "vendor").lower(),
                        product=_read(dev / "id" / "product").lower(), serial=_read(dev / "uniq"))
    return Identity(name=_read(dev / "name"), hardware=hardware, phys=phys,
                    virtual=is_virtual(rel, bus, phys), sys_path=rel, keyboard=keyboard, pointer=pointer)


def xi2_identity(name: str, xtest: bool) -> Identity:
    """Identity of an X slave device known only by its name and whether the server marks it as
    its XTEST device: XTEST devices are virtual; others (an Xorg driver's device, named by the
    kernel: "Logitech USB Keyboard"; Xvfb's own "Xvfb keyboard") are taken as physical, with
    nothing else known."""
    return Identity(name=name, hardware=Hardware(bus="virtual" if xtest else ""), virtual=xtest,
                    phys="" if xtest else "x11", keyboard="keyboard" in name.lower(),
                    pointer="keyboard" not in name.lower(), xtest=xtest)


class Policy:
    """The evidence decision: ``Policy(cfg.input.allow)``; ``decide(identity) -> (evidence, detail)``."""

    def __init__(self, allow: Iterable[dict[str, Any]] = ()):
        self.allow = [dict(e) for e in allow]

    @classmethod
    def from_config(cls, cfg: Any) -> "Policy":
        section = getattr(cfg, "input", None)
        return cls(getattr(section, "allow", []) if section is not None else [])

    def matches(self, entry: dict[str, Any], ident: Identity) -> bool:
        for k in MATCH_KEYS:
            want = entry.get(k) or ""
            if want and want.lower() != (ident.value(k) or "").lower():
                return False
        v = entry.get("virtual")
        return v is None or bool(v) == ident.virtual

    def decide(self, ident: Identity) -> tuple[bool, str]:
        if not self.allow:
            if ident.virtual:
                return False, "virtual device (uinput, XTEST or no hardware path): never evidence unless on input.allow"
            return True, "physical device (input.allow is empty: every physical device gives evidence)"
        for i, entry in enumerate(self.allow, 1):
            if self.matches(entry, ident):
                return True, f"on the allow-list (input.allow entry {i})"
        return False, "not on the allow-list (input.allow)"


def list_nodes(dev_dir: str | Path = "/dev/input") -> list[str]:
    """The evdev nodes (``eventN``) in ``dev_dir``, sorted by number; [] when it does not exist."""
    try:
        names = [n for n in os.listdir(dev_dir) if n.startswith("event") and n[5:].isdigit()]
    except OSError:
        return []
    return [str(Path(dev_dir) / n) for n in sorted(names, key=lambda n: int(n[5:]))]


def readable_nodes(dev_dir: str | Path = "/dev/input") -> tuple[list[str], list[str]]:
    """(nodes this process may read, nodes it may not)."""
    ok, denied = [], []
    for n in list_nodes(dev_dir):
        (ok if os.access(n, os.R_OK) else denied).append(n)
    return ok, denied
