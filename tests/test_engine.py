"""STANDARD.md figures pinned on hand-built event sequences; answers worked out by hand."""

import pytest

from station.engine import Engine
from station.events import KeyClass, KeyEvent
from tests.engine_helpers import S, batches, cfg, focus, marker, mouse, run, speech, typing


def only_contact(eng, kind="phone"):
    got = [c for c in eng.contacts if c["kind"] == kind]
    assert len(got) == 1, eng.contacts
    return got[0]


def test_ten_second_call_agent_overlap_three_quarters():
    # 10 s call (assessor markers); agent speaks 1-5 s (4 s); customer 5.5-9 s (3.5 s);
    # a typing burst from the press at 2.0 s to the last release at 5.0 s overlaps 3 s of agent speech.
    ev = [marker(0, "start"), marker(10, "end")]
    ev += speech(0, [(1, 5)], 0, 12) + speech(1, [(5.5, 9)], 0, 12)
    ev += typing(2.0, 4.9, last_release_s=5.0)
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["source"] == "assessor"
    assert c["duration_ms"] == 10_000
    assert c["agent_talk_ms"] == 4000
    assert c["customer_talk_ms"] == 3500
    assert c["conversation_ms"] == 7500
    assert c["s3_agent_share"] == 0.75
    assert c["s3_customer_share"] == 0.0
    assert c["s3_share"] == pytest.approx(3 / 7.5, abs=1e-4)
    assert c["dead_air_count"] == 0          # silences: 1 s, 0.5 s, 1 s
    assert c["overtalk_count"] == 0
    assert c["keys_pressed"] == 15           # 2.0, 2.2, ..., 4.8


def test_dead_air_and_overtalk():
    # call 0-20 s: agent 0-6 and 12-16; customer 5-9 and 15.2-20.
    # overtalk 5-6 (1 s, counted) and 15.2-16 (0.8 s, counted); silence 9-12 = 3 s dead air.
    ev = [marker(0, "start"), marker(20, "end")]
    ev += speech(0, [(0, 6), (12, 16)], 0, 22) + speech(1, [(5, 9), (15.2, 20)], 0, 22)
    eng, _ = run(ev, end_s=22)
    c = only_contact(eng)
    assert c["overtalk_count"] == 2
    assert c["overtalk_ms"] == 1800
    assert c["dead_air_count"] == 1
    assert c["dead_air_ms"] == 3000
    assert c["dead_air_longest_ms"] == 3000
    assert c["conversation_ms"] == 17000


def test_short_overtalk_and_short_silence_do_not_count():
    ev = [marker(0, "start"), marker(10, "end")]
    ev += speech(0, [(0, 4)], 0, 12) + speech(1, [(3.6, 7.2)], 0, 12)   # 0.4 s overlap
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["overtalk_count"] == 0
    assert c["overtalk_ms"] == 0
    assert c["dead_air_count"] == 0   # trailing silence 7.2-10 s = 2.8 s < 3 s


def test_trailing_silence_at_threshold_is_dead_air():
    ev = [marker(0, "start"), marker(10, "end")]
    ev += speech(0, [(0, 4)], 0, 12) + speech(1, [(4.5, 7)], 0, 12)
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["dead_air_count"] == 1
    assert c["dead_air_ms"] == 3000


def test_s1_information_work_during_conversation():
    # call 0-10 s, conversation: agent 0-4, customer 4-10 (10 s). Focus crm from 0, other from 6.
    # mouse active 2-8 s -> info work (mouse in crm) = 2-6 s (4 s) -> S1 = 0.4. D1 tool time 6 s.
    ev = [marker(0, "start"), marker(10, "end"), focus(0, "crm"), focus(6, "other")]
    ev += speech(0, [(0, 4)], 0, 12) + speech(1, [(4, 10)], 0, 12)
    ev += mouse(2, 8.0)   # bins 2.00 ... 7.99 s, the last ending at 8.0 s
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["s1_share"] == 0.4
    assert c["tool_time_ms"] == 6000
    assert c["mouse_ms"] == 6000


def test_typing_rates_talk_listen_and_corrections():
    # agent 0-5 s, customer 5-10 s. 10 presses while talking (0.5 s step from 0 to 4.5),
    # 5 presses while listening (1 s step from 5.2), two of them backspaces.
    ev = [marker(0, "start"), marker(10, "end")]
    ev += speech(0, [(0, 5)], 0, 12) + speech(1, [(5, 10)], 0, 12)
    ev += typing(0, 4.9, step_s=0.5)
    ev += typing(5.2, 7.9, step_s=1.0)
    ev += typing(8.3, 9.9, step_s=1.0, key_class=KeyClass.BACKSPACE)
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["keys_pressed"] == 15
    assert c["keys_per_min_talk"] == 120.0    # 10 presses / 5 s
    assert c["keys_per_min_listen"] == 60.0   # 5 presses / 5 s
    assert c["corrections"] == 2
    assert c["correction_share"] == round(2 / 15, 4)


def test_automatic_phone_contacts_split_by_gap():
    # two calls separated by 30 s of silence; each with >= 1 s customer speech.
    ev = speech(0, [(1, 3), (40, 44)], 0, 80) + speech(1, [(3.5, 6), (45, 47)], 0, 80)
    eng, _ = run(ev, end_s=80)
    phones = [c for c in eng.contacts if c["kind"] == "phone"]
    assert [(c["start_ns"], c["end_ns"]) for c in phones] == [(1 * S, 6 * S), (40 * S, 47 * S)]
    assert all(c["source"] == "auto" for c in phones)


def test_speech_without_customer_is_not_a_call():
    ev = speech(0, [(1, 5)], 0, 40) + speech(1, [(10, 10.5)], 0, 40)   # 0.5 s < 1 s minimum
    eng, _ = run(ev, end_s=40)
    assert [c for c in eng.contacts if c["kind"] == "phone"] == []


def test_marker_overrides_automatic_contact():
    ev = speech(0, [(1, 3)], 0, 40) + speech(1, [(3.5, 6)], 0, 40)
    ev += [marker(0.5, "start"), marker(8, "end")]
    eng, _ = run(ev, end_s=40)
    phones = [c for c in eng.contacts if c["kind"] == "phone"]
    assert len(phones) == 1
    assert phones[0]["source"] == "assessor"
    assert (phones[0]["start_ns"], phones[0]["end_ns"]) == (int(0.5 * S), 8 * S)


def test_chat_contact_from_focus_with_switches():
    # chat 0-20 (chat, knowledge 20-30, chat 30-50, crm 50-60, chat 60-70), then other for 100 s.
    ev = [focus(0, "chat"), focus(20, "knowledge"), focus(30, "chat"), focus(50, "crm"),
          focus(60, "chat"), focus(70, "other")]
    ev += typing(1, 10, step_s=0.5)
    eng, _ = run(ev, end_s=200)
    chats = [c for c in eng.contacts if c["kind"] == "chat"]
    assert len(chats) == 1
    c = chats[0]
    assert (c["start_ns"], c["end_ns"]) == (0, 70 * S)
    assert c["s2_switches"] == 4            # chat->knowledge, knowledge->chat, chat->crm, crm->chat
    assert c["s2_switches_per_min"] == round(4 * 60 / 70, 2)
    assert c["channel_time_ms"] == 50_000
    # chat time within 30 s of an info window: everything except chat 0-20 before... 0-20 is
    # within 30 s of knowledge at 20 -> all 50 s consulted
    assert c["s2_info_share"] == 1.0
    assert c["keys_per_min_chat"] == round(18 * 60 / 50, 2)


def test_spurt_smoothing_bridges_short_pauses_and_drops_blips():
    # agent voiced 1-2 s and 2.2-3 s (0.2 s pause bridged), blip 5.0-5.06 s (dropped, < 100 ms)
    ev = [marker(0, "start"), marker(10, "end")]
    ev += speech(0, [(1, 2), (2.2, 3), (5.0, 5.06)], 0, 12) + speech(1, [(6, 8)], 0, 12)
    eng, _ = run(ev, end_s=12)
    c = only_contact(eng)
    assert c["agent_talk_ms"] == 2000
    assert c["spurts"]["count"] == 1
    assert c["spurts"]["median_ms"] == 2000


def test_live_summaries_every_half_second_with_live_flags():
    ev = [marker(0, "start")] + speech(0, [(1, 5)], 0, 6) + speech(1, [], 0, 6)
    eng, outs = run(ev, end_s=6)
    summaries = [o for o in outs if o[0] == "summary"]
    times = [t for _, t, _ in summaries]
    assert len(summaries) >= 11
    assert all(b - a == S // 2 for a, b in zip(times[:-2], times[1:-1]))
    talking = [b["live"]["agent_talking"] for _, t, b in summaries if 2.5 * S <= t <= 4.5 * S]
    assert talking and all(talking)


def test_live_contact_figures_are_at_most_one_percent_of_the_contact_or_5_s_old():
    """The live summary's contact figures are refreshed when 5 s or 1/100 of the contact's age,
    whichever is more, has passed (so a summary's cost does not grow with the call, nor is a
    young contact recomputed at every summary); when refreshed they equal the
    figures computed for the contact so far, and a new contact gets its figures at once."""
    from station.engine.core import LIVE_CONTACT_FIGURES
    turns = [(t, t + 3) for t in range(1, 300, 8)]
    ev = ([marker(0, "start"), focus(0, "crm")] + speech(0, turns, 0, 300)
          + speech(1, [(a + 4, b + 4) for a, b in turns], 0, 300) + typing(10, 290, step_s=0.5)
          + [marker(300, "end"), marker(300.2, "start", "phone", "c2")])
    eng = Engine(cfg())
    refreshed, stale, seen_new = 0, 0, False
    for b in batches(ev, step_s=0.5, end_s=302):
        for kind, t, body in eng.ingest(b):
            c = body.get("contact") if kind == "summary" else None
            if not c:
                continue
            age = t - c["start_ns"]
            assert t - c["figures_as_of_ns"] <= max(5 * S, age // 100)
            if c["figures_as_of_ns"] == t:
                refreshed += 1
                fig = eng.figures_for(c["kind"], c["start_ns"], t)
                assert {k: c[k] for k in LIVE_CONTACT_FIGURES if k in c} == {
                    k: fig[k] for k in LIVE_CONTACT_FIGURES if k in fig}
            else:
                stale += 1
            if c["start_ns"] >= 300 * S and not seen_new:
                seen_new = True
                assert c["figures_as_of_ns"] == t, "a new contact's figures are computed at once"
    assert seen_new and refreshed >= 50 and stale >= 500


def test_injected_input_is_counted_alerted_and_reported():
    from station.events import MouseBin
    ev = [focus(0, "crm")] + typing(1, 2, step_s=0.5)
    ev += [KeyEvent(int(3 * S), KeyClass.PRINTABLE, True, injected=True),
           KeyEvent(int(3.05 * S), KeyClass.PRINTABLE, False, injected=True),
           MouseBin(int(4 * S), 3, 30, injected=2)]
    eng, outs = run(ev, end_s=8)
    assert eng.injected == {"keys": 1, "mouse": 2}
    assert eng.injected_first_ns == 3 * S
    alerts = [b for k, _, b in outs if k == "alert" and b["type"] == "injected_input"]
    assert alerts and alerts[0]["keys"] == 1
    last = [b for k, _, b in outs if k == "summary"][-1]
    assert last["session"]["injected_input"] == {"keys": 1, "mouse": 2}


def test_device_events_travel_in_batches_and_the_engine_keeps_each_devices_last_identity():
    from station.events import Batch, DeviceEvent, decode_batch, encode_batch
    from station.recorder.plausibility import RATES
    from station.handover import CAPTURE_STREAMS
    kbd = DeviceEvent(int(0.5 * S), "input", "/dev/input/event3", "present", name="Logitech USB Keyboard",
                      bus="usb", vendor="046d", product="c31c", phys="usb-0000:00:14.0-1/input0")
    fake = DeviceEvent(int(0.6 * S), "input", "/dev/input/event9", "present", name="py-evdev-uinput",
                       virtual=True, evidence=False, detail="not on the allow-list")
    gone = DeviceEvent(int(2 * S), "input", "/dev/input/event9", "removed", name="py-evdev-uinput",
                       virtual=True, evidence=False)
    b = Batch.from_events(int(3 * S), [kbd, fake, gone])
    assert list(decode_batch(encode_batch(b)).events("device")) == [kbd, fake, gone]
    assert "device" in CAPTURE_STREAMS and "device" in RATES
    eng, _ = run([focus(0, "crm"), kbd, fake, gone], end_s=4)
    assert eng.devices[("input", "/dev/input/event3")]["evidence"] is True
    assert eng.devices[("input", "/dev/input/event9")]["state"] == "removed"
    assert eng.devices[("input", "/dev/input/event9")]["virtual"] is True


def test_the_x_servers_xtest_devices_are_known_by_their_role_not_their_name():
    """The engine trusts the capture's role "xtest" (the server's own mark), never a name: a
    device calling itself "... XTEST keyboard" without that role alerts like any other device
    without evidence, on an xi2 id or an evdev node, and so does one with role "". Only a device
    decoded from a journal before roles (role "?") is judged as the software that wrote it did
    (an xi2 device named XTEST is the server's), so that journal's replay stays exact."""
    from station.events import DeviceEvent
    xtest = DeviceEvent(int(0.5 * S), "input", "xi2:5", "present", name="Virtual core XTEST keyboard",
                        bus="virtual", virtual=True, evidence=False, role="xtest")
    named = DeviceEvent(int(0.6 * S), "input", "xi2:12", "present", name="Virtual core XTEST keyboard",
                        virtual=True, evidence=False, role="keyboard")
    node = DeviceEvent(int(0.7 * S), "input", "/dev/input/event9", "present", name="XTEST keyboard",
                       virtual=True, evidence=False, role="keyboard")
    blank = DeviceEvent(int(0.8 * S), "input", "xi2:4", "present", name="Virtual core XTEST pointer",
                        virtual=True, evidence=False)   # role "": the capture did not say xtest
    old = DeviceEvent(int(0.9 * S), "input", "xi2:6", "present", name="Virtual core XTEST pointer",
                      virtual=True, evidence=False, role="?")   # decoded from a journal before roles
    old_other = DeviceEvent(S, "input", "xi2:14", "present", name="uinput keyboard",
                            virtual=True, evidence=False, role="?")
    eng, outs = run([focus(0, "crm"), xtest, named, node, blank, old, old_other], end_s=3)
    alerted = [b["device"] for k, _, b in outs if k == "alert" and b["type"] == "device_no_evidence"]
    assert alerted == ["xi2:12", "/dev/input/event9", "xi2:4", "xi2:14"]
    assert eng.devices[("input", "xi2:5")]["role"] == "xtest"   # still listed


def test_a_device_event_without_the_role_column_decodes_with_role_unknown():
    """Journals written before DeviceEvent.role decode with role "?" (not the field's default
    "", which a capture of today may send)."""
    import msgpack
    import zlib
    from station.events import DeviceEvent, decode_batch, encode_batch, Batch
    ev = DeviceEvent(int(0.5 * S), "input", "xi2:5", "present", name="Virtual core XTEST keyboard", role="xtest")
    obj = msgpack.unpackb(zlib.decompress(encode_batch(Batch.from_events(S, [ev]))), raw=False)
    del obj["s"]["device"]["role"]
    old = decode_batch(zlib.compress(msgpack.packb(obj, use_bin_type=True)))
    assert list(old.events("device")) == [DeviceEvent(int(0.5 * S), "input", "xi2:5", "present",
                                                      name="Virtual core XTEST keyboard", role="?")]


def test_audio_device_changes_and_sources_without_evidence_are_alerted_at_once():
    from station.events import DeviceEvent
    ok = DeviceEvent(int(0.5 * S), "audio", "alsa_input.usb-Jabra-00.mono-fallback", "present", name="Jabra",
                     bus="usb", vendor="0b0e", product="0300", detail="agent: the calibrated headset")
    moved = DeviceEvent(int(1.0 * S), "audio", "player.monitor", "changed", name="Monitor of player", virtual=True,
                        evidence=False, detail="agent: the recorded stream was moved here")
    gone = DeviceEvent(int(1.5 * S), "audio", "alsa_input.usb-Jabra-00.mono-fallback", "removed", name="Jabra",
                       evidence=False, detail="agent: removed")
    eng, outs = run([focus(0, "crm"), ok, moved, gone], end_s=3)
    alerts = [b for k, _, b in outs if k == "alert" and b["type"] == "device_changed"]
    assert [(a["device"], a["state"], a["evidence"]) for a in alerts] == [
        ("player.monitor", "changed", False), ("alsa_input.usb-Jabra-00.mono-fallback", "removed", False)]
    assert [c["device"] for c in eng.device_changes] == ["player.monitor", "alsa_input.usb-Jabra-00.mono-fallback"]
