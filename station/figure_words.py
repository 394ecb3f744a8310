"""Figures in words, with their units, for people: the board, the station report and the console's
candidate report ("64 % of conversation time with on-screen information work"). The raw values
stay in the JSON and CSV; this module only phrases them.

``describe(cid, figures)`` gives one sentence per figure of competence ``cid`` (the evidence's
``figures`` map), in the engine's key order. Units: keys ending in ``_ms`` are milliseconds and
are phrased as seconds or minutes; shares (0..1) as percentages; rates per minute as "a minute".
Per-contact maps (``{"#1 phone": 0.64, ...}``) give one sentence per contact, prefixed with the
contact. A key this module does not know is shown as ``key: value``, so a new figure is never
hidden. Never raises on odd values (None, strings): they are shown as they are.
"""

from __future__ import annotations

from typing import Any, Callable


def pct(v: float) -> str:
    """A share 0..1 as a percentage: "64 %", "4.1 %" below 10 %."""
    p = float(v) * 100
    return f"{p:.0f} %" if abs(p) >= 10 or p == 0 else f"{p:.1f} %"


def pct1(v: float) -> str:
    """A share with one decimal, where the rule's limit is close (accuracy: "97.2 %")."""
    return f"{float(v) * 100:.1f} %"


def duration(ms: float) -> str:
    """Milliseconds as "850 ms", "14.4 s", "2 min 31 s" or "1 h 05 min"."""
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def count(n: float, one: str, many: str) -> str:
    n = int(n)
    return f"{n} {one if n == 1 else many}"


def _per_min(v: float) -> str:
    return f"{float(v):.1f}" if float(v) < 10 else f"{float(v):.0f}"


# (competence, key) -> phrase(value). A phrase for a per-contact map is applied to each contact.
_P: dict[tuple[str, str], Callable[[Any], str]] = {
    ("S1", "per_contact_share"): lambda v: f"{pct(v)} of conversation time with on-screen information work",
    ("S1", "best_share"): lambda v: f"best contact: {pct(v)} of conversation time with on-screen information work",
    ("S1", "lookups"): lambda v: count(v, "lookup", "lookups") + " in information windows during calls",
    ("S2", "switches_per_min"): lambda v: f"{_per_min(v)} switches a minute between the chat/e-mail window and information windows",
    ("S2", "info_share"): lambda v: f"{pct(v)} of chat time with information consulted within 30 s",
    ("S3", "conversation_share"): lambda v: f"{pct(v)} of conversation time with keyboard or mouse activity",
    ("S3", "agent_speech_share"): lambda v: f"{pct(v)} of the candidate's speech with keyboard or mouse activity",
    ("S3", "customer_speech_share"): lambda v: f"{pct(v)} of the customer's speech with keyboard or mouse activity",
    ("S3", "conversation_ms"): lambda v: f"{duration(v)} of conversation",
    ("S4", "keys_per_min_talk"): lambda v: f"{_per_min(v)} keystrokes a minute while the candidate talks",
    ("S4", "keys_per_min_listen"): lambda v: f"{_per_min(v)} keystrokes a minute while the customer talks",
    ("S4", "keys_per_min_silence"): lambda v: f"{_per_min(v)} keystrokes a minute in silence",
    ("S4", "keys_per_min_chat"): lambda v: f"{_per_min(v)} keystrokes a minute in chat",
    ("S4", "largest_relative_difference"): lambda v: f"typing rate differs by up to {pct(v)} between these",
    ("D1", "tool_time_ms"): lambda v: f"{duration(v)} in tool windows (CRM, knowledge, script)",
    ("D2", "knowledge_entries"): lambda v: count(v, "lookup", "lookups") + " in knowledge windows",
    ("D2", "knowledge_time_ms"): lambda v: f"{duration(v)} in knowledge windows",
    ("D3", "crm_keys"): lambda v: count(v, "keystroke", "keystrokes") + " into the CRM during the contact",
    ("D3", "crm_keys_after"): lambda v: count(v, "keystroke", "keystrokes") + " into the CRM after it",
    ("D3", "after_contact_ms"): lambda v: f"{duration(v)} of after-contact work",
    ("D4", "corrections"): lambda v: count(v, "correction", "corrections") + " (backspace or delete)",
    ("D4", "keys_pressed"): lambda v: f"out of {count(v, 'keystroke', 'keystrokes')}",
    ("D4", "correction_share"): lambda v: f"{pct(v)} of keystrokes are corrections",
    ("D5", "accuracy"): lambda v: f"{pct1(v)} typing accuracy",
    ("D5", "estimate"): lambda v: ("an estimate from corrections (no typing task with a reference text)" if v
                                   else "measured against the reference text"),
    ("D5", "typed_chars"): lambda v: count(v, "character", "characters") + " typed",
    ("D5", "reference_chars"): lambda v: f"reference text of {count(v, 'character', 'characters')}",
    ("C5", "count"): lambda v: count(v, "talk spurt", "talk spurts") + " of the candidate",
    ("C5", "median_ms"): lambda v: f"median length {duration(v)}",
    ("C5", "p90_ms"): lambda v: f"90 % are shorter than {duration(v)}",
    ("C5", "long_share"): lambda v: f"{pct(v)} last longer than 10 s",
    ("C6", "dead_air_count"): lambda v: count(v, "silence", "silences") + " of 3 s or more in calls",
    ("C6", "dead_air_ms"): lambda v: f"{duration(v)} of dead air in total",
    ("C6", "longest_ms"): lambda v: f"longest {duration(v)}",
    ("C6", "share_of_conversation"): lambda v: f"{pct(v)} of conversation time",
}
_COUNTERS = {"C1": ("reformulation", "reformulations"), "C2": ("clarifying question", "clarifying questions"),
             "C3": ("counter-argument", "counter-arguments")}


def _plain(key: str, v: Any) -> str:
    return f"{key}: {v}"


def _one(cid: str, key: str, v: Any) -> str:
    phrase = _P.get((cid, key))
    if phrase is None:
        if key.endswith("_ms") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{key[:-3].replace('_', ' ')}: {duration(v)}"
        return _plain(key, v)
    try:
        return phrase(v)
    except (TypeError, ValueError):
        return _plain(key, v)


def _where(contact: Any) -> str:
    """ "contact #1 phone" for a contact key, the key itself otherwise ("outside contacts")."""
    return f"contact {contact}" if str(contact).startswith("#") else str(contact)


def _counted(n: Any, one: str, many: str) -> str:
    """A counter: a number, or per assessor {assessor: number}."""
    if isinstance(n, dict):
        return "; ".join(f"{a}: {count(x, one, many)}" for a, x in n.items())
    return count(n, one, many)


def describe(cid: str, figures: dict | None) -> list[str]:
    """Sentences for the figures of competence ``cid`` (see the module docstring)."""
    out: list[str] = []
    if not isinstance(figures, dict):
        return [] if figures is None else [str(figures)]
    for key, v in figures.items():
        try:
            out += _describe_one(cid, key, v)
        except (TypeError, ValueError, AttributeError):
            out.append(_plain(key, v))
    return out


def _describe_one(cid: str, key: str, v: Any) -> list[str]:
    out: list[str] = []
    if key == "counters" and cid in _COUNTERS and isinstance(v, dict):
        one, many = _COUNTERS[cid]
        out += [f"{_where(c)}: {_counted(n, one, many)}" for c, n in v.items()] if v else [f"no {many} counted yet"]
    elif key == "per_contact" and isinstance(v, dict):
        for contact, sub in v.items():
            if isinstance(sub, dict):
                out += [f"contact {contact}: {_one(cid, k, x)}" for k, x in sub.items()]
            else:
                out.append(f"contact {contact}: {_one(cid, key, sub)}")
    elif isinstance(v, dict) and v and all(str(k).startswith("#") for k in v):
        out += [f"contact {contact}: {_one(cid, key, x)}" for contact, x in v.items()]
    else:
        out.append(_one(cid, key, v))
    return out
