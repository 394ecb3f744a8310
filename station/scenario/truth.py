"""Ground truth of a scenario, computed from its plan (no audio, no VAD).

Times are absolute station-clock ns (the scenario's ``start_ns`` included). The definitions are the
metrics engine's (STANDARD.md), with thresholds from the configuration (``[activity]``):

- agent/customer speech: the planned utterances;
- phone contact: first to last speech of either party in the call;
- chat contact: first focus into the chat window to the last focus out of it;
- typing burst: presses with gaps <= typing_burst_gap_ms, first press to last release;
- mouse active: each bin and click is [t, t + 10 ms); spans merged when gaps <= mouse_active_gap_ms;
- dead air: gaps >= dead_air_ms in (agent | customer) inside a phone contact;
- overtalk: agent & customer intervals >= overtalk_min_ms (overtalk_ms sums those);
- s3 shares: |party & (typing | mouse)| / |party| inside the contact;
- s1 share: |conversation & info_work| / |conversation|, info_work = (typing | mouse) & focus in
  activity.info_categories;
- typing accuracy: 1 - levenshtein(typed_final, reference) / len(reference).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from station import intervals as iv
from station.engine.evidence import levenshtein  # the engine's own definition (D5)
from station.events import KeyClass
from station.scenario.plan import AGENT, CUSTOMER, Plan, apply_backspaces

MS = 1_000_000
MOUSE_BIN_NS = 10 * MS


def typing_bursts(press_release_ns: list[tuple[int, int]], gap_ns: int) -> np.ndarray:
    """Key strokes (press, release) sorted by press -> bursts [first press, last release)."""
    out = []
    cur = None
    for p, r in press_release_ns:
        if cur is not None and p - cur[2] <= gap_ns:
            cur[1] = max(cur[1], r)
            cur[2] = p
        else:
            if cur is not None:
                out.append((cur[0], cur[1]))
            cur = [p, r, p]
    if cur is not None:
        out.append((cur[0], cur[1]))
    return iv.normalize(out)


def mouse_spans(times_ns: list[int], gap_ns: int) -> np.ndarray:
    """Mouse bins/clicks at times -> [t, t + 10 ms) merged across gaps <= gap_ns."""
    spans = iv.normalize([(t, t + MOUSE_BIN_NS) for t in times_ns])
    return iv.bridge(spans, gap_ns + 1)


def focus_intervals(focus: list[tuple[int, str]], end_ns: int, keep: Callable[[str], bool]) -> np.ndarray:
    """Time during which the focused window's category satisfies keep()."""
    pairs = []
    for (t, cat), nxt in zip(focus, focus[1:] + [(end_ns, "")]):
        if keep(cat):
            pairs.append((t, nxt[0]))
    return iv.normalize(pairs)


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def compute_truth(plan: Plan, cfg, start_ns: int, focus_categories: list[str]) -> dict[str, Any]:
    """The truth dict of ``Scenario.truth()``; focus_categories: category of each plan.focus entry."""
    act = cfg.activity
    end_ns = start_ns + plan.duration_ms * MS
    ns = lambda ms: start_ns + ms * MS  # noqa: E731
    agent = iv.normalize([(ns(u.start_ms), ns(u.end_ms)) for u in plan.utterances if u.party == AGENT])
    customer = iv.normalize([(ns(u.start_ms), ns(u.end_ms)) for u in plan.utterances if u.party == CUSTOMER])
    keys = [(ns(k.press_ms), ns(k.release_ms)) for k in plan.keys]
    typing = typing_bursts(keys, act.typing_burst_gap_ms * MS)
    mouse_times = sorted([ns(t) for t, _, _ in plan.mouse_bins] + [ns(t) for t, _, _ in plan.clicks])
    mouse = mouse_spans(mouse_times, act.mouse_active_gap_ms * MS)
    activity = iv.union(typing, mouse)
    focus = [(ns(t), cat) for (t, _, _), cat in zip(plan.focus, focus_categories)]
    info_cats = set(act.info_categories)
    info_focus = focus_intervals(focus, end_ns, lambda c: c in info_cats)
    info_work = iv.intersect(activity, info_focus)

    contacts = []
    for c in plan.contacts:
        lo, hi = ns(c.start_ms), ns(c.end_ms)
        a = iv.clip(agent, lo, hi)
        cu = iv.clip(customer, lo, hi)
        conv = iv.union(a, cu)
        entry: dict[str, Any] = {"kind": c.kind, "start_ns": lo, "end_ns": hi}
        if c.kind == "phone":
            gaps = iv.complement(conv, lo, hi)
            dead = iv.at_least(gaps, act.dead_air_ms * MS)
            over = iv.at_least(iv.intersect(a, cu), act.overtalk_min_ms * MS)
            entry.update(
                agent_talk_ms=iv.measure(a) // MS, customer_talk_ms=iv.measure(cu) // MS,
                dead_air_count=len(dead), dead_air_ms=iv.measure(dead) // MS,
                overtalk_count=len(over), overtalk_ms=iv.measure(over) // MS,
                s3_agent_share=_share(iv.overlap(a, activity), iv.measure(a)),
                s3_customer_share=_share(iv.overlap(cu, activity), iv.measure(cu)),
                s1_share=_share(iv.overlap(conv, info_work), iv.measure(conv)))
        else:
            entry.update(agent_talk_ms=0, customer_talk_ms=0, dead_air_count=0, dead_air_ms=0,
                         overtalk_count=0, overtalk_ms=0, s3_agent_share=0.0, s3_customer_share=0.0,
                         s1_share=0.0)
        contacts.append(entry)

    task_keys = [k for k, cat in zip(plan.keys, _categories_at([k.press_ms for k in plan.keys], plan,
                                                               focus_categories)) if cat == "typing_task"]
    typed = apply_backspaces(task_keys)
    ref = plan.reference
    accuracy = 1.0 - levenshtein(typed, ref) / len(ref) if ref else 0.0
    pairs = lambda a: [[int(s), int(e)] for s, e in a]  # noqa: E731
    return {
        "contacts": contacts,
        "agent_speech": pairs(agent),
        "customer_speech": pairs(customer),
        "typing_bursts": pairs(typing),
        "mouse_active": pairs(mouse),
        "focus": [[t, cat] for t, cat in focus],
        "typing_task": {"reference": ref, "typed": typed, "accuracy": accuracy},
        "keys_pressed": len(plan.keys),
        "corrections": sum(1 for k in plan.keys if k.key_class in (KeyClass.BACKSPACE, KeyClass.DELETE)),
    }


def _categories_at(times_ms: list[int], plan: Plan, focus_categories: list[str]) -> list[str]:
    """Focus category in effect at each time (the last focus change at or before it)."""
    starts = np.array([f[0] for f in plan.focus], dtype=np.int64)
    idx = np.searchsorted(starts, np.asarray(times_ms, dtype=np.int64), side="right") - 1
    return [focus_categories[i] if i >= 0 else "other" for i in idx]
