"""Assessor commands (from a console) -> journaled events, with validation.

A command is a dict; ``command_to_event`` checks it and returns the event to journal, or raises
``CommandError`` with a message for the console. Accepted commands:

- ``{"type": "mark", "assessor_id", "assessor_name", "competence", "kind", "text", "mark_id", "t_ns"?}``
  kind: observed | not_observed | counter | note; competence: one of the 19 ids.
- ``{"type": "contact", "action": "start"|"end", "kind": "phone"|"chat"|"email", "contact_ref"?, "assessor_id", "t_ns"?}``
- ``{"type": "exam", "action": "assign"|"start"|"end", "candidate_id"?, "candidate_name"?, "assessor_id"}``

``assessor_id``/``assessor_name`` are those the publisher took from the sending key's binding
(``keys.AllowList.assessor_of``), and ``key_fp`` that key's fingerprint, journaled with the event.

``t_ns`` is the station-clock time the assessor acted (the console converts its click time with its
clock-offset estimate); missing or implausible (in the future, or before ``earliest_ns``) -> now.
"""

from __future__ import annotations

from station.competences import (
    COMPETENCE_IDS,
    CONTACT_ACTIONS,
    CONTACT_KINDS,
    EXAM_ACTIONS,
    MARK_KINDS,
    MAX_ID,
    MAX_SHORT,
    MAX_TEXT,
    CommandError,
)
from station.events import AssessorMark, ContactMarker, ExamControl


def _str(cmd: dict, key: str, limit: int = MAX_ID, required: bool = False) -> str:
    v = cmd.get(key, "")
    if not isinstance(v, str):
        raise CommandError(f"{key} must be a string")
    if required and not v:
        raise CommandError(f"{key} is required")
    if len(v) > limit:
        raise CommandError(f"{key} is longer than {limit} characters")
    return v


def _choice(cmd: dict, key: str, allowed: tuple[str, ...]) -> str:
    v = cmd.get(key)
    if v not in allowed:
        raise CommandError(f"{key} must be one of {', '.join(allowed)}")
    return v


def command_to_event(cmd: dict, now_ns: int, earliest_ns: int):
    if not isinstance(cmd, dict):
        raise CommandError("command must be a map")
    t = cmd.get("t_ns")
    if not isinstance(t, int) or isinstance(t, bool) or t > now_ns + 1_000_000_000 or t < earliest_ns:
        t = now_ns
    kind = cmd.get("type")
    fp = _str(cmd, "key_fp")
    if kind == "mark":
        competence = cmd.get("competence")
        if competence not in COMPETENCE_IDS:
            raise CommandError(f"unknown competence {str(competence)[:20]!r}; allowed: {', '.join(COMPETENCE_IDS)}")
        return AssessorMark(t, _str(cmd, "assessor_id", required=True), _str(cmd, "assessor_name", MAX_SHORT),
                            competence, _choice(cmd, "kind", MARK_KINDS),
                            _str(cmd, "text", MAX_TEXT), _str(cmd, "mark_id", MAX_SHORT), fp)
    if kind == "contact":
        ref = "contact_ref" if "contact_ref" in cmd else "ref"
        return ContactMarker(t, _choice(cmd, "action", CONTACT_ACTIONS), _choice(cmd, "kind", CONTACT_KINDS),
                             _str(cmd, ref, MAX_SHORT), _str(cmd, "assessor_id", required=True), fp)
    if kind == "exam":
        return ExamControl(t, _choice(cmd, "action", EXAM_ACTIONS), _str(cmd, "candidate_id"),
                           _str(cmd, "candidate_name", MAX_SHORT), _str(cmd, "assessor_id", required=True), fp)
    raise CommandError("type must be mark, contact or exam")
