"""The competence standard's vocabulary, defined once for the station and the console.

- ``COMPETENCES``: the 19 competences of the standard as (id, group, title), in the standard's
  order; ``COMPETENCE_IDS`` their ids;
- the assessor command vocabulary: mark kinds, contact and exam actions, contact kinds;
- text limits of commands (characters);
- ``proven``: the one rule that turns assessors' verdicts into "proven" (two different keys;
  after a disagreement, a consensus of both keys); ``disagree``, ``consensus_verdict``;
- ``cohen_kappa`` / ``exam_agreement``: inter-rater agreement of two assessors;
- ``CommandError``: a command that is refused (by the station's validation, or reported to a
  console as refused or unacknowledged).
"""

from __future__ import annotations

COMPETENCES = [
    ("S1", "Simultaneous handling", "listens to or talks with the customer while following the information on screen"),
    ("S2", "Simultaneous handling", "emails or chats with the customer while following the information on screen"),
    ("S3", "Simultaneous handling", "listens to or talks with the customer while operating keyboard or mouse and the headset"),
    ("S4", "Simultaneous handling", "adapts typing speed to the contact"),
    ("D1", "Managing data", "uses the tools during the contact as the assignment requires"),
    ("D2", "Managing data", "looks up information the customer asks for in the provided sources"),
    ("D3", "Managing data", "enters the gathered data completely in the intended file and field"),
    ("D4", "Managing data", "corrects errors"),
    ("D5", "Managing data", "types without errors within a 97 % margin"),
    ("D6", "Managing data", "applies the successive steps of the script"),
    ("D7", "Managing data", "formulates the result of the contact for reporting"),
    ("C1", "Communication", "reformulates what the customer says"),
    ("C2", "Communication", "asks clarifying questions"),
    ("C3", "Communication", "makes at most 2 to 3 counter-arguments"),
    ("C4", "Communication", "adapts intonation and choice of words to the customer"),
    ("C5", "Communication", "uses short sentences"),
    ("C6", "Communication", "avoids silences in the conversation"),
    ("C7", "Communication", "closes the contact according to the script"),
    ("C8", "Communication", "presents the organisation according to the customer's interest"),
]
COMPETENCE_IDS = [c[0] for c in COMPETENCES]
COUNTER_IDS = ("C1", "C2", "C3")          # competences the assessors count per contact

COMMAND_TYPES = ("mark", "contact", "exam")
MARK_KINDS = ("observed", "not_observed", "counter", "note", "consensus_observed", "consensus_not_observed")
VERDICT_KINDS = ("observed", "not_observed")
CONSENSUS_KINDS = ("consensus_observed", "consensus_not_observed")   # -> the agreed verdict after the prefix
CONTACT_ACTIONS = ("start", "end")
CONTACT_KINDS = ("phone", "chat", "email")
EXAM_ACTIONS = ("assign", "start", "end")

MAX_TEXT = 2000     # characters of a mark's note
MAX_ID = 64         # characters of an id (assessor, mark, command)
MAX_SHORT = 128     # characters of names and references


class CommandError(ValueError):
    """A command that was refused: by the station's validation (the message goes back to the
    console), or, at the console, one the station refused or did not acknowledge in time."""


def _kind(v) -> str:
    return v["verdict"] if isinstance(v, dict) else v


def _keys(entries) -> set[str]:
    return {v["key_fp"] for v in entries.values() if isinstance(v, dict) and v.get("key_fp")}


def disagree(verdicts) -> bool:
    """Two or more assessors gave a verdict and they are not all the same."""
    return len({_kind(v) for v in verdicts.values()}) > 1


def consensus_verdict(verdicts, consensus) -> str | None:
    """The verdict both keys agreed on after a disagreement, or None.

    ``consensus``: assessor -> {"verdict": "observed"|"not_observed", "key_fp"} (each one's
    latest consensus mark). It counts only when it comes from at least two different keys, every
    key that gave a verdict is among them, and all name the same verdict."""
    if not consensus:
        return None
    kinds = {_kind(v) for v in consensus.values()}
    agreed = _keys(consensus)
    if len(kinds) != 1 or len(agreed) < 2 or not _keys(verdicts) <= agreed:
        return None
    return kinds.pop()


def proven(verdicts, consensus=None) -> bool:
    """Proven only when observed marks come from at least two different keys and no assessor's
    latest verdict is not_observed; after a disagreement, only when both keys then agree on a
    consensus of observed (``consensus_verdict``). The original verdicts stay what they were.

    ``verdicts``: assessor -> {"verdict": "observed"|"not_observed", "key_fp": fingerprint, ...}
    (each assessor's latest verdict). A verdict without a key fingerprint (plaintext demo, old
    journal, or a bare string) counts for no key, so it can never make a competence proven."""
    agreed = consensus_verdict(verdicts, consensus)
    if agreed is not None:
        return agreed == "observed"
    kinds = [_kind(v) for v in verdicts.values()]
    return len(_keys(verdicts)) >= 2 and bool(kinds) and all(k == "observed" for k in kinds)


def cohen_kappa(pairs) -> dict:
    """Cohen's kappa of two raters over items rated by both.

    ``pairs``: (verdict of rater 1, verdict of rater 2) per item, each "observed" or
    "not_observed". Returns {"n", "agree", "observed_agreement", "expected_agreement", "kappa"};
    kappa is None when there are no items, or when chance agreement is 1 (both raters gave one
    and the same verdict to every item: agreement is perfect but kappa is undefined)."""
    pairs = [(a, b) for a, b in pairs if a in VERDICT_KINDS and b in VERDICT_KINDS]
    n = len(pairs)
    if not n:
        return {"n": 0, "agree": 0, "observed_agreement": None, "expected_agreement": None, "kappa": None}
    agree = sum(a == b for a, b in pairs)
    po = agree / n
    pe = sum((sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n) for k in VERDICT_KINDS)
    kappa = None if pe >= 1 else round((po - pe) / (1 - pe), 4)
    return {"n": n, "agree": agree, "observed_agreement": round(po, 4), "expected_agreement": round(pe, 4),
            "kappa": kappa}


def exam_agreement(verdicts_by_competence: dict) -> dict:
    """Agreement of the two assessors of one exam over the 19 competences.

    ``verdicts_by_competence``: competence -> assessor -> verdict entry (latest, as for ``proven``).
    The two raters are the two assessors with the most verdicts (ties: by id). Returns
    ``cohen_kappa`` of the competences both rated, plus "raters" [id, id], "rated_by_both",
    "disagreements" (competence ids)."""
    counts: dict[str, int] = {}
    for by in verdicts_by_competence.values():
        for a in by:
            counts[a] = counts.get(a, 0) + 1
    raters = sorted(counts, key=lambda a: (-counts[a], a))[:2]
    pairs, disagreements = [], []
    if len(raters) == 2:
        r1, r2 = raters
        for cid in COMPETENCE_IDS:
            by = verdicts_by_competence.get(cid) or {}
            if r1 in by and r2 in by:
                pairs.append((_kind(by[r1]), _kind(by[r2])))
                if pairs[-1][0] != pairs[-1][1]:
                    disagreements.append(cid)
    return {**cohen_kappa(pairs), "raters": raters, "rated_by_both": len(pairs), "disagreements": disagreements}
