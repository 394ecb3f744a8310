"""The evidence rule for sound-server sources (station.capture.audio_identity), without a server."""

from station.capture.audio_identity import evidence, identity_of
from station.capture.soundserver import SourceInfo
from station.hardware import Hardware
from station.headset import SourceIdentity

JABRA = SourceInfo(3, "alsa_input.usb-Jabra_Evolve_20_A1B2-00.mono-fallback", "Jabra EVOLVE 20 Mono",
                   hardware=Hardware(bus="usb", vendor="0b0e", product="0300", serial="Jabra_Evolve_20_A1B2"),
                   sysfs_path="/devices/pci0000:00/usb1/1-1/sound/card1", device_class="sound",
                   module="module-alsa-card")
JABRA_MONITOR = SourceInfo(4, "alsa_output.usb-Jabra_Evolve_20_A1B2-00.analog-stereo.monitor", "Monitor of Jabra",
                           monitor_of="alsa_output.usb-Jabra_Evolve_20_A1B2-00.analog-stereo",
                           hardware=Hardware(bus="usb", vendor="0b0e", product="0300", serial="Jabra_Evolve_20_A1B2"),
                           device_class="monitor",
                           module="module-alsa-card")
OTHER = SourceInfo(5, "alsa_input.usb-Logitech_H390-00.mono-fallback", "Logitech H390",
                   hardware=Hardware(bus="usb", vendor="046d", product="0a44"), module="module-alsa-card")
PLAYER = SourceInfo(6, "player.monitor", "Monitor of player", monitor_of="player", device_class="monitor",
                    module="module-null-sink", virtual=True, why_virtual="made by module-null-sink")


def test_only_the_calibrated_headset_gives_evidence():
    mic = identity_of(JABRA)
    assert evidence(JABRA, mic, exam=True) == (True, "the calibrated headset")
    ok, why = evidence(OTHER, mic, exam=True)
    assert not ok and "vendor '046d'" in why
    ok, why = evidence(JABRA_MONITOR, mic, exam=True)      # the same headset's monitor is not its microphone
    assert not ok and "monitor" in why
    assert evidence(JABRA_MONITOR, identity_of(JABRA_MONITOR), exam=True)[0]
    ok, why = evidence(PLAYER, mic, exam=False)             # a profile identity holds in practice mode too
    assert not ok


def test_without_a_calibrated_identity_virtual_sources_give_no_evidence_in_exam_mode():
    assert evidence(OTHER, None, exam=True)[0]
    ok, why = evidence(PLAYER, None, exam=True)
    assert not ok and "virtual source" in why and "exam mode" in why
    ok, why = evidence(PLAYER, None, exam=False)
    assert ok and "practice mode" in why


def test_a_virtual_source_calibrated_on_purpose_matches_by_name():
    assert evidence(PLAYER, SourceIdentity(name="player.monitor", monitor=True), exam=True)[0]
    assert not evidence(PLAYER, SourceIdentity(name="agent.monitor", monitor=True), exam=True)[0]
