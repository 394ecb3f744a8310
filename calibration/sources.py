"""The identity of the sources calibration measured, for the headset profile.

When ``audio.agent_device`` / ``audio.customer_device`` are sound-server source names (or "" while
a sound server answers: its default source), the same rule the capture uses
(``station.capture.audio.plan_streams``), calibration stores each source's identity (name, bus,
vendor, product, serial, monitor) as ``[profile.agent_source]`` / ``[profile.customer_source]``;
the capture then gives no evidence from any other source. PortAudio devices, or no sound server:
no identity (None), and the capture falls back to its rule for profiles without one.

Never raises: an unreachable sound server or a setting that names no source gives None.
"""

from __future__ import annotations

from station.headset import SourceIdentity


def calibrated_sources(cfg) -> tuple[SourceIdentity | None, SourceIdentity | None]:
    """(agent source identity, customer source identity), None where not a sound-server source."""
    from station.capture.audio import AudioDeviceError, plan_streams, sound_server_sources
    from station.capture.audio_identity import identity_of
    from station.events import Channel
    server = sound_server_sources()
    if server is None:
        return None, None
    try:
        plans = plan_streams(cfg, server)
    except AudioDeviceError:
        return None, None
    out: dict[int, SourceIdentity] = {}
    for p in plans:
        if p.backend == "pulse":
            for ch, _ in p.picks:
                out[int(ch)] = identity_of(p.source)
    return out.get(int(Channel.AGENT)), out.get(int(Channel.CUSTOMER))
