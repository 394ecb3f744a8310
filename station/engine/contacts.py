"""Contact detection: automatic phone contacts from speech, chat/email contacts from focus,
explicit markers from assessors overriding both.

A ``Clusterer`` groups time-ordered spans into clusters separated by gaps >= ``gap_ns``. It is fed
only spans that are final (start before the caller's *safe* time), so its output does not depend on
batching. A cluster is *closed* when the safe time has passed its end by ``gap_ns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cluster:
    start: int
    end: int
    weight: int = 0    # e.g. customer speech ns inside, or chat focus ns


class Clusterer:
    def __init__(self, gap_ns: int):
        self.gap_ns = gap_ns
        self.current: Cluster | None = None

    def add(self, start: int, end: int, weight: int) -> Cluster | None:
        """Add one span (in start order). Returns the previous cluster if this span closed it."""
        cur = self.current
        if cur is not None and start - cur.end < self.gap_ns:
            cur.end = max(cur.end, end)
            cur.weight += weight
            return None
        self.current = Cluster(start, end, weight)
        return cur

    def close_if_due(self, safe_t: int) -> Cluster | None:
        cur = self.current
        if cur is not None and safe_t - cur.end >= self.gap_ns:
            self.current = None
            return cur
        return None

    def flush(self) -> Cluster | None:
        cur, self.current = self.current, None
        return cur


@dataclass
class MarkedContact:
    kind: str
    start: int
    end: int | None = None
    ref: str = ""
    assessor_id: str = ""


@dataclass
class MarkerBook:
    """Explicit contact markers. A start opens a contact of its kind (closing an open one of the same
    kind); an end closes the open contact of its kind (or of its ref)."""

    contacts: list[MarkedContact] = field(default_factory=list)

    def apply(self, t_ns: int, action: str, kind: str, ref: str, assessor_id: str) -> MarkedContact | None:
        """Returns a contact that this marker closed, if any."""
        if action == "start":
            closed = self._open_of(kind)
            if closed is not None:
                closed.end = t_ns
            self.contacts.append(MarkedContact(kind, t_ns, None, ref, assessor_id))
            return closed
        if action == "end":
            target = None
            if ref:
                target = next((c for c in self.contacts if c.ref == ref and c.end is None), None)
            if target is None:
                target = self._open_of(kind)
            if target is not None:
                target.end = max(t_ns, target.start)
            return target
        return None

    def _open_of(self, kind: str) -> MarkedContact | None:
        for c in reversed(self.contacts):
            if c.kind == kind and c.end is None:
                return c
        return None

    def overlaps(self, kind: str, lo: int, hi: int) -> bool:
        for c in self.contacts:
            end = c.end if c.end is not None else 2 ** 62
            if c.kind == kind and c.start < hi and lo < end:
                return True
        return False

    def open_contacts(self) -> list[MarkedContact]:
        return [c for c in self.contacts if c.end is None]
