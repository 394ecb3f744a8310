"""Map a window to a category by the configured rules (``[[categories.rule]]``).

A rule has a ``category`` and up to three patterns, each optional (absent or "" = any window):

- ``class``: matches the window's ``WM_CLASS`` *instance* or *class* part (X11; e.g. ``xmessage
  -name crmapp`` has instance "crmapp", class "Xmessage"; ``chromium --app=https://crm.example``
  has instance "crm.example", class "Chromium"); under GNOME Wayland also the application id
  (e.g. "org.mozilla.firefox.desktop");
- ``title``: the window title;
- ``process``: the process name (``/proc/PID/comm``).

Patterns are Python regular expressions, searched (``re.search``) case-insensitively. Rules are
tried in order; the first whose patterns all match gives the category; no match gives "other".
Titles are classified before privacy hashing/dropping, so rules on titles still work.
``station categories`` shows live which rule the focused window matches (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from station.config import Config

OTHER = "other"
PATTERNS = ("class", "title", "process")


@dataclass(frozen=True)
class Match:
    """The category a window gets, and why. rule: index of the matching rule in
    ``categories.rule`` (0-based), None when no rule matched ("other")."""

    category: str
    rule: int | None

    def describe(self, rules: list[dict]) -> str:
        """ "crm (rule 2: class ~ 'crm')" or "other (no rule matched)" for operators."""
        if self.rule is None:
            return f"{self.category} (no rule matched)"
        r = rules[self.rule]
        pats = ", ".join(f"{k} ~ {r[k]!r}" for k in PATTERNS if r[k])
        return f"{self.category} (rule {self.rule + 1}: {pats})"


class Categorizer:
    """Compiled rules of one configuration. ``classify`` is cheap (called per focus change)."""

    def __init__(self, cfg: Config):
        self.rules = []
        for rule in cfg.categories.rule:
            pats = tuple(re.compile(rule[k], re.IGNORECASE) if rule.get(k) else None for k in PATTERNS)
            self.rules.append((rule["category"], pats))
        self.titles = cfg.privacy.titles

    @lru_cache(maxsize=1024)
    def match(self, wm_class: str, title: str, process: str, instance: str = "", app_id: str = "") -> Match:
        """The first rule all of whose patterns match; ``class`` may match ``wm_class``,
        ``instance`` or (GNOME Wayland) ``app_id``."""
        for i, (category, (pc, pt, pp)) in enumerate(self.rules):
            if pc and not (pc.search(wm_class or "") or (instance and pc.search(instance))
                           or (app_id and pc.search(app_id))):
                continue
            if pt and not pt.search(title or ""):
                continue
            if pp and not pp.search(process or ""):
                continue
            return Match(category, i)
        return Match(OTHER, None)

    def classify(self, wm_class: str, title: str, process: str, instance: str = "", app_id: str = "") -> str:
        """The category (see ``match``)."""
        return self.match(wm_class, title, process, instance, app_id).category

    def private_title(self, title: str) -> str:
        """The title as the privacy setting allows it to be stored: kept, hashed (sha256:12 hex) or ""."""
        if self.titles == "keep":
            return title
        if self.titles == "hash":
            return "sha256:" + hashlib.sha256(title.encode()).hexdigest()[:12] if title else ""
        return ""
