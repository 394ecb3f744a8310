"""A bounded in-memory model of every followed station, built from console messages.

``Room`` holds one ``StationModel`` per configured station. ``Room.apply(messages)`` folds
delivered console messages (``protocol.Message``: kind, station, session, seq, t_ns, data) into the
models; ``Room.restore(reader)`` rebuilds them from the console store at start (so a restarted
console shows the same state), after which only new messages are applied (a message whose seq
was already applied is ignored, so restore + live never double-counts).

Message kinds used (docs/protocol.md, station/engine): ``summary`` (live flags, current contact,
session totals, newly closed activity spans, focus changes, exam), ``contact`` (final per-contact
figures), ``evidence`` (the 19 competences), ``alert`` (dead_air / source_lost / source_back),
``mark`` (assessor marks and contact markers), ``exam``, ``health`` (sources, headset, software).

Bounded: every list is a ``deque`` with a maximum length (``LIMITS``), so memory does not grow
with session length; the oldest spans fall off first (the report, built from the store, keeps
everything). Times are station-clock ns (``t_ns``); durations ms.

Failure modes: a message with an unexpected shape is counted in ``StationModel.bad`` and skipped;
it never raises.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Iterable

from station.competences import (
    COMPETENCE_IDS,
    COMPETENCES,
    CONSENSUS_KINDS,
    COUNTER_IDS,
    disagree,
    exam_agreement,
    proven,
)
from station.figure_words import describe

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
LANES = ("agent", "customer", "typing", "mouse")
VOICE_NOTICE_MS = 1_000   # the card says so once another voice or noise was not counted this long
LIMITS = {"lane": 20_000, "focus": 20_000, "dead": 5_000, "contacts": 1_000, "marks": 10_000,
          "alerts": 100}


def _num(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class StationModel:
    """What the console knows about one station's latest session (bounded)."""

    def __init__(self, station_id: str, limits: dict | None = None):
        self.id = station_id
        self.limits = dict(LIMITS, **(limits or {}))
        self.session: str | None = None
        self.old_sessions: set[str] = set()
        self.reset(None)

    def reset(self, session: str | None) -> None:
        L = self.limits
        if self.session:
            self.old_sessions.add(self.session)
        self.session = session
        self.last_seq = 0
        self.version = 0                 # bumped on every applied message
        self.first_t: int | None = None  # station ns of the first message
        self.last_t: int | None = None
        self.wall_minus_t: int | None = None   # wall_ns - t_ns (station's anchor)
        self.live: dict = {}
        self.contact: dict | None = None
        self.totals: dict = {}
        self.exam: dict = {}
        self.exam_events: collections.deque = collections.deque(maxlen=L["alerts"])
        self.lanes = {k: collections.deque(maxlen=L["lane"]) for k in LANES}
        self.focus: collections.deque = collections.deque(maxlen=L["focus"])   # [t, category]
        self.dead: collections.deque = collections.deque(maxlen=L["dead"])     # [start, end]
        self.contacts: collections.deque = collections.deque(maxlen=L["contacts"])
        self.open_markers: dict[str, dict] = {}  # contact kind -> marker start (assessor)
        self.marks: collections.deque = collections.deque(maxlen=L["marks"])
        self.acked: dict[str, dict] = {}   # mark_id -> own mark acknowledged, not yet streamed back
        self.evidence: dict = {}
        self.evidence_t: int | None = None
        self.sources_lost: dict[str, dict] = {}
        self.devices_flagged: dict[str, dict] = {}   # "kind device" -> the last device_changed alert
        self.alerts: collections.deque = collections.deque(maxlen=L["alerts"])
        self.health: dict = {}
        self.health_wall_ns = 0
        self.heads: dict | None = None    # the highest journal chain heads received (health beats)
        self.rewound = ""                 # set when a later beat reported fewer blocks or messages
        self.bad = 0
        self.applied = 0

    # ---------------------------------------------------------------- apply
    def apply(self, m) -> bool:
        """Fold one message in. Returns False when it was ignored (old session, already applied,
        malformed)."""
        if m.session != self.session:
            if m.session in self.old_sessions:
                return False
            self.reset(m.session)
        if m.seq <= self.last_seq:
            return False
        self.last_seq = m.seq
        d = m.data if isinstance(m.data, dict) else {}
        t = _num(m.t_ns) or 0
        if self.first_t is None or t < self.first_t:
            self.first_t = t
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        if _num(m.wall_ns):
            self.wall_minus_t = m.wall_ns - t
        try:
            getattr(self, f"_on_{m.kind}", self._on_other)(t, d)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            self.bad += 1
        self.version += 1
        self.applied += 1
        return True

    def _on_other(self, t: int, d: dict) -> None:
        pass

    def _on_summary(self, t: int, d: dict) -> None:
        self.live = dict(d.get("live") or {})
        self.contact = d.get("contact") if isinstance(d.get("contact"), dict) else None
        self.totals = dict(d.get("session") or {})
        if isinstance(d.get("exam"), dict) and d["exam"]:
            self.exam.update(d["exam"])
        for name, spans in (d.get("spans") or {}).items():
            lane = self.lanes.get(name)
            if lane is not None:
                for s, e in spans:
                    lane.append((int(s), int(e)))
        for ft, cat in d.get("focus") or []:
            self.focus.append((int(ft), str(cat)))
        silence = _num(self.live.get("dead_air_ms")) or 0
        if silence > 0:
            start = t - silence * NS_PER_MS
            if self.dead and abs(self.dead[-1][0] - start) <= 600 * NS_PER_MS:
                self.dead[-1] = (self.dead[-1][0], t)
            else:
                self.dead.append((start, t))

    def _on_contact(self, t: int, d: dict) -> None:
        c = {k: v for k, v in d.items() if k != "spurts"}
        if isinstance(d.get("spurts"), dict):
            c["spurts"] = dict(d["spurts"])
        self.contacts.append(c)
        if c.get("source") == "assessor":
            self.open_markers.pop(c.get("kind"), None)

    def _on_evidence(self, t: int, d: dict) -> None:
        if isinstance(d.get("competences"), dict):
            self.evidence = d["competences"]
            self.evidence_t = t

    def _on_alert(self, t: int, d: dict) -> None:
        typ = d.get("type")
        self.alerts.append({"t_ns": t, **{k: v for k, v in d.items() if isinstance(v, (str, int, float))}})
        if typ == "source_lost":
            self.sources_lost[str(d.get("source"))] = {"since_ns": t, "detail": str(d.get("detail", ""))}
        elif typ == "source_back":
            self.sources_lost.pop(str(d.get("source")), None)
        elif typ == "device_changed":
            key = f"{d.get('kind', '')} {d.get('device', '')}"
            self.devices_flagged.pop(key, None)
            self.devices_flagged[key] = {"t_ns": t, "text": (
                f"{key}: {d.get('state', '')}{'' if d.get('evidence') else ', no evidence'}: {d.get('detail', '')}")}
            while len(self.devices_flagged) > 20:
                self.devices_flagged.pop(next(iter(self.devices_flagged)))

    def _on_mark(self, t: int, d: dict) -> None:
        if d.get("type") == "contact_marker":
            if d.get("action") == "start":
                self.open_markers[str(d.get("kind"))] = {"t_ns": t, "assessor_id": d.get("assessor_id")}
            else:
                self.open_markers.pop(str(d.get("kind")), None)
            self.marks.append({"t_ns": t, "type": "contact", "action": d.get("action"), "kind": d.get("kind"),
                               "assessor_id": d.get("assessor_id", ""), "assessor_name": "", "competence": "",
                               "text": "", "key_fp": str(d.get("key_fp", ""))})
            return
        self.acked.pop(str(d.get("mark_id", "")), None)   # the streamed mark replaces the acknowledged one
        self.marks.append({"t_ns": _num(d.get("t_ns")) or t, "type": "mark", "mark_id": d.get("mark_id", ""),
                           "assessor_id": str(d.get("assessor_id", "")),
                           "assessor_name": str(d.get("assessor_name", "")),
                           "competence": str(d.get("competence", "")), "kind": str(d.get("kind", "")),
                           "text": str(d.get("text", "")), "key_fp": str(d.get("key_fp", ""))})

    def _on_exam(self, t: int, d: dict) -> None:
        self.exam_events.append({"t_ns": t, **d})
        act = d.get("action")
        if act == "assign":
            self.exam["candidate_id"] = d.get("candidate_id", "")
            self.exam["candidate_name"] = d.get("candidate_name", "")
        elif act in ("start", "end"):
            self.exam[f"{act}_ns"] = t

    def _on_health(self, t: int, d: dict) -> None:
        self.health = {k: d.get(k) for k in ("sources", "headset", "software_version", "queue", "journal",
                                             "engine_health") if k in d}
        self.health_wall_ns = time.time_ns()
        h = d.get("chain_heads")
        if isinstance(h, dict) and _num(h.get("blocks")) is not None and _num(h.get("last_seq")) is not None:
            if self.heads and (h["blocks"] < self.heads["blocks"] or h["last_seq"] < self.heads["last_seq"]):
                self.rewound = (f"journal went back from {self.heads['blocks']} to {h['blocks']} blocks, message "
                                f"{self.heads['last_seq']} to {h['last_seq']}: cut or replaced on the station")
                self.alerts.append({"t_ns": t, "type": "journal_rewound", "detail": self.rewound})
            if not self.heads or h["blocks"] >= self.heads["blocks"]:
                self.heads = {"blocks": h["blocks"], "last_seq": h["last_seq"]}

    def acknowledged_mark(self, mark: dict) -> None:
        """This console's own mark, acknowledged by the station as journaled (its ack carries the
        mark's station time): shown at once, without waiting for the round trip through the
        stream; the streamed mark with the same mark_id replaces it (``_on_mark``)."""
        mark_id = str(mark.get("mark_id", ""))
        if not mark_id or any(m.get("mark_id") == mark_id for m in self.marks):
            return
        self.acked[mark_id] = {"t_ns": _num(mark.get("t_ns")) or (self.last_t or 0), "type": "mark",
                               "mark_id": mark_id, "assessor_id": str(mark.get("assessor_id", "")),
                               "assessor_name": str(mark.get("assessor_name", "")),
                               "competence": str(mark.get("competence", "")), "kind": str(mark.get("kind", "")),
                               "text": str(mark.get("text", ""))}
        self.version += 1

    def all_marks(self) -> list[dict]:
        """Streamed marks, then own acknowledged ones not streamed back yet (the newest)."""
        return list(self.marks) + list(self.acked.values())

    # ---------------------------------------------------------------- derived
    def verdicts(self, consensus: bool = False) -> dict[str, dict[str, dict]]:
        """competence -> assessor_id -> latest {verdict, name, t_ns, text, key_fp} of the
        observed/not_observed marks, or (``consensus``) of the consensus marks."""
        kinds = CONSENSUS_KINDS if consensus else ("observed", "not_observed")
        out: dict[str, dict[str, dict]] = {c: {} for c in COMPETENCE_IDS}
        for m in self.all_marks():
            if m["type"] == "mark" and m["kind"] in kinds and m["competence"] in out:
                out[m["competence"]][m["assessor_id"]] = {"verdict": m["kind"].removeprefix("consensus_"),
                                                          "name": m["assessor_name"], "t_ns": m["t_ns"],
                                                          "text": m["text"], "key_fp": m.get("key_fp", "")}
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """C1/C2/C3 -> assessor_id -> count of counter marks."""
        out: dict[str, dict[str, int]] = {c: {} for c in COUNTER_IDS}
        for m in self.all_marks():
            if m["type"] == "mark" and m["kind"] == "counter" and m["competence"] in out:
                by = out[m["competence"]]
                by[m["assessor_id"]] = by.get(m["assessor_id"], 0) + 1
        return out

    def headset_calibrated(self) -> bool | None:
        h = self.health.get("headset")
        if not isinstance(h, dict):
            return None
        return h.get("status") == "ok" and bool(h.get("calibrated")) and h.get("passed", True) is not False


def merge_spans(spans: Iterable, lo: int, hi: int, resolution_ns: int) -> list[list[int]]:
    """Spans clipped to [lo, hi], neighbours closer than resolution_ns merged (drawing detail)."""
    out: list[list[int]] = []
    for s, e in spans:
        if e <= lo or s >= hi:
            continue
        s, e = max(s, lo), min(e, hi)
        if out and s - out[-1][1] <= resolution_ns:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


class Room:
    """All followed stations. ``console``: a consolelib.Console (for connection states and clock);
    ``cfg``: the configuration (thresholds)."""

    def __init__(self, cfg, station_ids: list[str], console=None, limits: dict | None = None):
        self.cfg = cfg
        self.console = console
        self.stations = {sid: StationModel(sid, limits) for sid in station_ids}
        self.applied = 0
        self.ignored = 0
        self.unknown = 0

    def apply(self, messages: Iterable) -> int:
        n = 0
        for m in messages:
            st = self.stations.get(m.station)
            if st is None:
                self.unknown += 1
                continue
            if st.apply(m):
                n += 1
            else:
                self.ignored += 1
        self.applied += n
        return n

    def restore(self, reader) -> int:
        """Rebuild every station's latest session from a ConsoleStore reader. Returns messages."""
        n = 0
        for sid, st in self.stations.items():
            sessions = reader.sessions(sid)
            for s in sessions[:-1]:
                st.old_sessions.add(s["session"])
            if sessions:
                n += self.apply(reader.messages(sid, sessions[-1]["session"]))
        return n

    # ---------------------------------------------------------------- views
    def conn(self, sid: str) -> dict:
        if self.console is None:
            return {"state": "offline", "detail": "", "offset_ns": None, "rtt_ns": None, "last_rx_age_s": None,
                    "snapshot": {}}
        return self.console.state(sid)

    def card(self, sid: str, conn: dict | None = None) -> dict:
        """The room-view card: compact, JSON-ready."""
        st = self.stations[sid]
        c = self.cfg.console
        conn = conn if conn is not None else self.conn(sid)
        age = conn.get("last_rx_age_s")
        silent = age is None or age * 1000 > c.silent_ms
        state = conn.get("state", "offline")
        alerts = []
        if state in ("unauthorised", "refused"):
            alerts.append({"type": state, "text": f"{state}: {conn.get('detail', '')}"})
        elif state == "connecting" and age is None:
            alerts.append({"type": "connecting", "text": "no contact with the station yet"})
        elif silent:
            alerts.append({"type": "silent", "text": f"no data for {age:.1f} s" if age is not None else "no data"})
        for src, info in st.sources_lost.items():
            alerts.append({"type": "source_lost", "text": f"source lost: {src} {info['detail']}".strip()})
        for src, info in ((st.health.get("sources") or {}).items() if isinstance(st.health.get("sources"), dict) else []):
            if isinstance(info, dict) and info.get("state") not in (None, "ok") and src not in st.sources_lost:
                alerts.append({"type": "source_lost", "text": f"source {src}: {info.get('state')}"})
        for info in list(st.devices_flagged.values())[-3:]:   # the latest: a moved stream, a swapped headset
            alerts.append({"type": "device", "text": info["text"][:200]})
        dead_ms = _num(st.live.get("dead_air_ms")) or 0
        if dead_ms >= self.cfg.activity.dead_air_ms and not silent:
            alerts.append({"type": "dead_air", "text": f"dead air now: {dead_ms / 1000:.1f} s"})
        skew = self.clock_skew_ms(sid, conn)
        rtt = conn.get("rtt_ns")
        if skew is not None and abs(skew) > c.clock_warn_ms:
            alerts.append({"type": "clock", "text": f"station clock off by {skew / 1000:+.1f} s"})
        elif rtt is not None and rtt / 2 / NS_PER_MS > c.clock_warn_ms:
            alerts.append({"type": "clock", "text": f"clock estimate uncertain (±{rtt / 2e6:.0f} ms)"})
        inj = st.totals.get("injected_input") or {}
        if isinstance(inj, dict) and (_num(inj.get("keys")) or _num(inj.get("mouse"))):
            alerts.append({"type": "injected", "text": f"synthetic input: {_num(inj.get('keys')) or 0} keys, "
                                                      f"{_num(inj.get('mouse')) or 0} mouse events injected"})
        no_ev = st.totals.get("input_no_evidence")
        if isinstance(no_ev, list) and no_ev:   # devices whose input is counted, never evidence
            alerts.append({"type": "device_no_evidence", "text": "input devices without evidence: "
                           + ", ".join(str(n) for n in no_ev[:5]) + (f" (+{len(no_ev) - 5})" if len(no_ev) > 5 else "")})
        rejected = st.totals.get("agent_voice_rejected_ms") or {}
        if isinstance(rejected, dict):   # heard on the headset microphone, not the candidate's speech
            other, noise = _num(rejected.get("other_voice")) or 0, _num(rejected.get("noise")) or 0
            if other >= VOICE_NOTICE_MS or noise >= VOICE_NOTICE_MS:
                alerts.append({"type": "voice_rejected", "text": f"not counted as the candidate's speech: "
                               f"another voice {other / 1000:.0f} s, noise {noise / 1000:.0f} s"})
        if st.rewound:
            alerts.append({"type": "journal_rewound", "text": st.rewound})
        integ = st.totals.get("integrity") or {}
        if isinstance(integ, dict):
            bad = {k: v for k, v in integ.items() if k != "simulated" and _num(v)}
            if bad:
                alerts.append({"type": "integrity", "text": "hand-over refused/dropped: "
                               + ", ".join(f"{k} {_num(v)}" for k, v in sorted(bad.items()))})
        simulated = bool(st.totals.get("simulated"))
        if simulated:
            alerts.append({"type": "simulated", "text": "SIMULATED: scenario (demo/test) data, not an exam"})
        late = _num(st.totals.get("late_events")) or 0
        if late:   # events older than the watermark: journaled, left out of the figures
            alerts.append({"type": "late", "text": f"{late:.0f} events arrived late (left out of the figures)"})
        cal = st.headset_calibrated()
        if cal is False:
            alerts.append({"type": "headset", "text": "headset not calibrated"})
        contact = None
        if st.contact:
            contact = {"kind": st.contact.get("kind"), "duration_ms": st.contact.get("duration_ms"),
                       "source": st.contact.get("source")}
        s1 = st.totals.get("s1_share")
        s3 = st.totals.get("s3_share")
        return {"id": sid, "state": state, "detail": conn.get("detail", ""), "session": st.session,
                "red": state != "connected" or silent, "simulated": simulated, "last_rx_age_s": age,
                "candidate": {"id": st.exam.get("candidate_id", ""), "name": st.exam.get("candidate_name", "")},
                "exam": {"started": "start_ns" in st.exam, "ended": "end_ns" in st.exam},
                "contact": contact, "live": st.live, "s1_share": s1, "s3_share": s3,
                "contact_s1": (st.contact or {}).get("s1_share"), "contact_s3": (st.contact or {}).get("s3_share"),
                "contacts": len(st.contacts), "alerts": alerts, "version": st.version,
                "offset_ms": None if conn.get("offset_ns") is None else conn["offset_ns"] / 1e6,
                "rtt_ms": None if rtt is None else rtt / 1e6, "skew_ms": skew,
                "headset_calibrated": cal}

    def clock_skew_ms(self, sid: str, conn: dict) -> float | None:
        """Station wall clock minus console wall clock (ms), from the snapshot's anchor and the
        clock-offset estimate; None before both are known."""
        snap = conn.get("snapshot") or {}
        off = conn.get("offset_ns")
        cw, cm = snap.get("created_wall_ns"), snap.get("created_mono_ns")
        if off is None or not isinstance(cw, int) or not isinstance(cm, int):
            return None
        station_wall = cw + (time.monotonic_ns() + off - cm)
        return (station_wall - time.time_ns()) / 1e6

    def detail(self, sid: str, window: str = "last5", width_px: int = 1600) -> dict:
        """The station view: card + timeline lanes for the window ("last5" or "session") +
        contacts, marks, counters, verdicts."""
        st = self.stations[sid]
        out = self.card(sid)
        hi = st.last_t or 0
        lo = (st.first_t or 0) if window == "session" else hi - 300 * NS_PER_S
        out["timeline"] = self.timeline(st, lo, hi, width_px)
        out["contact_now"] = st.contact
        out["contact_list"] = list(st.contacts)[-200:]
        out["open_markers"] = st.open_markers
        out["marks"] = st.all_marks()[-300:]
        out["counters"] = st.counters()
        out["totals"] = st.totals
        out["exam_detail"] = st.exam
        out["health"] = st.health
        return out

    def timeline(self, st: StationModel, lo: int, hi: int, width_px: int = 1600) -> dict:
        res = max(1, (hi - lo) // max(100, width_px))
        lanes = {k: merge_spans(st.lanes[k], lo, hi, res) for k in LANES}
        lanes["dead_air"] = merge_spans(st.dead, lo, hi, res)
        focus = []
        pts = list(st.focus)
        for i, (t, cat) in enumerate(pts):
            end = pts[i + 1][0] if i + 1 < len(pts) else hi
            if end > lo and t < hi:
                s, e = max(t, lo), min(end, hi)
                if focus and focus[-1][2] == cat and s - focus[-1][1] <= res:
                    focus[-1][1] = e
                elif e - s >= res or not focus:
                    focus.append([s, e, cat])
        lanes["focus"] = focus
        contacts = [[c["start_ns"], c["end_ns"], c["kind"]] for c in st.contacts
                    if isinstance(c.get("start_ns"), int) and c.get("end_ns", 0) > lo and c["start_ns"] < hi]
        if st.contact and isinstance(st.contact.get("start_ns"), int):
            contacts.append([max(lo, st.contact["start_ns"]), hi, st.contact.get("kind")])
        lanes["contacts"] = contacts
        return {"start_ns": lo, "end_ns": hi, "lanes": lanes}

    def board(self, sid: str, me: dict | None = None) -> dict:
        """Competence board: the 19 competences with figures, rule, auto, each assessor's verdict
        (with the fingerprint of the key it came with), whether they disagree, the consensus
        marks, proven (``competences.proven``), and the exam's agreement (Cohen's kappa).
        ``me``: {id, name} of the assessor looking (default: the console's configured one)."""
        st = self.stations[sid]
        rows = competence_rows(st)
        me = me or {"id": self.cfg.console.assessor_id, "name": self.cfg.console.assessor_name}
        return {"station": sid, "session": st.session, "candidate": st.exam, "evidence_t_ns": st.evidence_t,
                "me": me["id"], "assessors": assessor_list(st, me), "competences": rows,
                "agreement": exam_agreement({r["id"]: r["verdicts"] for r in rows}), "counters": st.counters()}


def competence_rows(st: StationModel) -> list[dict]:
    """The 19 competences of a station model as the board and the report show them."""
    verdicts, consensus = st.verdicts(), st.verdicts(consensus=True)
    rows = []
    for cid, group, title in COMPETENCES:
        ev = st.evidence.get(cid) or {}
        rows.append({"id": cid, "group": group, "title": title, "figures": ev.get("figures", {}),
                     "figures_text": describe(cid, ev.get("figures", {})),
                     "rule": ev.get("rule", ""), "auto": ev.get("auto"), "verdicts": verdicts[cid],
                     "consensus": consensus[cid], "disagree": disagree(verdicts[cid]),
                     "proven": proven(verdicts[cid], consensus[cid])})
    return rows


def assessor_list(st: StationModel, me: dict | None = None) -> list[dict]:
    """Every assessor seen in the marks (``me`` first): {id, name, keys: [fingerprints]}."""
    out: dict[str, dict] = {}
    if me:
        out[me["id"]] = {"id": me["id"], "name": me.get("name", ""), "keys": []}
    for m in st.marks:
        a = m.get("assessor_id")
        if not a or m["type"] != "mark":
            continue
        e = out.setdefault(a, {"id": a, "name": "", "keys": []})
        if m.get("assessor_name"):
            e["name"] = m["assessor_name"]
        if m.get("key_fp") and m["key_fp"] not in e["keys"]:
            e["keys"].append(m["key_fp"])
    return list(out.values())
