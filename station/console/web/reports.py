"""The per-candidate report built on the console, from the console store (no journal needed).

``build(reader, cfg, station, session=None, conn=None)`` reads every stored message of one
station session (default: the latest) and returns a JSON-ready dict: candidate and exam, session,
software version, headset calibration status, contacts with figures and SVG-ready timelines, the
19 competences with figures, rule, both assessors' marks and verdicts and "proven", the marks,
and the data gaps. ``render_html`` (printable, inline SVG, no scripts) and ``render_csv`` (one
row per fact: section, item, field, value) format it.

Data gaps reported: (1) sequence ranges the station could not supply (store ``gaps`` table);
(2) silences in the station's 1 Hz health beat longer than ``console.silent_ms`` and 3x the usual
beat interval (station stopped, recorder down, network) plus an ongoing silence at the end when the
station is not connected now; (3) capture sources lost (``source_lost`` .. ``source_back``
alerts). Times are station ns in the JSON plus UTC ISO strings; durations ms.
Raises KeyError for an unknown station or session.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import statistics

from station import __version__, anchors
from station.competences import exam_agreement
from station.console.web.state import NS_PER_MS, Room, StationModel, assessor_list, competence_rows
from station.rendering import LEGEND_CSS, anchor_text, figures_html, fmt_value, timeline_html, words

BIG = {"lane": 10_000_000, "focus": 10_000_000, "dead": 10_000_000, "contacts": 100_000,
       "marks": 1_000_000, "alerts": 100_000}


def _iso(wall_ns: int | None) -> str:
    if wall_ns is None:
        return ""
    return dt.datetime.fromtimestamp(wall_ns / 1e9, dt.timezone.utc).isoformat(timespec="milliseconds")


def build(reader, cfg, station: str, session: str | None = None, conn: dict | None = None, book=None) -> dict:
    sessions = reader.sessions(station)
    if not sessions:
        raise KeyError(f"no data stored for station {station!r}")
    info = sessions[-1] if session is None else next((s for s in sessions if s["session"] == session), None)
    if info is None:
        raise KeyError(f"unknown session {session!r} of station {station!r}")
    session = info["session"]
    msgs = reader.messages(station, session)
    st = StationModel(station, BIG)
    for m in msgs:
        st.apply(m)
    room = Room(cfg, [station])
    room.stations[station] = st
    w = st.wall_minus_t or 0
    wall = lambda t: None if t is None else t + w  # noqa: E731
    lo, hi = st.first_t or 0, st.last_t or 0
    contacts = []
    for n, c in enumerate(sorted(st.contacts, key=lambda c: c.get("start_ns", 0)), 1):
        s, e = c.get("start_ns", lo), c.get("end_ns", hi)
        contacts.append({"n": n, **c, "wall_start": _iso(wall(s)),
                         "timeline": room.timeline(st, s, max(e, s + 1), 4000)})
    comps = competence_rows(st)
    snap = info.get("info") or {}
    gaps = data_gaps(reader, cfg, st, msgs, station, session, conn)
    entry = {"station": station, "heads": [], "final": []}
    for m in msgs:
        if m.kind in ("health", "anchor"):
            anchors.add_message(entry, m.kind, m.data)
    if book is not None and book.records(station, session):
        entry["final"] = book.records(station, session)
    return {
        "report_version": 1,
        "generated_by": {"software_version": __version__, "assessor_id": cfg.console.assessor_id,
                         "assessor_name": cfg.console.assessor_name, "wall": _iso(dt.datetime.now().timestamp() * 1e9)},
        "station": station,
        "session": {"id": session, "start_ns": lo, "end_ns": hi, "wall_start": _iso(wall(lo)),
                    "wall_end": _iso(wall(hi)), "duration_ms": (hi - lo) // NS_PER_MS, "messages": len(msgs),
                    "last_seq": st.last_seq},
        "software_version": {"station": st.health.get("software_version") or snap.get("software_version", ""),
                             "console": __version__, "config_hash": snap.get("config_hash", "")},
        "candidate": {"id": st.exam.get("candidate_id", ""), "name": st.exam.get("candidate_name", "")},
        "exam": {"start_wall": _iso(wall(st.exam.get("start_ns"))), "end_wall": _iso(wall(st.exam.get("end_ns"))),
                 "events": list(st.exam_events)},
        "headset": st.health.get("headset") or {"status": "unknown"},
        "headset_calibrated": st.headset_calibrated(),
        "session_totals": st.totals,
        "contacts": contacts,
        "competences": comps,
        "assessors": assessor_list(st),
        "agreement": exam_agreement({c["id"]: c["verdicts"] for c in comps}),
        "counters": st.counters(),
        "marks": [dict(m, wall=_iso(wall(m["t_ns"]))) for m in st.marks],
        "alerts": list(st.alerts),
        "data_gaps": gaps,
        "anchor": anchors.summary(entry),
        "timeline": room.timeline(st, lo, max(hi, lo + 1), 4000),
    }


def data_gaps(reader, cfg, st: StationModel, msgs, station: str, session: str, conn: dict | None) -> list[dict]:
    w = st.wall_minus_t or 0
    out = []
    for g in reader.gaps(station):
        if g["session"] == session:
            out.append({"kind": "missing messages", "detail": f"seq {g['from_seq']}-{g['to_seq']}: {g['reason']}",
                        "start_ns": None, "duration_ms": None, "wall_start": _iso(g["noted_wall_ns"])})
    ts = sorted(m.t_ns for m in msgs if m.kind == "health")  # the station's 1 Hz beat
    if len(ts) > 2:
        diffs = [b - a for a, b in zip(ts, ts[1:])]
        usual = statistics.median(diffs)
        limit = max(cfg.console.silent_ms * NS_PER_MS, 3 * usual)
        for a, b in zip(ts, ts[1:]):
            if b - a > limit:
                out.append({"kind": "station silent", "detail": "no messages from the station",
                            "start_ns": a, "duration_ms": (b - a) // NS_PER_MS, "wall_start": _iso(a + w)})
    if conn is not None and (conn.get("state") != "connected" or (conn.get("last_rx_age_s") or 0) * 1000 > cfg.console.silent_ms) \
            and conn.get("session") in (None, session):
        age = conn.get("last_rx_age_s")
        out.append({"kind": "station silent (ongoing)", "detail": f"state {conn.get('state')}",
                    "start_ns": st.last_t, "duration_ms": None if age is None else int(age * 1000),
                    "wall_start": _iso((st.last_t or 0) + w)})
    for a in st.alerts:
        if a.get("type") == "journal_rewound":
            out.append({"kind": "journal rewound", "detail": str(a.get("detail", "")), "start_ns": a["t_ns"],
                        "duration_ms": None, "wall_start": _iso(a["t_ns"] + w)})
    lost: dict[str, int] = {}
    for a in st.alerts:
        if a.get("type") == "source_lost":
            lost.setdefault(str(a.get("source")), a["t_ns"])
        elif a.get("type") == "source_back" and str(a.get("source")) in lost:
            s = lost.pop(str(a.get("source")))
            out.append({"kind": "source lost", "detail": str(a.get("source")), "start_ns": s,
                        "duration_ms": (a["t_ns"] - s) // NS_PER_MS, "wall_start": _iso(s + w)})
    for src, s in lost.items():
        out.append({"kind": "source lost", "detail": f"{src} (not back)", "start_ns": s,
                    "duration_ms": ((st.last_t or s) - s) // NS_PER_MS, "wall_start": _iso(s + w)})
    return out


# ------------------------------------------------------------------------------------ HTML
_fmt = fmt_value  # the station report's formatting of figures


STYLE = """
body{font-family:sans-serif;margin:24px;color:#111} table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #bbb;padding:3px 6px;font-size:12px;vertical-align:top;text-align:left} th{background:#eee}
.ok{color:#060} .bad{color:#a00;font-weight:bold} .na{color:#666} h2{margin-top:28px} .note{white-space:pre-wrap;word-break:break-word}
svg{max-width:100%;height:auto}
@media print{ .contact{page-break-inside:avoid} body{margin:8mm} a{display:none} }
""" + LEGEND_CSS


def _gap_text(g: dict) -> str:
    dur = "" if g["duration_ms"] is None else f" for {g['duration_ms'] / 1000:.1f} s"
    return f"{g['kind']}: {g['wall_start']}{dur} {g['detail']}"


def render_html(rep: dict) -> str:
    esc = html.escape
    s, cand = rep["session"], rep["candidate"]
    assessors: dict[str, str] = {}
    for c in rep["competences"]:
        for a, v in c["verdicts"].items():
            assessors[a] = v.get("name") or assessors.get(a) or a
    for m in rep["marks"]:
        if m.get("assessor_id"):
            assessors.setdefault(m["assessor_id"], m.get("assessor_name") or m["assessor_id"])
    keys = {a["id"]: a["keys"] for a in rep.get("assessors", [])}
    ag = rep.get("agreement") or {}
    kappa = "–" if ag.get("kappa") is None else f"{ag['kappa']:.2f}"
    ag_text = (f"{' / '.join(ag.get('raters') or []) or '–'}: {ag.get('agree', 0)} of {ag.get('n', 0)} verdicts alike, "
               f"Cohen's kappa {kappa}" + (f"; disagree on {', '.join(ag['disagreements'])}" if ag.get("disagreements") else ""))
    cal = rep["headset_calibrated"]
    gaps = rep["data_gaps"]
    p = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Candidate report {esc(cand['id'] or rep['station'])}</title><style>{STYLE}</style></head><body>
<h1>Candidate report — {esc(cand['name'] or 'no name')} ({esc(cand['id'] or 'not assigned')})</h1>
<table>
<tr><th>Station</th><td>{esc(rep['station'])}</td></tr>
<tr><th>Session</th><td>{esc(s['id'])} ({s['messages']} messages)</td></tr>
<tr><th>Time (UTC, station clock)</th><td>{esc(s['wall_start'])} – {esc(s['wall_end'])} ({s['duration_ms'] / 60000:.1f} min)</td></tr>
<tr><th>Exam</th><td>start {esc(rep['exam']['start_wall'] or '–')}, end {esc(rep['exam']['end_wall'] or '–')}</td></tr>
<tr><th>Software</th><td>station {esc(str(rep['software_version']['station']))}, console {esc(rep['software_version']['console'])}, config {esc(rep['software_version']['config_hash'][:12])}</td></tr>
<tr><th>Headset calibration</th><td class="{'ok' if cal else 'bad'}">{'calibrated' if cal else 'NOT calibrated' if cal is False else 'unknown'}: {_fmt(rep['headset'])}</td></tr>
<tr><th>Assessors (key fingerprints)</th><td>{esc('; '.join(f"{n} ({a}): {', '.join(keys.get(a) or []) or 'NO KEY (unauthenticated)'}" for a, n in assessors.items()) or '–')}</td></tr>
<tr><th>Agreement</th><td>{esc(ag_text)}</td></tr>
<tr><th>Journal anchor</th><td>{esc(anchor_text(rep['anchor'], None) if rep.get('anchor') else '–')}</td></tr>
<tr><th>Data gaps</th><td class="{'ok' if not gaps else 'bad'}">{'none' if not gaps else '<br>'.join(esc(_gap_text(g)) for g in gaps)}</td></tr>
<tr><th>Report</th><td>generated {esc(rep['generated_by']['wall'])} by {esc(rep['generated_by']['assessor_name'] or rep['generated_by']['assessor_id'])}</td></tr>
</table>
<h2>Competences</h2>
<p>Automatic figures are evidence, not verdicts. A competence is proven only when two assessors, each with their own key, observed it; after a disagreement only when both then agree on a consensus (the original verdicts stay).</p>
<table><tr><th>Id</th><th>Competence</th><th>Figures</th><th>Default rule</th><th>Rule met</th>"""]
    p += [f"<th>{esc(n)}</th>" for n in assessors.values()]
    p.append("<th>Proven</th></tr>")
    for c in rep["competences"]:
        auto = c["auto"]
        cls = "na" if auto is None else ("ok" if auto else "bad")
        cells = []
        for a in assessors:
            v = c["verdicts"].get(a)
            k = (c.get("consensus") or {}).get(a)
            cells.append("<td>–</td>" if v is None else
                         f"<td class='{'ok' if v['verdict'] == 'observed' else 'bad'}'>{esc(v['verdict'].replace('_', ' '))}"
                         f"{'<br><span class=note>' + esc(v['text']) + '</span>' if v.get('text') else ''}"
                         f"{'<br>consensus: ' + esc(k['verdict'].replace('_', ' ')) if k else ''}</td>")
        p.append(f"<tr><td>{esc(c['id'])}</td><td>{esc(c['title'])}</td><td>{figures_html(c['id'], c['figures'])}</td><td>{esc(c['rule'])}</td>"
                 f"<td class='{cls}'>{_fmt(auto) if auto is not None else 'assessor'}</td>{''.join(cells)}"
                 f"<td class='{'ok' if c['proven'] else 'na'}'>{'proven' if c['proven'] else 'not proven'}"
                 f"{' (assessors disagree)' if c.get('disagree') else ''}</td></tr>")
    p.append("</table><h2>Counters</h2><table><tr><th>Counter</th>" + "".join(f"<th>{esc(n)}</th>" for n in assessors.values()) + "</tr>")
    for cid, by in rep["counters"].items():
        p.append(f"<tr><td>{esc(cid)}</td>" + "".join(f"<td>{by.get(a, 0)}</td>" for a in assessors) + "</tr>")
    p.append("</table><h2>Session timeline</h2>" + timeline_html(rep["timeline"]))
    p.append("<h2>Contacts</h2><table><tr><th>#</th><th>Kind</th><th>Start (UTC)</th><th>Duration</th><th>Agent talk</th>"
             "<th>Customer talk</th><th>Dead air (3 s or more)</th><th>Overtalk</th>"
             "<th>S1: on-screen information work, share of conversation</th>"
             "<th>S3: keyboard or mouse, share of conversation</th><th>S2: switches a minute</th><th>Source</th></tr>")
    for c in rep["contacts"]:
        p.append(f"<tr><td>{c['n']}</td><td>{esc(str(c.get('kind')))}</td><td>{esc(c['wall_start'])}</td>"
                 f"<td>{words(c.get('duration_ms') or 0, 'ms')}</td><td>{words(c.get('agent_talk_ms'), 'ms')}</td>"
                 f"<td>{words(c.get('customer_talk_ms'), 'ms')}</td><td>{words(c.get('dead_air_count'), 'count')}</td>"
                 f"<td>{words(c.get('overtalk_count'), 'count')}</td><td>{words(c.get('s1_share'), 'share')}</td>"
                 f"<td>{words(c.get('s3_share'), 'share')}</td>"
                 f"<td>{words(c.get('s2_switches_per_min'), 'count')}</td><td>{esc(str(c.get('source', '')))}</td></tr>")
    p.append("</table>")
    for c in rep["contacts"]:
        p.append(f"<div class='contact'><h3>Contact {c['n']}: {esc(str(c.get('kind')))}, {(c.get('duration_ms') or 0) / 1000:.1f} s</h3>"
                 + timeline_html(c["timeline"]) + "</div>")
    p.append("<h2>Assessor marks</h2><table><tr><th>Time (UTC)</th><th>Assessor</th><th>Key</th><th>Competence</th><th>Kind</th><th>Note</th></tr>")
    for m in rep["marks"]:
        who = m.get("assessor_name") or m.get("assessor_id")
        what = m["kind"] if m["type"] == "mark" else f"contact {m.get('action')}"
        p.append(f"<tr><td>{esc(m['wall'][11:23])}</td><td>{esc(str(who))}</td><td>{esc(m.get('key_fp') or 'none')}</td>"
                 f"<td>{esc(m.get('competence') or '')}</td>"
                 f"<td>{esc(str(what))}</td><td class='note'>{esc(m.get('text') or '')}</td></tr>")
    p.append("</table></body></html>")
    return "\n".join(p)


def render_csv(rep: dict) -> str:
    """Long format: section,item,field,value (one fact per row)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "item", "field", "value"])
    for k, v in (("station", rep["station"]), ("session", rep["session"]["id"]),
                 ("candidate_id", rep["candidate"]["id"]), ("candidate_name", rep["candidate"]["name"]),
                 ("station_software", rep["software_version"]["station"]),
                 ("console_software", rep["software_version"]["console"]),
                 ("headset_calibrated", rep["headset_calibrated"]), ("wall_start", rep["session"]["wall_start"]),
                 ("wall_end", rep["session"]["wall_end"]), ("duration_ms", rep["session"]["duration_ms"])):
        w.writerow(["session", "", k, _csv(v)])
    for c in rep["contacts"]:
        for k, v in c.items():
            if k not in ("timeline", "n"):
                w.writerow(["contact", c["n"], k, _csv(v)])
    for c in rep["competences"]:
        w.writerow(["competence", c["id"], "figures", _csv(c["figures"])])
        w.writerow(["competence", c["id"], "rule", c["rule"]])
        w.writerow(["competence", c["id"], "auto", _csv(c["auto"])])
        for a, v in c["verdicts"].items():
            w.writerow(["competence", c["id"], f"verdict:{a}", v["verdict"]])
            w.writerow(["competence", c["id"], f"key:{a}", v.get("key_fp", "")])
        for a, v in (c.get("consensus") or {}).items():
            w.writerow(["competence", c["id"], f"consensus:{a}", v["verdict"]])
        w.writerow(["competence", c["id"], "disagree", _csv(c.get("disagree"))])
        w.writerow(["competence", c["id"], "proven", _csv(c["proven"])])
    for k, v in (rep.get("agreement") or {}).items():
        w.writerow(["agreement", "", k, _csv(v)])
    for cid, by in rep["counters"].items():
        for a, n in by.items():
            w.writerow(["counter", cid, a, n])
    for i, m in enumerate(rep["marks"], 1):
        for k in ("wall", "t_ns", "type", "assessor_id", "assessor_name", "key_fp", "competence", "kind", "action", "text"):
            if k in m:
                w.writerow(["mark", i, k, _csv(m[k])])
    for i, g in enumerate(rep["data_gaps"], 1):
        for k, v in g.items():
            w.writerow(["data_gap", i, k, _csv(v)])
    for lane, spans in rep["timeline"]["lanes"].items():
        w.writerow(["timeline", lane, "spans", _csv(spans)])
    return buf.getvalue()


def _csv(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    s = str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@") and not _is_number(s) else s  # no spreadsheet formulas


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
