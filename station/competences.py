"""The competence standard's vocabulary, defined once for the station and the console.

- ``COMPETENCES``: the 19 competences of the standard as (id, group, title), in the standard's
  order; ``COMPETENCE_IDS`` their ids;
- the assessor command vocabulary: mark kinds, contact and exam actions, contact kinds;
- text limits of commands (characters);
- ``proven``: the one rule that turns assessors' verdicts into "proven";
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
MARK_KINDS = ("observed", "not_observed", "counter", "note")
VERDICT_KINDS = ("observed", "not_observed")
CONTACT_ACTIONS = ("start", "end")
CONTACT_KINDS = ("phone", "chat", "email")
EXAM_ACTIONS = ("assign", "start", "end")

MAX_TEXT = 2000     # characters of a mark's note
MAX_ID = 64         # characters of an id (assessor, mark, command)
MAX_SHORT = 128     # characters of names and references


class CommandError(ValueError):
    """A command that was refused: by the station's validation (the message goes back to the
    console), or, at the console, one the station refused or did not acknowledge in time."""


def proven(verdicts) -> bool:
    """Proven only when at least two assessors gave a verdict and all say observed.

    ``verdicts``: assessor -> "observed" | "not_observed", or assessor -> {"verdict": ...}."""
    kinds = [v["verdict"] if isinstance(v, dict) else v for v in verdicts.values()]
    return len(kinds) >= 2 and all(k == "observed" for k in kinds)
