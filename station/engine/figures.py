"""Evidence figures of STANDARD.md for one window of time (a contact, or the whole session).

``window_figures`` is a pure function of interval sets and key presses restricted to the window.
Durations are integer milliseconds (floor of integer ns totals); shares are ratios of integer ns
totals rounded to 4 decimals (None when the denominator is 0); rates are per minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from station import intervals as iv
from station.events import KeyClass

NS_PER_MS = 1_000_000
NS_PER_MIN = 60_000_000_000


def ms(ns: int) -> int:
    return int(ns) // NS_PER_MS


def share(num_ns: int, den_ns: int) -> float | None:
    return None if den_ns <= 0 else round(num_ns / den_ns, 4)


def per_minute(count: int, dur_ns: int) -> float | None:
    return None if dur_ns <= 0 else round(count * NS_PER_MIN / dur_ns, 2)


@dataclass
class WindowData:
    """Everything the figures need, already clipped to [lo, hi).

    agent, customer, typing, mouse: activity spans. focus: dict category -> spans.
    presses: (t, key_class, category) arrays of key presses in the window.
    unknown: spans where a source was lost (data unknown).
    """

    kind: str
    lo: int
    hi: int
    agent: np.ndarray
    customer: np.ndarray
    typing: np.ndarray
    mouse: np.ndarray
    focus: dict[str, np.ndarray]
    press_t: np.ndarray
    press_class: np.ndarray
    press_cat: np.ndarray
    focus_entries: dict[str, int]
    switches_chat_info: int
    unknown: np.ndarray


def _points_in(t: np.ndarray, spans: np.ndarray) -> int:
    if len(t) == 0 or len(spans) == 0:
        return 0
    lo = np.searchsorted(t, spans[:, 0], side="left")
    hi = np.searchsorted(t, spans[:, 1], side="left")
    return int(np.sum(hi - lo))


def _union_of(focus: dict[str, np.ndarray], cats) -> np.ndarray:
    out = iv.EMPTY
    for c in cats:
        if c in focus:
            out = iv.union(out, focus[c])
    return out


def spurt_stats(spurts: np.ndarray, long_ns: int) -> dict:
    lens = iv.lengths(spurts)
    if len(lens) == 0:
        return {"count": 0, "median_ms": None, "p90_ms": None, "long_share": None}
    s = np.sort(lens)
    # nearest-rank percentiles on integers: exact and batch-independent
    med = int(s[(len(s) - 1) // 2]) if len(s) % 2 else int((int(s[len(s) // 2 - 1]) + int(s[len(s) // 2])) // 2)
    p90 = int(s[max(0, int(np.ceil(0.9 * len(s))) - 1)])
    return {"count": int(len(s)), "median_ms": ms(med), "p90_ms": ms(p90),
            "long_share": round(int(np.count_nonzero(s > long_ns)) / len(s), 4)}


LIVE_FIGURES = {"phone": ("s1_share", "s3_share", "agent_talk_ms", "customer_talk_ms", "dead_air_count"),
                "chat": ("s2_switches_per_min", "s2_info_share"), "email": ("s2_switches_per_min", "s2_info_share")}


def window_figures(w: WindowData, cfg_activity, cfg_rules, info_cats: tuple[str, ...], live: bool = False) -> dict:
    """All figures for one window. cfg_activity / cfg_rules: the config sections.

    live=True: only the figures of LIVE_FIGURES[w.kind] (a summary's current contact), computed
    by the same lines as the full set, without the cost of the others."""
    dur = w.hi - w.lo
    input_active = iv.union(w.typing, w.mouse)
    info_focus = _union_of(w.focus, info_cats)
    if w.kind == "phone":
        talk = iv.union(w.agent, w.customer)
        conv = talk
        silence = iv.complement(talk, w.lo, w.hi)
        dead = iv.at_least(silence, cfg_activity.dead_air_ms * NS_PER_MS)
        conv_ns = iv.measure(conv)
        agent_ns = iv.measure(w.agent)
        cust_ns = iv.measure(w.customer)
        info_work = iv.intersect(input_active, info_focus)
        info_during = iv.intersect(conv, info_work)
        s3_conv = iv.overlap(conv, input_active)
        phone = {"agent_talk_ms": ms(agent_ns), "customer_talk_ms": ms(cust_ns), "dead_air_count": int(len(dead)),
                 "s1_share": share(iv.measure(info_during), conv_ns), "s3_share": share(s3_conv, conv_ns)}
        if live:
            return phone
    else:
        channel = w.focus.get(w.kind, iv.EMPTY)
        window = cfg_rules.s2_info_window_ms * NS_PER_MS
        consulted = iv.EMPTY
        if len(info_focus):
            dil = info_focus.copy()
            dil[:, 0] -= window
            dil[:, 1] += window
            consulted = iv.normalize(dil)
        chan_ns = iv.measure(channel)
        chat = {"s2_switches_per_min": per_minute(int(w.switches_chat_info), dur),
                "s2_info_share": share(iv.overlap(channel, consulted), chan_ns)}
        if live:
            return chat
    tools = info_focus
    knowledge = w.focus.get("knowledge", iv.EMPTY)
    crm = w.focus.get("crm", iv.EMPTY)
    presses = len(w.press_t)
    corrections = int(np.count_nonzero((w.press_class == KeyClass.BACKSPACE) | (w.press_class == KeyClass.DELETE)))
    out: dict = {
        "kind": w.kind, "start_ns": int(w.lo), "end_ns": int(w.hi), "duration_ms": ms(dur),
        "typing_ms": ms(iv.measure(w.typing)), "mouse_ms": ms(iv.measure(w.mouse)),
        "keys_pressed": presses, "corrections": corrections,
        "correction_share": share(corrections, presses) if presses else None,
        "tool_time_ms": ms(iv.measure(tools)),
        "knowledge_time_ms": ms(iv.measure(knowledge)),
        "knowledge_entries": int(w.focus_entries.get("knowledge", 0)),
        "crm_keys": int(np.count_nonzero(w.press_cat == CAT_CODES["crm"])),
        "crm_time_ms": ms(iv.measure(crm)),
        "unknown_ms": ms(iv.measure(w.unknown)),
    }
    if w.kind == "phone":
        overtalk = iv.intersect(w.agent, w.customer)
        ot_events = iv.at_least(overtalk, cfg_activity.overtalk_min_ms * NS_PER_MS)
        agent_only = iv.difference(w.agent, w.customer)
        cust_only = iv.difference(w.customer, w.agent)
        out.update({
            "agent_talk_ms": phone["agent_talk_ms"], "customer_talk_ms": phone["customer_talk_ms"],
            "conversation_ms": ms(conv_ns),
            "overtalk_count": int(len(ot_events)), "overtalk_ms": ms(iv.measure(ot_events)),
            "dead_air_count": phone["dead_air_count"], "dead_air_ms": ms(iv.measure(dead)),
            "dead_air_longest_ms": ms(int(iv.lengths(dead).max())) if len(dead) else 0,
            "dead_air_share": share(iv.measure(dead), dur),
            "s1_share": phone["s1_share"],
            "s1_lookups": int(w.focus_entries.get("knowledge", 0)),
            "s3_agent_share": share(iv.overlap(w.agent, input_active), agent_ns),
            "s3_customer_share": share(iv.overlap(w.customer, input_active), cust_ns),
            "s3_share": phone["s3_share"],
            "keys_per_min_talk": per_minute(_points_in(w.press_t, agent_only), iv.measure(agent_only)),
            "keys_per_min_listen": per_minute(_points_in(w.press_t, cust_only), iv.measure(cust_only)),
            "keys_per_min_silence": per_minute(_points_in(w.press_t, silence), iv.measure(silence)),
            "spurts": spurt_stats(w.agent, cfg_rules.c5_long_spurt_ms * NS_PER_MS),
            "_ns": {"conv": conv_ns, "info": iv.measure(info_during), "agent": agent_ns,
                    "cust": cust_ns, "s3_conv": s3_conv,
                    "s3_agent": iv.overlap(w.agent, input_active),
                    "s3_cust": iv.overlap(w.customer, input_active),
                    "talk_only": iv.measure(agent_only), "listen_only": iv.measure(cust_only),
                    "silence": iv.measure(silence),
                    "keys_talk": _points_in(w.press_t, agent_only),
                    "keys_listen": _points_in(w.press_t, cust_only),
                    "keys_silence": _points_in(w.press_t, silence),
                    "dead": iv.measure(dead)},
        })
    else:
        keys_chat = _points_in(w.press_t, channel)
        out.update({
            "channel_time_ms": ms(chan_ns),
            "s2_switches": int(w.switches_chat_info),
            "s2_switches_per_min": chat["s2_switches_per_min"],
            "s2_info_share": chat["s2_info_share"],
            "keys_per_min_chat": per_minute(keys_chat, chan_ns),
            "_ns": {"chan": chan_ns, "keys_chat": keys_chat},
        })
    return out


CAT_CODES = {"other": 0, "crm": 1, "knowledge": 2, "script": 3, "chat": 4, "email": 5, "typing_task": 6}
CAT_NAMES = {v: k for k, v in CAT_CODES.items()}
