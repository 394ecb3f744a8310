"""Map a window to a category by the configured rules (``[[categories.rule]]``).

Rules are tried in order; the first whose non-empty patterns all match (``re.search``,
case-insensitive) on window class, title and process name gives the category; no match gives
"other". Titles are classified before privacy hashing/dropping, so rules on titles still work.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from station.config import Config


class Categorizer:
    """Compiled rules of one configuration. ``classify`` is cheap (called per focus change)."""

    def __init__(self, cfg: Config):
        self.rules = []
        for rule in cfg.categories.rule:
            pats = tuple(re.compile(rule[k], re.IGNORECASE) if rule[k] else None
                         for k in ("class", "title", "process"))
            self.rules.append((rule["category"], pats))
        self.titles = cfg.privacy.titles

    @lru_cache(maxsize=1024)
    def classify(self, wm_class: str, title: str, process: str) -> str:
        for category, (pc, pt, pp) in self.rules:
            if pc and not pc.search(wm_class or ""):
                continue
            if pt and not pt.search(title or ""):
                continue
            if pp and not pp.search(process or ""):
                continue
            return category
        return "other"

    def private_title(self, title: str) -> str:
        """The title as the privacy setting allows it to be stored: kept, hashed (sha256:12 hex) or ""."""
        if self.titles == "keep":
            return title
        if self.titles == "hash":
            return "sha256:" + hashlib.sha256(title.encode()).hexdigest()[:12] if title else ""
        return ""
