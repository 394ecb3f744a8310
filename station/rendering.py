"""Rendering of reports, shared by the station's report and the console's candidate report:
HTML pages, SVG timelines, figure formatting, the JSON/HTML files.

No computing here: the figures come from ``station.recorder.report`` (from a journal) or the
console's store. Pages carry no scripts and no external resources."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import numpy as np

from station.competences import COMPETENCES
from station.figure_words import describe, duration, pct

NS_PER_S = 1_000_000_000


def iso_utc(wall_ns: int) -> str:
    """A wall-clock time (ns since the epoch) as an ISO 8601 UTC string with milliseconds."""
    return dt.datetime.fromtimestamp(wall_ns / 1e9, dt.timezone.utc).isoformat(timespec="milliseconds")


LANE_ORDER = [("agent", "Agent speech", "#1f77b4"), ("customer", "Customer speech", "#ff7f0e"),
              ("overtalk", "Overtalk", "#d62728"), ("dead_air", "Dead air", "#7f7f7f"),
              ("typing", "Typing", "#2ca02c"), ("mouse", "Mouse", "#9467bd"),
              ("focus", "Focus", None), ("contacts", "Contacts", None), ("unknown", "Data gap", "#000000")]
CAT_COLORS = {"crm": "#17becf", "knowledge": "#bcbd22", "script": "#8c564b", "chat": "#e377c2",
              "email": "#ff9896", "typing_task": "#98df8a", "other": "#dddddd"}
KIND_COLORS = {"phone": "#1f77b4", "chat": "#e377c2", "email": "#ff9896"}
CAT_LABELS = {"crm": "CRM", "knowledge": "Knowledge base", "script": "Script", "chat": "Chat",
              "email": "E-mail", "typing_task": "Typing task", "other": "Other window"}
KIND_LABELS = {"phone": "phone call", "chat": "chat", "email": "e-mail"}
UNOBSERVED = "#cccccc"   # a focus span whose category is not a configured one ("unknown": focus not observed)
LEGEND_CSS = (".legend{font:11px sans-serif;margin:2px 0 12px}.legend .entry{display:inline-block;margin-right:10px}"
              ".legend .sw{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:-1px;"
              "border:1px solid #999}.legend b{font-weight:600;margin-right:4px}")


def legend_html(tl: dict) -> str:
    """The legend of a timeline (``svg_timeline``): each lane's colour, the focus lane's window
    categories in their colours, the contact kinds. ``data-legend`` attributes name each entry
    (lane key, ``focus:<category>``, ``contact:<kind>``) for tests and styling."""
    esc = html.escape

    def sw(key: str, color: str, label: str) -> str:
        return (f'<span class="entry" data-legend="{esc(key)}" data-color="{color}">'
                f'<span class="sw" style="background:{color}"></span>{esc(label)}</span>')

    lanes = [k for k, _, _ in LANE_ORDER if k in tl.get("lanes", {})]
    out = ['<div class="legend" role="note" aria-label="timeline legend">']
    out += [sw(k, c, name) for k, name, c in LANE_ORDER if k in lanes and c is not None]
    if "focus" in lanes:
        out.append("<br><b>Focus:</b>" + "".join(sw(f"focus:{c}", col, CAT_LABELS[c]) for c, col in CAT_COLORS.items())
                   + sw("focus:unknown", UNOBSERVED, "not observed"))
    if "contacts" in lanes:
        out.append("<b>Contacts:</b>" + "".join(sw(f"contact:{k}", col, KIND_LABELS[k]) for k, col in KIND_COLORS.items()))
    out.append("</div>")
    return "".join(out)


def timeline_html(tl: dict, width: int = 960) -> str:
    """A timeline with its legend below it."""
    return svg_timeline(tl, width) + legend_html(tl)


def figures_html(cid: str, figures: dict | None) -> str:
    """The figures of a competence in words (``station.figure_words``), one per line, escaped."""
    lines = describe(cid, figures)
    return "<br>".join(html.escape(x) for x in lines) if lines else "–"


def words(v, kind: str) -> str:
    """A contact figure in words: kind "ms" (a duration), "share" (a percentage), "count"."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return fmt_value(v)
    return duration(v) if kind == "ms" else pct(v) if kind == "share" else f"{v:g}" if kind == "count" else fmt_value(v)


def svg_timeline(tl: dict, width: int = 960) -> str:
    lo, hi = tl["start_ns"], tl["end_ns"]
    span = max(1, hi - lo)
    label_w, lane_h = 120, 16
    lanes = [(k, name, color) for k, name, color in LANE_ORDER if k in tl["lanes"]]
    height = lane_h * len(lanes) + 22
    scale = (width - label_w - 10) / span
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">']
    for row, (key, name, color) in enumerate(lanes):
        y = row * lane_h + 2
        out.append(f'<text x="0" y="{y + 11}" font-size="11" font-family="sans-serif">{html.escape(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{width - label_w - 10}" height="{lane_h - 4}" fill="#f4f4f4"/>')
        for item in tl["lanes"][key]:
            s, e = item[0], item[1]
            fill = color
            title = ""
            if key == "focus":
                fill, title = CAT_COLORS.get(item[2], UNOBSERVED), item[2]
            elif key == "contacts":
                fill, title = KIND_COLORS.get(item[2], "#333"), item[2]
            x = label_w + (s - lo) * scale
            w = max(0.5, (e - s) * scale)
            tip = f"<title>{html.escape(title)} {(s - lo) / NS_PER_S:.1f}-{(e - lo) / NS_PER_S:.1f} s</title>"
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 4}" fill="{fill}">{tip}</rect>')
    y = len(lanes) * lane_h + 14
    dur_s = span / NS_PER_S
    step = next(s for s in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200) if dur_s / s <= 12)
    t = 0
    while t <= dur_s:
        x = label_w + t * NS_PER_S * scale
        lab = f"{t // 60}:{t % 60:02d}" if step < 60 else f"{t // 60} min"
        out.append(f'<text x="{x:.1f}" y="{y}" font-size="10" font-family="sans-serif">{lab}</text>')
        t += step
    out.append("</svg>")
    return "".join(out)


def fmt_value(v) -> str:
    """A figure as escaped HTML text: None -> "–", booleans yes/no, floats to 3 digits, maps and
    lists flattened."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return "; ".join(f"{html.escape(str(k))}: {fmt_value(x)}" for k, x in v.items()) or "–"
    if isinstance(v, list):
        return ", ".join(fmt_value(x) for x in v) or "–"
    return html.escape(str(v))


_fmt = fmt_value


def anchor_text(a: dict | None, problems: list[str] | None) -> str:
    """One line on the anchors a journal was checked against (``a`` None: not checked;
    ``problems`` None: what a console holds, nothing compared)."""
    if a is None:
        return "not checked against a console's anchors (station report --against STORE)"
    if not a["heads_received"] and not a["final"]:
        return "NO ANCHOR: the given store knows nothing of this session"
    last = a["latest"] or {}
    f = a["final"]
    verb = "this console holds" if problems is None else "agrees with" if not problems else "DIFFERS from"
    text = (f"{verb} {a['heads_received']} chain heads received from the station "
            f"(latest: {last.get('blocks', '–')} blocks, message {last.get('last_seq', '–')})")
    if f:
        text += (f"; exam-end anchor {f['blocks']} blocks / message {f['last_seq']}, station signature "
                 f"{'valid' if f['station_signature_ok'] else 'INVALID' if f.get('sign_key') else 'none (station without a key: demo)'}, countersigned by "
                 f"{', '.join(f['countersigned_by']) or 'no console'}")
    return text


def agreement_text(ag: dict) -> str:
    """One line: the two assessors' agreement over the competences (Cohen's kappa)."""
    if not ag or not ag.get("n"):
        return "no competence rated by two assessors"
    kappa = "undefined (one verdict throughout)" if ag["kappa"] is None else f"{ag['kappa']:.2f}"
    out = f"{' / '.join(ag['raters'])}: {ag['agree']} of {ag['n']} verdicts alike, Cohen's kappa {kappa}"
    return out + (f"; disagree on {', '.join(ag['disagreements'])}" if ag.get("disagreements") else "")
SIMULATED_BANNER = ('<p class="bad" style="font-size:18px;border:3px solid #a00;padding:8px">SIMULATED: this '
                    'session was fed by scenario (demo/test) sources. It is not an exam record.</p>')


def _security_text(sec: dict) -> str:
    """The report's hand-over security row: none, or every refusal and drop with its time."""
    if not sec["counts"]:
        return "nothing refused or dropped"
    head = "; ".join(f"{html.escape(k)}: {v}" for k, v in sorted(sec["counts"].items()))
    rows = "<br>".join(html.escape(f"{e['wall'][11:23]} {e['kind']} x{e['count']}: {e['detail']}") for e in sec["events"][:200])
    more = f"<br>... and {len(sec['events']) - 200} more" if len(sec["events"]) > 200 else ""
    return f"{head}<br>{rows}{more}"


def _devices_text(dev: dict) -> str:
    """The report's devices row: each device's last identity and evidence, then every change."""
    def ident(d: dict) -> str:
        hw = " ".join(x for x in (d.get("bus", ""), ":".join(v for v in (d.get("vendor", ""), d.get("product", "")) if v),
                                  d.get("serial", "")) if x) or ("virtual" if d.get("virtual") else "no identity")
        return f"{d['kind']} {d['device']} ({d.get('name', '')}; {hw})"
    rows = [html.escape(f"{ident(d)}: {d['state']}, {'evidence' if d['evidence'] else 'NO EVIDENCE'}"
                        + (f" ({d['detail']})" if d.get("detail") else "")) for d in dev.get("last", [])[:50]]
    rows += [html.escape(f"{c['wall'][11:23]} {c['state']} {ident(c)}: {c.get('detail', '')}")
             for c in dev.get("changes", [])[:200]]
    return "<br>".join(rows) or "none reported"


def _software_text(sec: dict) -> str:
    rec = sec.get("recorder_software") or {}
    text = f"recorder: station {rec.get('version', '?')} sha256 {str(rec.get('sha256', '?'))[:12]}"
    if rec.get("writable_by_others"):
        text += " (WRITABLE BY OTHERS: " + "; ".join(rec["writable_by_others"][:3]) + ")"
    links = sec.get("capture_links") or []
    text += "; capture: " + ("; ".join(links[:5]) if links else "never connected (or in the recorder's process)")
    return html.escape(text)


def _devices_summary(dev: dict | None) -> str:
    if not dev or not dev.get("devices"):
        return "no input devices announced (an older capture, or none read)"
    n, bad = len(dev["devices"]), dev.get("without_evidence") or []
    text = f"{n} device(s), {n - len(bad)} giving evidence"
    if bad:
        text += f"; without evidence: {', '.join(bad)}"
    return text


def input_devices_html(dev: dict | None) -> str:
    """The report's "Input devices" section: every input device with identity, virtual,
    evidence and why; the set at exam start; input counted as not evidence."""
    if not dev or not dev.get("devices"):
        return ""
    esc = html.escape
    rows = []
    for d in dev["devices"]:
        ident = f"{d['vendor']}:{d['product']}" if d["vendor"] or d["product"] else "–"
        rows.append(f"<tr><td>{esc(d['device'])}</td><td>{esc(d['name'])}</td><td>{esc(d['bus'] or '–')}</td>"
                    f"<td>{esc(ident)}</td><td>{esc(d['phys'] or '–')}</td><td>{'yes' if d['virtual'] else 'no'}</td>"
                    f"<td class='{'ok' if d['evidence'] else 'bad'}'>{'yes' if d['evidence'] else 'no'}</td>"
                    f"<td>{esc(d['detail'])}</td><td>{esc(d['state'])} {esc(d['wall'][11:19])}</td></tr>")
    start = dev.get("at_exam_start")
    start_text = ("exam not started" if start is None else
                  ", ".join(f"{d['name']} ({'evidence' if d['evidence'] else 'NO evidence'})" for d in start) or "none")
    ne = dev.get("not_evidence_input") or {}
    return ("<h2>Input devices</h2><p>Only devices with evidence count toward any figure; input from the "
            f"others is journaled and counted: {int(ne.get('keys', 0))} key presses, {int(ne.get('mouse', 0))} "
            f"mouse events. At exam start: {esc(start_text)}.</p>"
            "<table><tr><th>Device</th><th>Name</th><th>Bus</th><th>Vendor:product</th><th>Phys</th>"
            "<th>Virtual</th><th>Evidence</th><th>Why</th><th>Last change (UTC)</th></tr>" + "".join(rows) + "</table>")


def voice_rejected_text(rejected: dict) -> str:
    """The report's line on the headset microphone's frames that the voice detector called speech
    and the station did not count as the candidate's (``voice_rejected``: other_voice_ms, noise_ms)."""
    other, noise = int(rejected.get("other_voice_ms", 0)), int(rejected.get("noise_ms", 0))
    if not other and not noise:
        return "none: every frame the voice detector called speech counted as the candidate's"
    return (f"another voice, far below the candidate's own level (e.g. a neighbour), heard for "
            f"{other / 1000:.1f} s; noise above the room's noise floor that the voice detector took for "
            f"speech, {noise / 1000:.1f} s. Neither counts as the candidate's talk time.")


def render_html(rep: dict) -> str:
    s = rep["session"]
    e = rep["exam"]
    esc = html.escape
    integ = rep["integrity"]
    parts = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Station report {esc(s['station_id'])} {esc(s['session_id'])}</title>
<style>
body{{font-family:sans-serif;margin:24px;color:#111}} table{{border-collapse:collapse;margin:8px 0 16px}}
td,th{{border:1px solid #bbb;padding:3px 6px;font-size:12px;vertical-align:top}} th{{background:#eee}}
.ok{{color:#060}} .bad{{color:#a00;font-weight:bold}} .na{{color:#666}} h2{{margin-top:28px}}
{LEGEND_CSS}
@media print{{ .contact{{page-break-inside:avoid}} body{{margin:8mm}} }}
</style></head><body>
<h1>Assessment record — {esc(s['station_id'])}</h1>
{SIMULATED_BANNER if rep.get('security', {}).get('simulated') else ''}
<table>
<tr><th>Candidate</th><td>{esc(e.get('candidate_name', '') or '–')} ({esc(e.get('candidate_id', '') or 'not assigned')})</td></tr>
<tr><th>Session</th><td>{esc(s['session_id'])}</td></tr>
<tr><th>Time (UTC)</th><td>{esc(s['wall_start'])} – {esc(s['wall_end'])} ({s['duration_ms'] // 60000} min)</td></tr>
<tr><th>Software</th><td>station {esc(rep['software_version'])} (session recorded with {esc(s['session_software_version'])}), config {esc(s['config_hash'][:12])}</td></tr>
<tr><th>Headset calibration</th><td>{_fmt(rep['headset'])}</td></tr>
<tr><th>Voices not counted</th><td>{esc(voice_rejected_text(rep.get('voice_rejected') or {}))}</td></tr>
<tr><th>Integrity</th><td class="{'ok' if integ['ok'] else 'bad'}">{'journal intact, replay reproduces the published figures' if integ['ok'] else esc('; '.join(integ['journal_problems'] + integ.get('anchor_problems', []) + integ['replay_mismatches'])[:2000])}</td></tr>
<tr><th>Anchor (consoles)</th><td class="{'na' if integ.get('anchor') is None else 'ok' if not integ.get('anchor_problems') else 'bad'}">{esc(anchor_text(integ.get('anchor'), integ.get('anchor_problems') or []))}</td></tr>
<tr><th>Agreement</th><td>{esc(agreement_text(rep.get('agreement') or {}))}</td></tr>
<tr><th>Synthetic input</th><td class="{'ok' if not (rep['synthetic_input']['keys'] or rep['synthetic_input']['mouse']) else 'bad'}">{'none detected' if not (rep['synthetic_input']['keys'] or rep['synthetic_input']['mouse']) else esc(f"{rep['synthetic_input']['keys']} key presses and {rep['synthetic_input']['mouse']} mouse events came from devices without evidence (XTEST, uinput, off the allow-list), first at {rep['synthetic_input']['first_wall']}; left out of every figure")}</td></tr>
<tr><th>Input devices</th><td class="{'ok' if not rep.get('input_devices', {}).get('without_evidence') else 'bad'}">{esc(_devices_summary(rep.get('input_devices')))}</td></tr>
<tr><th>Hand-over security</th><td class="{'ok' if not rep['security']['counts'] else 'bad'}">{_security_text(rep['security'])}</td></tr>
<tr><th>Devices</th><td class="{'ok' if rep.get('devices', {}).get('ok', True) else 'bad'}">{_devices_text(rep.get('devices') or {})}</td></tr>
<tr><th>Code identity</th><td>{_software_text(rep['security'])}</td></tr>
<tr><th>Late events</th><td class="{'ok' if not rep.get('late_events', {}).get('count') else 'bad'}">{'none' if not rep.get('late_events', {}).get('count') else esc(f"{rep['late_events']['count']} measurements arrived after the station had declared their time complete (first at {rep['late_events']['first_wall']}); journaled, left out of the figures: {_fmt(rep['late_events']['streams'])}")}</td></tr>
<tr><th>Data gaps</th><td class="{'ok' if not rep['data_gaps'] else 'bad'}">{'none' if not rep['data_gaps'] else '<br>'.join(esc(f"{g['source']}: {g['wall_start']} for {g['duration_ms'] / 1000:.1f} s") for g in rep['data_gaps'])}</td></tr>
</table>
<h2>Competences</h2>
<p>Automatic figures are evidence, not verdicts. A competence is proven only when both assessors agree.</p>
<table><tr><th>Id</th><th>Competence</th><th>Figures</th><th>Default rule</th><th>Rule met</th><th>Assessors</th><th>Proven</th></tr>"""]
    for cid, _, _ in COMPETENCES:
        c = rep["competences"][cid]
        auto = c["auto"]
        cls = "na" if auto is None else ("ok" if auto else "bad")
        ass = "<br>".join(f"{esc(v['name'] or a)}: {esc(v['verdict'])} (key {esc(v.get('key_fp') or 'none')})"
                          for a, v in c["assessors"].items()) or "–"
        ass += "".join(f"<br>consensus {esc(v['name'] or a)}: {esc(v['verdict'])}" for a, v in c.get("consensus", {}).items())
        parts.append(f"<tr><td>{cid}</td><td>{esc(c['title'])}</td><td>{figures_html(cid, c['figures'])}</td>"
                     f"<td>{esc(c['rule'])}</td><td class='{cls}'>{_fmt(auto) if auto is not None else 'assessor'}</td>"
                     f"<td>{ass}</td><td class='{'ok' if c['proven'] else 'na'}'>{'proven' if c['proven'] else 'not proven'}</td></tr>")
    parts.append("</table>" + input_devices_html(rep.get("input_devices")))
    parts.append("<h2>Session timeline</h2>" + timeline_html(rep["timeline"]))
    parts.append("<h2>Contacts</h2><table><tr><th>#</th><th>Kind</th><th>Start (UTC)</th><th>Duration</th>"
                 "<th>Agent talk</th><th>Customer talk</th><th>Dead air (3 s or more)</th><th>Overtalk</th>"
                 "<th>S1: on-screen information work, share of conversation</th>"
                 "<th>S3: keyboard or mouse, share of conversation</th>"
                 "<th>S2: switches a minute</th><th>Source</th></tr>")
    for n, c in enumerate(rep["contacts"], 1):
        parts.append(f"<tr><td>{n}</td><td>{esc(c['kind'])}</td><td>{esc(c['wall_start'])}</td>"
                     f"<td>{words(c['duration_ms'], 'ms')}</td><td>{words(c.get('agent_talk_ms'), 'ms')}</td>"
                     f"<td>{words(c.get('customer_talk_ms'), 'ms')}</td><td>{words(c.get('dead_air_count'), 'count')}</td>"
                     f"<td>{words(c.get('overtalk_count'), 'count')}</td><td>{words(c.get('s1_share'), 'share')}</td>"
                     f"<td>{words(c.get('s3_share'), 'share')}</td><td>{words(c.get('s2_switches_per_min'), 'count')}</td>"
                     f"<td>{esc(c['source'])}</td></tr>")
    parts.append("</table>")
    for n, c in enumerate(rep["contacts"], 1):
        parts.append(f"<div class='contact'><h3>Contact {n}: {esc(c['kind'])}, {c['duration_ms'] / 1000:.1f} s</h3>"
                     + timeline_html(c["timeline"]) + "</div>")
    if rep["marks"]:
        parts.append("<h2>Assessor marks</h2><table><tr><th>Time (UTC)</th><th>Assessor</th><th>Key</th><th>Competence</th><th>Kind</th><th>Note</th></tr>")
        for m in rep["marks"]:
            parts.append(f"<tr><td>{esc(iso_utc(rep['session']['wall_start_ns'] + m['t_ns'] - s['start_ns'])[11:23])}</td><td>{esc(m['assessor_name'] or m['assessor_id'])}</td>"
                         f"<td>{esc(m.get('key_fp') or 'none')}</td><td>{esc(m['competence'])}</td><td>{esc(m['kind'])}</td><td>{esc(m['text'])}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o).__name__)


def write_report(rep: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into out_dir (created). Returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, hp = out_dir / "report.json", out_dir / "report.html"
    jp.write_text(json.dumps(rep, indent=1, default=_json_default))
    hp.write_text(render_html(rep))
    return jp, hp
