"""The sound server (PulseAudio, or PipeWire's pulse server) by its own names, through pulsectl.

What it tells: the sources (microphones, and the monitor of every sink), the sinks, the server's
default source and sink, and for each source the hardware behind it (``SourceInfo``: a
``station.hardware.Hardware`` of bus, vendor and product id, serial; its sysfs path) and whether it is *virtual*. It never records audio (that is
``station.capture.pulse_record``).

Which server: the one libpulse reaches by its own rules: ``$PULSE_SERVER`` (the capture unit sets
it to the session grant's socket ``unix:/run/station-audio/native``, see
``systemd/station-session-grant``), else the client.conf / the user's runtime socket. The native
recorder uses the very same rules, so both always talk to the same server.

Virtual: a source with no hardware behind it: no ``device.bus`` and no ``sysfs.path`` (e.g. a null
sink's monitor), or one owned by a module that makes sources out of software
(``VIRTUAL_MODULES``: null sink, pipe, remap, virtual source, loopback, tunnel ...), or one whose
claimed ``sysfs.path`` does not exist on this machine. A monitor takes its identity from its
sink when it has none of its own. The sound server belongs to the candidate's session: these are
the server's claims, checked where the kernel can check them (sysfs), no more.

Failure modes: ``SoundServerError`` (one line) when no server answers or pulsectl/libpulse is
missing; every function here raises only that.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from station.events import DeviceEvent
from station.hardware import Hardware, device_event

CLIENT_NAME = "station-capture"
VIRTUAL_MODULES = frozenset({
    "module-null-sink", "module-null-source", "module-pipe-source", "module-pipe-sink",
    "module-remap-source", "module-remap-sink", "module-virtual-source", "module-virtual-sink",
    "module-loopback", "module-combine-sink", "module-tunnel-source", "module-tunnel-sink",
    "module-tunnel-source-new", "module-tunnel-sink-new", "module-rtp-recv", "module-echo-cancel",
    "module-ladspa-sink", "module-equalizer-sink", "module-virtual-surround-sink",
})
SYSFS_ROOT = "/sys"


class SoundServerError(Exception):
    """No sound server answers, or pulsectl / libpulse cannot be loaded."""


@dataclass(frozen=True)
class SourceInfo:
    """One sound-server source and the hardware behind it ("" = not reported).

    name: the server's source name (what ``audio.agent_device`` takes), e.g.
    ``alsa_input.usb-Jabra_...`` or ``<sink>.monitor``. description: its human name.
    monitor_of: the sink it monitors ("" = a capture device). hardware: bus, vendor, product, serial
    from ``device.bus``, ``device.vendor.id``, ``device.product.id``, ``device.serial``. sysfs_path:
    ``sysfs.path`` (below /sys). device_class: ``device.class`` ("sound", "monitor" ...).
    module: the name of the module that owns it. channels: its channel count. virtual / why_virtual: see the module doc."""

    index: int
    name: str
    description: str
    monitor_of: str = ""
    hardware: Hardware = Hardware()
    sysfs_path: str = ""
    device_class: str = ""
    module: str = ""
    channels: int = 0
    virtual: bool = False
    why_virtual: str = ""

    @property
    def is_monitor(self) -> bool:
        return bool(self.monitor_of) or self.device_class == "monitor"

    def as_dict(self) -> dict[str, Any]:
        """Flat (the hardware's fields beside the others), with is_monitor."""
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "hardware"}, **d["hardware"], "is_monitor": self.is_monitor}

    def device_event(self, t_ns: int, state: str, roles: str, evidence: bool, detail: str) -> DeviceEvent:
        """This source's ``DeviceEvent``: kind "audio", device = the source name, name = its
        description, phys = its sysfs path, role = the channels it carries (``roles``: "agent",
        "customer", both joined by "+", or "" for none)."""
        carried = roles.split("+")
        role = "+".join(r for r in ("agent", "customer") if r in carried)
        return device_event(t_ns, "audio", self.name, state, name=self.description, hardware=self.hardware,
                            role=role, phys=self.sysfs_path, virtual=self.virtual, evidence=evidence, detail=detail)


def _pulsectl():
    try:
        import pulsectl
    except (ImportError, OSError) as e:   # OSError: libpulse.so.0 missing
        raise SoundServerError(f"pulsectl cannot be loaded ({e}); install libpulse0") from None
    return pulsectl


def connect(client_name: str = CLIENT_NAME):
    """A new pulsectl.Pulse connection to the server (see the module doc for which; never
    autospawns one). The caller closes it; one connection per thread. Raises SoundServerError.
    A server that accepts the connection and then never answers (frozen) blocks the caller: the
    audio source is then stalled, and the recorder's stall rule makes it lost."""
    pulsectl = _pulsectl()
    try:
        # no timeout: pulsectl's connect(timeout=...) always waits the whole timeout
        return pulsectl.Pulse(client_name)
    except pulsectl.PulseError as e:
        where = os.environ.get("PULSE_SERVER") or "the session's default server"
        raise SoundServerError(f"no sound server answers at {where} ({e})") from None


def _virtual(props: dict, module: str, monitor_of: str) -> str:
    """Why a source is virtual ("" = it has hardware behind it)."""
    if module in VIRTUAL_MODULES:
        return f"made by {module}"
    if not props.get("device.bus") and not props.get("sysfs.path"):
        return "no hardware behind it (no device.bus, no sysfs.path)"
    path = props.get("sysfs.path", "")
    if path and os.path.isdir(SYSFS_ROOT) and not os.path.exists(SYSFS_ROOT + path):
        return f"claims {path}, which this machine does not have"
    return ""


def source_infos(pulse) -> list[SourceInfo]:
    """Every source of the server, with its identity. Raises SoundServerError."""
    pulsectl = _pulsectl()
    try:
        modules = {m.index: m.name for m in pulse.module_list()}
        sinks = {s.index: s for s in pulse.sink_list()}
        out = []
        for s in pulse.source_list():
            props = dict(s.proplist)
            sink = sinks.get(s.monitor_of_sink) if s.monitor_of_sink not in (None, 0xFFFFFFFF) else None
            monitor_of = sink.name if sink is not None else ""
            module = modules.get(s.owner_module, "")
            if sink is not None:
                sink_props = dict(sink.proplist)
                for k in ("device.bus", "device.vendor.id", "device.product.id", "device.serial", "sysfs.path"):
                    props.setdefault(k, sink_props.get(k, ""))
                module = module or modules.get(sink.owner_module, "")
            why = _virtual(props, module, monitor_of)
            out.append(SourceInfo(index=s.index, name=s.name, description=s.description or "",
                                  monitor_of=monitor_of,
                                  hardware=Hardware(bus=props.get("device.bus", ""),
                                                    vendor=props.get("device.vendor.id", ""),
                                                    product=props.get("device.product.id", ""),
                                                    serial=props.get("device.serial", "")),
                                  sysfs_path=props.get("sysfs.path", ""),
                                  device_class=props.get("device.class", ""), module=module,
                                  channels=int(getattr(s, "channel_count", 0) or 0),
                                  virtual=bool(why), why_virtual=why))
        return out
    except pulsectl.PulseError as e:
        raise SoundServerError(f"sound server query failed: {e}") from None


def defaults(pulse) -> tuple[str, str]:
    """(default source name, default sink name) of the server. Raises SoundServerError."""
    pulsectl = _pulsectl()
    try:
        info = pulse.server_info()
    except pulsectl.PulseError as e:
        raise SoundServerError(f"sound server query failed: {e}") from None
    return info.default_source_name or "", info.default_sink_name or ""


def inventory() -> dict[str, Any]:
    """What ``station devices`` lists: server name/version, default source and sink, sources
    (``SourceInfo.as_dict``, monitors included) and sinks (name, description, monitor source,
    bus, vendor, product, serial). Raises SoundServerError."""
    pulsectl = _pulsectl()
    with connect("station-devices") as pulse:
        try:
            info = pulse.server_info()
            sinks = [{"name": s.name, "description": s.description or "", "monitor": s.monitor_source_name or "",
                      "bus": s.proplist.get("device.bus", ""), "vendor": s.proplist.get("device.vendor.id", ""),
                      "product": s.proplist.get("device.product.id", ""),
                      "serial": s.proplist.get("device.serial", "")} for s in pulse.sink_list()]
        except pulsectl.PulseError as e:
            raise SoundServerError(f"sound server query failed: {e}") from None
        return {"server": f"{info.server_name} {info.server_version}",
                "default_source": info.default_source_name or "", "default_sink": info.default_sink_name or "",
                "sources": [s.as_dict() for s in source_infos(pulse)], "sinks": sinks}
