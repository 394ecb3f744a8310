"""The web console's room model and report formatting, on hand-made protocol messages (fast).

The model is pure (no sockets): these tests feed it ``protocol.Message`` objects shaped like the
station's (see station/engine/core.py summary(), evidence.py) and check what the views show.
"""

from __future__ import annotations

import csv
import io
import time

from station import config, protocol
from station.competences import proven
from station.console.store import ConsoleStore
from station.console.web import reports
from station.console.web.state import LIMITS, Room, StationModel, merge_spans
from station.protocol import Message

S = 1_000_000_000


def msg(seq, kind, t, data, session="sess-1", station="st-1"):
    return Message(station, session, seq, kind, t, 1_700_000_000 * S + t, b"", data=data)


def summary(t, spans=None, focus=None, dead_ms=0, contact=None):
    return {"t_ns": t, "live": {"agent_talking": True, "customer_talking": False, "typing": True, "mouse": False,
                                "focus": "crm", "dead_air_ms": dead_ms},
            "contact": contact, "session": {"s1_share": 0.4, "s3_share": 0.3}, "spans": spans or {},
            "focus": focus or [], "health": {}, "exam": {}}


def mark(assessor, competence, kind, text="", t=0, key=None):
    """A journaled mark body; ``key``: the sending key's fingerprint (default: one per assessor)."""
    return {"type": "mark", "mark_id": f"{assessor}-{competence}-{kind}-{t}", "assessor_id": assessor,
            "assessor_name": assessor.title(), "competence": competence, "kind": kind, "text": text, "t_ns": t,
            "key_fp": f"fp-{assessor}" if key is None else key}


def cfg():
    return config.load(system=False)


def test_memory_is_bounded_over_a_long_session():
    st = StationModel("st-1", {"lane": 500, "focus": 300, "dead": 50, "marks": 100})
    t = 10 * S
    for seq in range(1, 20_001):  # ~2.8 h of summaries at 2 Hz
        t += S // 2
        st.apply(msg(seq, "summary", t, summary(t, {"agent": [[t - S // 4, t - S // 8]], "typing": [[t - S // 3, t]]},
                                                   [[t - 1, "crm" if seq % 2 else "knowledge"]], dead_ms=3000 * (seq % 3 == 0))))
    for seq in range(20_001, 20_501):
        st.apply(msg(seq, "mark", t + seq, mark("anna", "C1", "counter", t=t + seq)))
    assert len(st.lanes["agent"]) == 500 and len(st.lanes["typing"]) == 500 and len(st.focus) == 300
    assert len(st.dead) == 50 and len(st.marks) == 100
    assert st.lanes["agent"][-1][1] == t - S // 8  # the newest kept, the oldest dropped
    assert LIMITS["lane"] >= 10_000  # the production bound keeps hours of detail


def test_duplicates_old_sessions_and_bad_shapes():
    room = Room(cfg(), ["st-1"])
    a = msg(1, "summary", 5 * S, summary(5 * S, {"agent": [[4 * S, 5 * S]]}))
    assert room.apply([a, a]) == 1 and room.ignored == 1
    assert room.apply([msg(2, "mark", 6 * S, {"competence": None, "kind": 5}),
                       msg(3, "summary", 7 * S, {"spans": {"agent": "not a list of pairs"}}),
                       msg(4, "weird_kind", 8 * S, {"x": 1})]) == 3
    st = room.stations["st-1"]
    assert st.bad >= 1 and st.last_seq == 4
    # a new session replaces the model; the old session's late messages are ignored
    room.apply([msg(1, "summary", 100 * S, summary(100 * S), session="sess-2")])
    assert st.session == "sess-2" and list(st.lanes["agent"]) == []
    assert room.apply([msg(5, "summary", 9 * S, summary(9 * S), session="sess-1")]) == 0
    assert room.apply([msg(1, "summary", 1, {}, station="unknown")]) == 0 and room.unknown == 1


def test_proven_only_when_two_assessors_agree_and_latest_verdict_counts():
    room = Room(cfg(), ["st-1"])
    room.apply([msg(1, "mark", S, mark("anna", "C7", "observed", "<b>x</b>"))])
    board = {c["id"]: c for c in room.board("st-1")["competences"]}
    assert not board["C7"]["proven"] and board["C7"]["verdicts"]["anna"]["text"] == "<b>x</b>"
    room.apply([msg(2, "mark", 2 * S, mark("bert", "C7", "not_observed"))])
    assert not {c["id"]: c for c in room.board("st-1")["competences"]}["C7"]["proven"]
    room.apply([msg(3, "mark", 3 * S, mark("bert", "C7", "observed"))])
    b = room.board("st-1")
    c7 = {c["id"]: c for c in b["competences"]}["C7"]
    assert c7["proven"] and {a["id"] for a in b["assessors"]} >= {"anna", "bert"}
    room.apply([msg(4, "mark", 4 * S, mark("anna", "C7", "not_observed"))])
    assert not {c["id"]: c for c in room.board("st-1")["competences"]}["C7"]["proven"]
    assert proven({}) is False and proven({"a": {"verdict": "observed"}}) is False
    room.apply([msg(5, "mark", 5 * S, mark("anna", "C1", "counter")), msg(6, "mark", 6 * S, mark("bert", "C1", "counter")),
                msg(7, "mark", 7 * S, mark("anna", "C1", "counter"))])
    assert room.stations["st-1"].counters()["C1"] == {"anna": 2, "bert": 1}
    # one key under two assessor ids, or no key at all (plaintext), never proves
    room.apply([msg(20, "mark", 20 * S, mark("anna", "C5", "observed", key="fp-x")),
                msg(21, "mark", 21 * S, mark("bert", "C5", "observed", key="fp-x")),
                msg(22, "mark", 22 * S, mark("anna", "C6", "observed", key="")),
                msg(23, "mark", 23 * S, mark("bert", "C6", "observed", key=""))])
    rows = {c["id"]: c for c in room.board("st-1")["competences"]}
    assert not rows["C5"]["proven"] and not rows["C6"]["proven"]
    assert rows["C7"]["disagree"] and not rows["C5"]["disagree"]
    ag = room.board("st-1")["agreement"]
    assert ag["raters"] == ["anna", "bert"] and ag["n"] == 3 and ag["disagreements"] == ["C7"]


def test_card_alerts_and_timeline_window():
    room = Room(cfg(), ["st-1"])
    t = 400 * S
    room.apply([
        msg(1, "summary", t, summary(t, {"agent": [[t - 10 * S, t - 9 * S], [t - 9 * S + 1000, t - 8 * S],
                                                   [t - 350 * S, t - 340 * S]]},
                                     [[t - 20 * S, "crm"], [t - 5 * S, "knowledge"]], dead_ms=9000,
                                     contact={"kind": "phone", "start_ns": t - 60 * S, "duration_ms": 60000,
                                              "source": "auto"})),
        msg(2, "alert", t, {"type": "source_lost", "source": "audio", "detail": "device gone"}),
        msg(3, "health", t, {"headset": {"status": "warning", "warnings": ["not calibrated"]}}),
    ])
    c = room.card("st-1", {"state": "connected", "last_rx_age_s": 0.2, "offset_ns": 0, "rtt_ns": 1000})
    kinds = {a["type"] for a in c["alerts"]}
    assert {"source_lost", "dead_air", "headset"} <= kinds and not c["red"]
    assert c["contact"] == {"kind": "phone", "duration_ms": 60000, "source": "auto"}
    assert room.card("st-1", {"state": "connected", "last_rx_age_s": 1.6})["red"]
    assert room.card("st-1", {"state": "unauthorised", "detail": "key", "last_rx_age_s": None})["red"]
    room.apply([msg(4, "alert", t + 1, {"type": "source_back", "source": "audio"})])
    assert "source_lost" not in {a["type"] for a in room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})["alerts"]}
    room.apply([msg(5, "alert", t + 2, {"type": "device_changed", "kind": "audio", "device": "player.monitor",
                                        "state": "changed", "evidence": False,
                                        "detail": "agent: the recorded stream was moved here"})])
    dev = [a["text"] for a in room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})["alerts"]
           if a["type"] == "device"]
    assert dev == ["audio player.monitor: changed, no evidence: agent: the recorded stream was moved here"]
    tl = room.timeline(room.stations["st-1"], t - 300 * S, t, 1000)
    assert tl["lanes"]["agent"] == [[t - 10 * S, t - 8 * S]]  # merged (gap < 1 px), the old span clipped away
    assert [f[2] for f in tl["lanes"]["focus"]] == ["crm", "knowledge"]
    assert tl["lanes"]["dead_air"] == [[t - 9 * S, t]]
    assert tl["lanes"]["contacts"] == [[t - 60 * S, t, "phone"]]
    assert merge_spans([(0, 10), (11, 20), (100, 200)], 5, 150, 2) == [[5, 20], [100, 150]]


def test_own_acknowledged_mark_shows_at_once_and_the_streamed_one_replaces_it():
    room = Room(cfg(), ["st-1"])
    st = room.stations["st-1"]
    room.apply([msg(1, "summary", 10 * S, summary(10 * S))])
    own = mark("anna", "C7", "observed", "seen", t=11 * S)
    st.acknowledged_mark(own)
    assert st.verdicts()["C7"]["anna"]["verdict"] == "observed", "at once, before the stream brings it"
    st.acknowledged_mark(mark("anna", "C1", "counter", t=12 * S))
    assert st.counters()["C1"] == {"anna": 1}
    room.apply([msg(2, "mark", 11 * S, own), msg(3, "mark", 12 * S, mark("anna", "C1", "counter", t=12 * S))])
    assert st.acked == {} and st.counters()["C1"] == {"anna": 1}, "replaced, not counted twice"
    st.acknowledged_mark(own)   # an ack that comes after the streamed mark adds nothing
    assert len([m for m in st.all_marks() if m["mark_id"] == own["mark_id"]]) == 1


def test_late_events_are_an_alert_on_the_card():
    room = Room(cfg(), ["st-1"])
    d = summary(10 * S)
    d["session"]["late_events"] = 37
    room.apply([msg(1, "summary", 10 * S, d)])
    alerts = room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})["alerts"]
    assert any(a["type"] == "late" and "37" in a["text"] for a in alerts)


def _store(path, msgs):
    """A real console store holding msgs and one recorded gap; returns a read-only reader."""
    w = ConsoleStore(path)
    w.add([Message(m.station, m.session, m.seq, m.kind, m.t_ns, m.wall_ns, protocol.packb(m.data), m.data) for m in msgs],
          time.time_ns())
    w.save_session("st-1", "sess-1", msgs[-1].seq + 1, msgs[-1].seq,
                   protocol.packb({"software_version": "9.9", "config_hash": "abc"}))
    w.add_gap("st-1", "sess-1", 7, 9, "not in station journal")
    w.commit()
    w.close()
    return ConsoleStore(path, readonly=True)


def test_report_gaps_escaping_and_csv_formulas(tmp_path):
    msgs = [msg(1, "exam", S, {"action": "assign", "candidate_id": "=HYPERLINK(1)", "candidate_name": "<script>x</script>"})]
    seq = 1
    for k in range(30):  # health beat each second, with a 10 s silence in the middle
        t = (2 + k + (10 if k >= 15 else 0)) * S
        seq += 1
        msgs.append(msg(seq, "health", t, {"software_version": "9.9", "headset": {"status": "ok", "calibrated": "2026"}}))
    seq += 1
    msgs.append(msg(seq, "mark", 20 * S, mark("anna", "C4", "observed", '<img src=x onerror="alert(1)">')))
    rep = reports.build(_store(tmp_path / "console.sqlite", msgs), cfg(), "st-1")
    kinds = [g["kind"] for g in rep["data_gaps"]]
    assert "missing messages" in kinds and "station silent" in kinds
    silent = next(g for g in rep["data_gaps"] if g["kind"] == "station silent")
    assert silent["duration_ms"] == 11_000
    assert rep["headset_calibrated"] is True and rep["software_version"]["station"] == "9.9"
    html = reports.render_html(rep)
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    rows = list(csv.reader(io.StringIO(reports.render_csv(rep))))
    cand = next(r for r in rows if r[2] == "candidate_id")
    assert cand[3] == "'=HYPERLINK(1)"
    assert ["competence", "C4", "verdict:anna", "observed"] in rows


def test_a_journal_that_goes_back_is_an_alert_on_the_card():
    room = Room(cfg(), ["st-1"])
    heads = lambda b, m: {"chain_heads": {"blocks": b, "blocks_chain": "aa", "last_seq": m, "messages_chain": "bb"}}  # noqa: E731
    room.apply([msg(1, "health", S, heads(10, 20)), msg(2, "health", 2 * S, heads(12, 25))])
    assert not [a for a in room.card("st-1")["alerts"] if a["type"] == "journal_rewound"]
    room.apply([msg(3, "health", 3 * S, heads(5, 9))])        # the recorder restarted on a cut journal
    (alert,) = [a for a in room.card("st-1")["alerts"] if a["type"] == "journal_rewound"]
    assert "12 to 5 blocks" in alert["text"]
    assert any(a["type"] == "journal_rewound" for a in room.stations["st-1"].alerts)   # kept for the report
    from station.console.web.reports import data_gaps
    st = room.stations["st-1"]
    gaps = data_gaps(_NoGaps(), cfg(), st, [], "st-1", "sess-1", None)
    assert any(g["kind"] == "journal rewound" for g in gaps)


class _NoGaps:
    def gaps(self, station=None):
        return []


def test_an_input_device_without_evidence_is_an_alert_on_the_card_at_once():
    """The engine alerts in the very batch that brings the device (the next 500 ms cycle: well
    within 2 s), its summaries list it while present, and the card shows it; gone once removed."""
    from station.engine import Engine
    from station.events import Batch, DeviceEvent
    eng = Engine(cfg())
    kbd = DeviceEvent(int(0.1 * S), "input", "/dev/input/event3", "present", name="Logitech USB Keyboard")
    fake = DeviceEvent(int(1.2 * S), "input", "/dev/input/event9", "present", name="py-evdev-uinput",
                       virtual=True, evidence=False, detail="not on the allow-list (input.allow)")
    room = Room(cfg(), ["st-1"])
    seq = 0

    def cycle(t, events):
        nonlocal seq
        out = eng.ingest(Batch.from_events(t, events, watermark_ns=t - S))
        for kind, tt, body in out:
            seq += 1
            room.apply([msg(seq, kind, tt, protocol.unpack_map(protocol.packb(body), "body"))])
        return out

    assert not [b for k, _, b in cycle(1 * S, [kbd]) if k == "alert"]
    alerts = [b for k, _, b in cycle(int(1.5 * S), [fake]) if k == "alert"]
    assert [a["type"] for a in alerts] == ["device_no_evidence"] and alerts[0]["name"] == "py-evdev-uinput"
    cycle(2 * S, [])
    card = room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})
    assert any(a["type"] == "device_no_evidence" and "py-evdev-uinput" in a["text"] for a in card["alerts"])
    cycle(int(2.5 * S), [DeviceEvent(int(2.2 * S), "input", "/dev/input/event9", "removed", name="py-evdev-uinput",
                                     virtual=True, evidence=False)])
    cycle(3 * S, [])
    card = room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})
    assert not any(a["type"] == "device_no_evidence" for a in card["alerts"])


def test_a_voice_not_counted_as_the_candidates_is_on_the_card():
    """Frames webrtcvad called speech that the capture rejected as another voice (DISTANT, away
    from the candidate's own speech) reach the card through the engine's summaries, in seconds;
    the soft edges of the candidate's own words (DISTANT next to accepted speech) do not."""
    from station.engine import Engine
    from station.events import Batch, FrameFlag, SpeechFrame
    eng = Engine(cfg())
    room = Room(cfg(), ["st-1"])
    seq = 0
    ms20 = 20_000_000

    def frames(t0_s, n, speech, flags):
        return [SpeechFrame(int(t0_s * S) + k * ms20, 0, ms20, -300, True, speech, flags) for k in range(n)]

    def cycle(t, events):
        nonlocal seq
        for kind, tt, body in eng.ingest(Batch.from_events(t, events, watermark_ns=t - S)):
            seq += 1
            room.apply([msg(seq, kind, tt, protocol.unpack_map(protocol.packb(body), "body"))])

    def card_text():
        card = room.card("st-1", {"state": "connected", "last_rx_age_s": 0.1})
        return [a["text"] for a in card["alerts"] if a["type"] == "voice_rejected"]

    # three words of 0.6 s, each ending in 0.4 s of soft ending (DISTANT, right after the speech):
    # 1.2 s of DISTANT frames in all, none of it another voice
    words = []
    for k in range(3):
        words += frames(1.0 + k, 30, True, 0) + frames(1.6 + k, 20, False, int(FrameFlag.DISTANT))
    cycle(4 * S, words + frames(4.0, 20, True, 0))
    cycle(5 * S, [])
    assert card_text() == []
    # a neighbour for 2 s in the candidate's pause, 1 s after the candidate's last word
    cycle(7 * S, frames(5.4, 100, False, int(FrameFlag.DISTANT)))
    cycle(8 * S, frames(7.4, 50, False, 0))          # silence after it decides the run
    cycle(9 * S, [])
    assert card_text() == ["not counted as the candidate's speech: another voice 2 s, noise 0 s"]
