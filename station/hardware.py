"""The hardware behind a device, and the ``DeviceEvent`` that journals a device with it.

``Hardware`` is the one identity record the capture's sources share: an evdev or X input device
(``station.capture.input.devices.Identity``), a sound-server source
(``station.capture.soundserver.SourceInfo``) and the source a headset was calibrated on
(``station.headset.SourceIdentity``) each carry one. It is what the kernel or the sound server
*reports*: the candidate's session owns the sound server, and a USB gadget can claim any vendor
and product, so it is evidence only where the allow-list or the calibration pins it.

``device_event`` is the one way a device becomes a ``DeviceEvent`` (the journal's fields stay flat:
``bus``, ``vendor``, ``product``, ``serial`` beside ``name``, ``phys``, ``virtual``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from station.events import DEVICE_ROLES, DeviceEvent

DETAIL_MAX = 300   # characters of DeviceEvent.detail kept


@dataclass(frozen=True)
class Hardware:
    """What the kernel or the sound server says the hardware is ("" = not reported).

    bus: "usb", "bluetooth", "i8042", "virtual" ... (the kernel's BUS_* name, or the sound server's
    ``device.bus``). vendor / product: 4 lowercase hex digits (USB/PCI ids). serial: the device's own
    serial (the kernel's ``uniq``, the server's ``device.serial``)."""

    bus: str = ""
    vendor: str = ""
    product: str = ""
    serial: str = ""

    def differing_field(self, expected: "Hardware") -> str:
        """The first field ``expected`` gives that differs here ("" = none: empty fields of
        ``expected`` match anything)."""
        for f in dataclasses.fields(Hardware):
            want = getattr(expected, f.name)
            if want and want != getattr(self, f.name):
                return f.name
        return ""


FIELDS = tuple(f.name for f in dataclasses.fields(Hardware))


def device_event(t_ns: int, kind: str, device: str, state: str, *, name: str, hardware: Hardware,
                 role: str, phys: str = "", virtual: bool = False, evidence: bool = True,
                 detail: str = "") -> DeviceEvent:
    """The ``DeviceEvent`` of one device (see its docstring for the fields; ``t_ns`` station clock
    ns; ``role``: one of ``DEVICE_ROLES``, else ValueError). ``detail`` is cut to DETAIL_MAX
    characters."""
    if role not in DEVICE_ROLES:
        raise ValueError(f"unknown device role {role!r}")
    return DeviceEvent(t_ns, kind, device, state, name=name, bus=hardware.bus, vendor=hardware.vendor,
                       product=hardware.product, serial=hardware.serial, phys=phys, virtual=virtual,
                       evidence=evidence, detail=detail[:DETAIL_MAX], role=role)
