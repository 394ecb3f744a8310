"""The delivery bound of a source read by one thread: ``DeliveryBound``.

A source's ``delivered_until()`` (see ``station.capture.base``) is the station time (ns) below
which it has put every event it will ever emit into the sink. For a source whose thread reads a
connection (an X or Wayland socket, the D-Bus socket, a queue of hook callbacks), that is:

- the time ``t0`` of the last moment the thread had read everything there was (it took ``t0``,
  then found nothing unread: a ``recv`` that did not fill its buffer, an empty non-blocking
  ``select``, an empty queue), less ``margin_ns`` (how much earlier than that moment an event
  read later may be stamped: an X event carries the server's time, written to the socket a
  little after; a hook callback stamps, then queues), less what the bound of a later event may
  be below its stamp (``floor``: a mouse move stamped t goes into the 10 ms bin that starts
  before t),
- but no later than the earliest event the thread still holds (``held``: keys within the
  typing-task grace, mouse bins not yet closed or waiting for the pointer position, a "no
  window" change within its debounce, derived auto-repeat presses not yet due).

An idle connection must not hold the watermark back (idle is not stalled: the ``StallGuard``
would declare an idle source lost after 3 s). So while the thread waits with nothing unread,
``until()`` looks itself: it takes the time, asks ``pending()`` (the socket readable? the queue
not empty?) and, when nothing waits and the thread did not wake up meanwhile, returns that time
less the margin (and the held events). The reader thread's side costs no system call and no
extra wake-up.

Reader-thread protocol: ``drained(t0, held)`` after every moment it had read all there was,
``waiting(held)`` right before it blocks, ``woke()`` right after (before reading anything),
``lost()`` once its connection is gone and every event of it that will be emitted is in the
sink (``until()`` is then None: a lost source does not hold the watermark back). ``until()``
may be called from any thread; it never blocks and never raises (a failing ``pending`` counts
as "something waits").
"""

from __future__ import annotations

from typing import Callable

from station.clock import monotonic_ns


class DeliveryBound:
    """See the module docstring. margin_ns, floor_ns: ns (>= 0). pending: () -> bool, safe to
    call from another thread (e.g. a ``select`` with timeout 0 on the connection's socket)."""

    def __init__(self, margin_ns: int = 0, floor_ns: int = 1, pending: Callable[[], bool] | None = None):
        self.margin_ns = int(margin_ns)
        self.floor_ns = max(1, int(floor_ns))
        self.pending = pending
        self._attested: int | None = None
        self._held: int | None = None
        self._blocked = -1          # the wake-up count while the reader waits, else -1
        self._wakes = 0

    def _limit(self, t0: int, held: int | None) -> int:
        t = t0 - self.margin_ns
        t -= t % self.floor_ns
        return t if held is None else min(t, held)

    # -- the reader thread
    def drained(self, t0_ns: int, held_ns: int | None = None) -> None:
        """Everything sent before ``t0_ns`` is read and its events emitted, except those from
        ``held_ns`` on (None: nothing held)."""
        self._attested = self._limit(t0_ns, held_ns)

    def waiting(self, held_ns: int | None = None, pending: Callable[[], bool] | None = None) -> None:
        """About to block; ``held_ns`` as for ``drained``. ``pending`` replaces the check of the
        constructor (a new connection)."""
        if pending is not None:
            self.pending = pending
        self._held = held_ns
        self._blocked = self._wakes

    def woke(self) -> None:
        self._blocked = -1
        self._wakes += 1

    def lost(self) -> None:
        self._blocked = -1
        self._wakes += 1
        self._attested = None

    # -- any thread
    def until(self) -> int | None:
        """The bound (ns), or None before the first ``drained`` and after ``lost``."""
        b = self._blocked
        if b >= 0 and self.pending is not None:
            held = self._held
            t0 = monotonic_ns()
            try:
                waiting = self.pending()
            except Exception:  # a socket closed meanwhile: the reader's own word counts
                waiting = True
            if not waiting and self._blocked == b:
                return self._limit(t0, held)
        return self._attested
