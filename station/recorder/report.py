"""The per-session report: JSON for machines, a printable HTML page for people.

``build_report(journal)`` replays the journal (``station.recorder.replay``) with the session's own
configuration, checks the journal's integrity, and gathers contacts, the 19 competences with
figures, rules and marks, timelines and data gaps. ``write_report`` writes ``report.json`` and
``report.html`` (timelines as inline SVG; no scripts, no external resources) into a directory.

Times in the JSON are station-clock ns plus derived wall-clock ISO strings; durations are ms.
"""

from __future__ import annotations

import json

from station import __version__, anchors
from station import intervals as iv
from station.competences import exam_agreement
from station.engine.evidence import session_evidence
from station.recorder.replay import replay
from station.rendering import iso_utc as _iso

NS_PER_S = 1_000_000_000




def _spans(a) -> list[list[int]]:
    return [[int(s), int(e)] for s, e in (a.tolist() if hasattr(a, "tolist") else a)]


def build_report(journal, exact: bool = True, anchor: dict | None = None) -> dict:
    """Replay + evidence + integrity for one session journal. Raises JournalError for a bad journal.

    exact=True (default): the integrity check replays batch by batch and compares every
    journaled engine message (live summaries, alerts, contacts, marks, evidence) byte for byte,
    so a live/replay difference anywhere is caught. exact=False: the fast replay, which checks
    the final figures (contacts, marks, exam) only. ``anchor``: this session's entry of
    ``station.anchors.load`` (the chain heads the consoles hold); the journal is then checked
    against it too (a truncated or rewritten journal is not "ok")."""
    problems = journal.verify()
    anchor_problems = anchors.check(journal, anchor) if anchor is not None else []
    res = replay(journal, compare=True, exact=exact)
    eng = res.engine
    evidence = session_evidence(eng)
    h = journal.header
    start = eng.first_t if eng.first_t is not None else h.created_mono_ns
    end = max(eng.now, start)
    contacts = []
    for c in eng.contacts:
        lo, hi = c["start_ns"], c["end_ns"]
        entry = {k: v for k, v in c.items() if not k.startswith("_")}
        entry["wall_start"] = _iso(h.wall_ns(lo))
        entry["timeline"] = timeline(eng, c["kind"], lo, hi)
        contacts.append(entry)
    gaps = []
    for source, spans in eng.lost.items():
        for s, e in spans:
            gaps.append({"source": source, "start_ns": s, "end_ns": e if e is not None else end,
                         "duration_ms": ((e if e is not None else end) - s) // 1_000_000,
                         "wall_start": _iso(h.wall_ns(s))})
    gaps.sort(key=lambda g: g["start_ns"])
    return {
        "report_version": 1,
        "software_version": __version__,
        "session": {"station_id": h.station_id, "session_id": h.session_id,
                    "session_software_version": h.software_version, "config_hash": h.config_hash,
                    "start_ns": start, "end_ns": end, "wall_start": _iso(h.wall_ns(start)),
                    "wall_start_ns": h.wall_ns(start),
                    "wall_end": _iso(h.wall_ns(end)), "duration_ms": (end - start) // 1_000_000,
                    "ended": journal.get_meta("ended_ns") is not None},
        "exam": dict(eng.exam),
        "headset": _headset_status(journal),
        "integrity": {"ok": not problems and not res.mismatches and not anchor_problems,
                      "journal_problems": problems, "anchor_problems": anchor_problems,
                      "anchor": anchors.summary(anchor) if anchor is not None else None,
                      "replay_mismatches": res.mismatches, "batches": res.batches, "events": res.events,
                      "messages_compared": res.compared, "exact": exact},
        "data_gaps": gaps,
        "late_events": {"count": sum(eng.late.values()), "streams": dict(eng.late),
                        "first_wall": _iso(h.wall_ns(eng.late_first_ns)) if eng.late_first_ns is not None else None},
        "voice_rejected": {"other_voice_ms": eng.rejected.totals["other_voice"] // 1_000_000,
                           "noise_ms": eng.rejected.totals["noise"] // 1_000_000},
        "synthetic_input": {"keys": eng.injected["keys"], "mouse": eng.injected["mouse"],
                            "first_wall": _iso(h.wall_ns(eng.injected_first_ns)) if eng.injected_first_ns else None},
        "input_devices": _input_devices(journal, eng),
        "security": _security(journal, eng),
        "devices": _devices(journal, eng),
        "contacts": contacts,
        "competences": evidence,
        "agreement": exam_agreement({cid: c["assessors"] for cid, c in evidence.items()}),
        "session_totals": eng.session_totals(),
        "marks": eng.marks,
        "timeline": timeline(eng, "session", start, end),
    }


def _input_devices(journal, eng) -> dict:
    """Every input device the capture announced (last identity and evidence decision, first
    seen / last change in UTC), the set in force at exam start, and how much input came from
    devices without evidence (counted as ``injected``, in no figure)."""
    wall = journal.header.wall_ns

    def row(d: dict) -> dict:
        return {**d, "wall": _iso(wall(d["t_ns"]))}
    devices = sorted((row(d) for (kind, _), d in eng.devices.items() if kind == "input"),
                     key=lambda d: (d["evidence"], d["device"]))
    at_start = eng.exam_devices
    return {"devices": devices,
            "at_exam_start": None if at_start is None else [row(d) for d in at_start if d["kind"] == "input"],
            "without_evidence": [d["device"] for d in devices if not d["evidence"]],
            "not_evidence_input": {"keys": eng.injected["keys"], "mouse": eng.injected["mouse"]}}


def _security(journal, eng) -> dict:
    """What the recorder refused or dropped (``IntegrityEvent``s, every one listed), whether the
    session was fed by simulated sources, and the software of the recorder and of the capture."""
    events = [dict(e, wall=_iso(journal.header.wall_ns(e["t_ns"]))) for e in eng.integrity_events]
    counts = {k: v for k, v in eng.integrity.items() if k != "simulated"}
    try:
        recorder_sw = json.loads(journal.get_meta("software") or "{}")
    except ValueError:
        recorder_sw = {}
    captures = sorted({d for d in eng.health_log.get("capture", []) if d.startswith("capture connected")})
    return {"ok": not counts and not eng.simulated, "simulated": eng.simulated, "counts": counts,
            "events": [e for e in events if e["kind"] != "simulated"],
            "recorder_software": recorder_sw, "capture_links": captures}


def _devices(journal, eng) -> dict:
    """The devices the capture read from, each with its last identity and evidence decision
    (``DeviceEvent``), and every change, removal or evidence refusal with its time."""
    last = [dict(d) for _, d in sorted(eng.devices.items())]
    changes = [dict(d, wall=_iso(journal.header.wall_ns(d["t_ns"]))) for d in eng.device_changes]
    return {"ok": not changes, "last": last, "changes": changes}


def _headset_status(journal) -> dict:
    raw = journal.get_meta("headset")
    if raw:
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return {"status": "unknown"}


def timeline(eng, kind: str, lo: int, hi: int) -> dict:
    """Interval lanes for [lo, hi): speech, typing, mouse, focus categories, dead air, overtalk."""
    agent = eng.agent.within(lo, hi, True)
    cust = eng.customer.within(lo, hi, True)
    talk = iv.union(agent, cust)
    lanes = {"agent": _spans(agent), "customer": _spans(cust),
             "typing": _spans(eng.typing.within(lo, hi, True)), "mouse": _spans(eng.mouse.within(lo, hi, True))}
    focus, _, _ = eng.focus_spans(lo, hi)
    lanes["focus"] = sorted([[s, e, cat] for cat, a in focus.items() for s, e in _spans(a)])
    if kind in ("phone", "session"):
        phones = [c for c in eng.contacts if c["kind"] == "phone"] if kind == "session" else [{"start_ns": lo, "end_ns": hi}]
        dead, over = [], []
        for c in phones:
            a, b = max(lo, c["start_ns"]), min(hi, c["end_ns"])
            if b <= a:
                continue
            t = iv.union(eng.agent.within(a, b, True), eng.customer.within(a, b, True))
            dead += _spans(iv.at_least(iv.complement(t, a, b), eng.cfg_activity.dead_air_ms * 1_000_000))
            over += _spans(iv.at_least(iv.intersect(eng.agent.within(a, b, True), eng.customer.within(a, b, True)),
                                       eng.cfg_activity.overtalk_min_ms * 1_000_000))
        lanes["dead_air"], lanes["overtalk"] = dead, over
    lanes["unknown"] = _spans(eng.unknown_spans(lo, hi))
    if kind == "session":
        lanes["contacts"] = [[c["start_ns"], c["end_ns"], c["kind"]] for c in eng.contacts]
    del talk
    return {"start_ns": lo, "end_ns": hi, "lanes": lanes}
