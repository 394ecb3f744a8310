"""Evidence per competence (STANDARD.md): figures, the default rule, and the assessors' marks.

``session_evidence(engine)`` is called after ``Engine.finish``. Every automatic rule gives
evidence, not a verdict: ``auto`` is True/False when the rule can be evaluated on the figures, None
when it needs an assessor (or there is no data). ``proven`` is ``competences.proven``: observed
marks from two different keys and no latest "not_observed", or, after a disagreement, a consensus
of both keys; ``disagree`` says the assessors' latest verdicts differ, ``consensus`` holds each
one's latest consensus mark (the original verdicts stay in ``assessors``).
"""

from __future__ import annotations

import numpy as np

from station import intervals as iv
from station.competences import COMPETENCE_IDS, COMPETENCES, CONSENSUS_KINDS, disagree, proven
from station.engine.figures import CAT_CODES, NS_PER_MIN, NS_PER_MS, spurt_stats
from station.events import KeyClass


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def typed_text(engine) -> str:
    """Text typed in typing_task windows: characters, with backspaces applied there."""
    t, cls = engine.presses.view()
    ft, fc = engine.focus_arrays()
    seq = [(ts, ch) for ts, ch in engine.typed]
    if len(t) and len(ft):
        idx = np.searchsorted(ft, t, side="right") - 1
        cat = np.where(idx >= 0, fc[np.maximum(idx, 0)], 0)
        bs = (cls == KeyClass.BACKSPACE) & (cat == CAT_CODES["typing_task"])
        seq += [(int(x), None) for x in t[bs]]
    seq.sort(key=lambda p: (p[0], p[1] is None))
    out: list[str] = []
    for _, ch in seq:
        if ch is None:
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)


def _rel_diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or max(a, b) <= 0:
        return None
    return abs(a - b) / max(a, b)


def _rate(keys: int, dur_ns: int) -> float | None:
    return None if dur_ns <= 0 else round(keys * NS_PER_MIN / dur_ns, 2)


def after_contact_work(engine, contacts: list[dict]) -> None:
    """Add after_contact_ms and crm_keys_after to each contact (in place): from its end until the
    next contact starts or input (typing or mouse) pauses for activity.after_contact_idle_ms."""
    idle = engine.cfg_activity.after_contact_idle_ms * NS_PER_MS
    active = iv.union(engine.typing.closed.all, engine.mouse.closed.all)
    order = sorted(contacts, key=lambda c: c["start_ns"])
    t, _ = engine.presses.view()
    ft, fc = engine.focus_arrays()
    for k, c in enumerate(order):
        end = c["end_ns"]
        nxt = min((o["start_ns"] for o in order[k + 1:] if o["start_ns"] >= end), default=engine.now)
        cursor, paused = end, False
        for s, e in iv.clip(active, end, nxt).tolist():
            if s - cursor >= idle:
                paused = True
                break
            cursor = max(cursor, e)
        stop = cursor if paused or nxt - cursor >= idle else nxt
        c["after_contact_ms"] = max(0, stop - end) // NS_PER_MS
        i = int(np.searchsorted(t, end, side="left"))
        j = int(np.searchsorted(t, stop, side="left"))
        if len(ft) and j > i:
            idx = np.searchsorted(ft, t[i:j], side="right") - 1
            cats = np.where(idx >= 0, fc[np.maximum(idx, 0)], 0)
            c["crm_keys_after"] = int(np.count_nonzero(cats == CAT_CODES["crm"]))
        else:
            c["crm_keys_after"] = 0


def _marks_by_competence(marks: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {cid: {"assessors": {}, "consensus": {}, "counters": [], "notes": []}
                            for cid in COMPETENCE_IDS}
    for m in sorted(marks, key=lambda m: m["t_ns"]):
        entry = out.get(m["competence"])
        if entry is None:
            continue
        if m["kind"] in ("observed", "not_observed") or m["kind"] in CONSENSUS_KINDS:
            where = "assessors" if m["kind"] in ("observed", "not_observed") else "consensus"
            entry[where][m["assessor_id"]] = {"verdict": m["kind"].removeprefix("consensus_"),
                                              "name": m["assessor_name"], "t_ns": m["t_ns"],
                                              "text": m["text"], "key_fp": m.get("key_fp", "")}
        elif m["kind"] == "counter":
            entry["counters"].append(m)
        elif m["kind"] == "note":
            entry["notes"].append(m)
    return out


def _contact_of(contacts: list[dict], t_ns: int) -> str | None:
    for c in contacts:
        if c["start_ns"] <= t_ns <= c["end_ns"]:
            return c["label"]
    return None


def session_evidence(engine) -> dict:
    """The 19 competences with figures, rule, automatic evaluation and marks."""
    r = engine.cfg_rules
    contacts = engine.contacts
    after_contact_work(engine, contacts)
    for n, c in enumerate(sorted(contacts, key=lambda c: c["start_ns"]), 1):
        c["label"] = f"#{n} {c['kind']}"
    phones = [c for c in contacts if c["kind"] == "phone"]
    chats = [c for c in contacts if c["kind"] in ("chat", "email")]
    tot = lambda key, cs=phones: sum(c["_ns"].get(key, 0) for c in cs)  # noqa: E731
    ev: dict[str, dict] = {}

    def put(cid, figures, rule, auto):
        ev[cid] = {"figures": figures, "rule": rule, "auto": auto}

    s1 = [c["s1_share"] for c in phones if c["s1_share"] is not None]
    put("S1", {"per_contact_share": {c["label"]: c["s1_share"] for c in phones},
               "best_share": max(s1) if s1 else None, "lookups": sum(c["s1_lookups"] for c in phones)},
        f">= {r.s1_min_share:.0%} of conversation time with on-screen information work, in >= 1 contact",
        (max(s1) >= r.s1_min_share) if s1 else None)
    s2ok = [c for c in chats if (c["s2_switches_per_min"] or 0) >= r.s2_min_switches_per_min
            and (c["s2_info_share"] or 0) >= r.s2_min_info_share]
    put("S2", {"per_contact": {c["label"]: {"switches_per_min": c["s2_switches_per_min"],
                                          "info_share": c["s2_info_share"]} for c in chats}},
        f">= {r.s2_min_switches_per_min:g} switch/min and >= {r.s2_min_info_share:.0%} of chat time with information consulted within {r.s2_info_window_ms // 1000} s",
        (len(s2ok) > 0) if chats else None)
    conv = tot("conv")
    s3 = None if conv <= 0 else round(tot("s3_conv") / conv, 4)
    put("S3", {"conversation_share": s3,
               "agent_speech_share": None if tot("agent") <= 0 else round(tot("s3_agent") / tot("agent"), 4),
               "customer_speech_share": None if tot("cust") <= 0 else round(tot("s3_cust") / tot("cust"), 4),
               "conversation_ms": conv // NS_PER_MS},
        f">= {r.s3_min_share:.0%} of conversation time with keyboard or mouse activity",
        (s3 >= r.s3_min_share) if s3 is not None else None)
    talk = _rate(tot("keys_talk"), tot("talk_only"))
    listen = _rate(tot("keys_listen"), tot("listen_only"))
    silence = _rate(tot("keys_silence"), tot("silence"))
    chat_rate = _rate(tot("keys_chat", chats), tot("chan", chats))
    diffs = [d for d in (_rel_diff(talk, listen), _rel_diff(talk, chat_rate)) if d is not None]
    put("S4", {"keys_per_min_talk": talk, "keys_per_min_listen": listen, "keys_per_min_silence": silence,
               "keys_per_min_chat": chat_rate, "largest_relative_difference": round(max(diffs), 4) if diffs else None},
        f"typing rate differs by >= {r.s4_min_rate_diff:.0%} between talking and listening or chat",
        (max(diffs) >= r.s4_min_rate_diff) if diffs else None)
    put("D1", {"tool_time_ms": {c["label"]: c["tool_time_ms"] for c in contacts}},
        "time in tool windows (crm, knowledge, script) > 0 in every contact",
        all(c["tool_time_ms"] > 0 for c in contacts) if contacts else None)
    put("D2", {"knowledge_entries": {c["label"]: c["knowledge_entries"] for c in contacts},
               "knowledge_time_ms": {c["label"]: c["knowledge_time_ms"] for c in contacts}},
        ">= 1 lookup where the contact needs one (assessor confirms)", None)
    put("D3", {"crm_keys": {c["label"]: c["crm_keys"] for c in contacts},
               "crm_keys_after": {c["label"]: c["crm_keys_after"] for c in contacts},
               "after_contact_ms": {c["label"]: c["after_contact_ms"] for c in contacts}},
        "keystrokes into crm during or after every contact > 0",
        all(c["crm_keys"] + c["crm_keys_after"] > 0 for c in contacts) if contacts else None)
    presses = engine.presses.n
    _, cls = engine.presses.view()
    corr = int(np.count_nonzero((cls == KeyClass.BACKSPACE) | (cls == KeyClass.DELETE)))
    put("D4", {"corrections": corr, "keys_pressed": presses,
               "correction_share": round(corr / presses, 4) if presses else None},
        "corrections reported; assessor confirms", None)
    typed = typed_text(engine)
    ref = engine.reference_text
    if ref and typed:
        acc = round(max(0.0, 1 - levenshtein(typed, ref) / len(ref)), 4)
        put("D5", {"accuracy": acc, "estimate": False, "typed_chars": len(typed), "reference_chars": len(ref)},
            f"accuracy >= {r.d5_min_accuracy:.0%} against the reference text (edit distance)", acc >= r.d5_min_accuracy)
    else:
        acc = round(1 - corr / presses, 4) if presses else None
        put("D5", {"accuracy": acc, "estimate": True, "typed_chars": len(typed), "reference_chars": len(ref)},
            f"accuracy >= {r.d5_min_accuracy:.0%}; ESTIMATE from corrections (no typing task with reference)",
            (acc >= r.d5_min_accuracy) if acc is not None else None)
    spurts = iv.EMPTY
    for c in phones:
        spurts = np.concatenate((spurts, engine.agent.within(c["start_ns"], c["end_ns"], True)))
    st = spurt_stats(spurts, r.c5_long_spurt_ms * NS_PER_MS)
    put("C5", st, f"median agent talk spurt <= {r.c5_max_median_spurt_ms / 1000:g} s",
        (st["median_ms"] <= r.c5_max_median_spurt_ms) if st["median_ms"] is not None else None)
    dead_n = sum(c["dead_air_count"] for c in phones)
    put("C6", {"dead_air_count": dead_n, "dead_air_ms": sum(c["dead_air_ms"] for c in phones),
               "longest_ms": max((c["dead_air_longest_ms"] for c in phones), default=0),
               "share_of_conversation": round(tot("dead") / conv, 4) if conv else None},
        f"no dead air >= {engine.cfg_activity.dead_air_ms / 1000:g} s (at most {r.c6_max_dead_air}), or assessor accepts",
        (dead_n <= r.c6_max_dead_air) if phones else None)
    marks = _marks_by_competence(engine.marks)
    for cid in ("C1", "C2", "C3"):
        per = {}
        for m in marks[cid]["counters"]:
            key = _contact_of(contacts, m["t_ns"]) or "outside contacts"
            per.setdefault(key, {}).setdefault(m["assessor_id"], 0)
            per[key][m["assessor_id"]] += 1
        rule = {"C1": "assessor counts reformulations per contact", "C2": "assessor counts clarifying questions per contact",
                "C3": f"counter-arguments per contact <= {r.c3_max_counter}"}[cid]
        auto = None
        if cid == "C3" and per:
            auto = all(n <= r.c3_max_counter for by in per.values() for n in by.values())
        put(cid, {"counters": per}, rule, auto)
    for cid in ("D6", "D7", "C4", "C7", "C8"):
        put(cid, {}, "assessor judgement", None)
    out = {}
    for cid, group, title in COMPETENCES:
        e = ev[cid]
        m = marks[cid]
        is_proven = proven(m["assessors"], m["consensus"])
        out[cid] = {"id": cid, "group": group, "title": title, **e, "assessors": m["assessors"],
                    "consensus": m["consensus"], "disagree": disagree(m["assessors"]),
                    "notes": [{"assessor_id": n["assessor_id"], "text": n["text"], "t_ns": n["t_ns"]} for n in m["notes"]],
                    "proven": is_proven}
    return out
