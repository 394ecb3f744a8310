"""Whether audio from a sound-server source counts as evidence, and its ``DeviceEvent``.

Rule (``evidence``), per channel role ("agent" = microphone, "customer" = customer signal):

- the headset profile has the role's calibrated identity (``HeadsetProfile.agent_source`` /
  ``customer_source``): the source must match it: every non-empty field of bus, vendor, product,
  serial equal, and monitor-ness equal (a microphone is not the monitor of the same headset's sink);
  when the calibrated source had no hardware identity at all (vendor and product empty: a virtual
  source calibrated on purpose, e.g. tests on null sinks) the name must be equal instead. A
  source that does not match gives no evidence: the capture records nothing from it and the audio
  is lost ("<why>"), see ``station.capture.audio``;
- no identity in the profile (no profile, a profile of a PortAudio device, an older profile):
  every source gives evidence, except a *virtual* one (``soundserver.SourceInfo.virtual``) while
  ``[station] mode = "exam"``: no evidence, lost, alerted. In practice mode a virtual source is
  journaled (``virtual`` = true) and recorded.

``DeviceEvent`` for audio (``SourceInfo.device_event``): kind "audio", device = the source name,
name = its description, the hardware from the server, phys = its sysfs path, virtual, evidence,
and detail = "<role>: <what happened>" (role "agent", "customer" or "agent+customer" when both
channels come from one source).
"""

from __future__ import annotations

from station.capture.soundserver import SourceInfo
from station.headset import SourceIdentity


def identity_of(info: SourceInfo) -> SourceIdentity:
    """The identity calibration stores for a source."""
    return SourceIdentity(name=info.name, hardware=info.hardware, monitor=info.is_monitor)


def mismatch(info: SourceInfo, expected: SourceIdentity) -> str:
    """Why ``info`` is not the calibrated source ``expected`` ("" = it is)."""
    if info.is_monitor != expected.monitor:
        what = "a monitor" if info.is_monitor else "a capture device"
        return f"{info.name!r} is {what}, the calibrated source was not"
    if not expected.hardware.vendor and not expected.hardware.product:
        return "" if info.name == expected.name else f"{info.name!r} is not the calibrated {expected.name!r}"
    field = info.hardware.differing_field(expected.hardware)
    if field:
        got, want = getattr(info.hardware, field), getattr(expected.hardware, field)
        return f"{info.name!r} has {field} {got or '(none)'!r}, the calibrated headset {want!r}"
    return ""


def evidence(info: SourceInfo, expected: SourceIdentity | None, exam: bool) -> tuple[bool, str]:
    """(gives evidence, operator-readable reason) for audio from ``info``; see the module doc."""
    if expected is not None:
        why = mismatch(info, expected)
        return (False, f"not the calibrated headset: {why}") if why else (True, "the calibrated headset")
    if info.virtual:
        if exam:
            return False, f"virtual source ({info.why_virtual}) in exam mode"
        return True, f"virtual source ({info.why_virtual}); practice mode"
    return True, "no calibrated identity in the headset profile"
