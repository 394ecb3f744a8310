"""Which capture backend this session allows: chosen here, in ONE place, for every source.

Like pynput (one backend module per platform, picked once, with an environment override), the
input and focus sources ask ``detect()`` which backend to use and never look at the environment
themselves.

Backends:

- ``"x11"``: ``$DISPLAY`` is set (and no Wayland session is announced). Keyboard and mouse are
  recorded through the X RECORD extension (pynput's xorg backend), focus through EWMH property
  events (python-xlib). Whether the display is *reachable* right now is a separate question
  (``x11_probe``): an unreachable display is a lost source that is retried, not another backend.
- ``"wayland"``: ``$WAYLAND_DISPLAY`` is set or ``$XDG_SESSION_TYPE`` is ``wayland``. Under
  Wayland, X11 clients (XWayland) only see other X11 clients: other applications' input and
  focus are NOT visible. The sources then report ``SourceHealth("lost", WAYLAND_MESSAGE)`` instead
  of silently recording nothing, and ``station doctor`` fails with the same message. Wayland wins
  over ``$DISPLAY`` because a Wayland session also sets ``$DISPLAY`` (for XWayland).
- ``"none"``: no display at all (e.g. a service without a graphical session).

Override: ``STATION_CAPTURE_BACKEND`` = ``x11`` | ``wayland`` | ``none`` (anything else is a
``UserError``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import UserError

BACKENDS = ("x11", "wayland", "none")
ENV_OVERRIDE = "STATION_CAPTURE_BACKEND"

WAYLAND_MESSAGE = ("Wayland session: other applications' keyboard, mouse and window focus are NOT "
                   "visible to the station under Wayland; log in to an X11 (Xorg) session for the exam")
NO_DISPLAY_MESSAGE = "no graphical display: DISPLAY is not set, keyboard, mouse and focus cannot be captured"


@dataclass(frozen=True)
class Backend:
    """The chosen backend. name: one of BACKENDS. display: the X display name for "x11" (else "").
    reason: why this backend was chosen (operator-readable). capturable: whether other
    applications' input and focus can be seen at all with this backend."""

    name: str
    display: str
    reason: str

    @property
    def capturable(self) -> bool:
        return self.name == "x11"


def detect(env: Mapping[str, str] | None = None) -> Backend:
    """Choose the capture backend from the environment (``os.environ`` when env is None).

    Raises UserError when STATION_CAPTURE_BACKEND holds an unknown name.
    """
    env = os.environ if env is None else env
    display = env.get("DISPLAY", "")
    forced = env.get(ENV_OVERRIDE, "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise UserError(f"{ENV_OVERRIDE}={forced!r} is not a capture backend; allowed: "
                            + ", ".join(BACKENDS), exit_code=2)
        reasons = {"x11": f"forced by {ENV_OVERRIDE} (DISPLAY={display or 'unset'})",
                   "wayland": WAYLAND_MESSAGE, "none": f"forced by {ENV_OVERRIDE}: capture disabled"}
        return Backend(forced, display if forced == "x11" else "", reasons[forced])
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return Backend("wayland", "", WAYLAND_MESSAGE)
    if display:
        return Backend("x11", display, f"X11 display {display}")
    return Backend("none", "", NO_DISPLAY_MESSAGE)


def unavailable_reason(backend: Backend) -> str:
    """The SourceHealth detail for a backend that cannot capture ("" for x11)."""
    if backend.name == "x11":
        return ""
    return backend.reason


def x11_probe(display: str) -> tuple[bool, str]:
    """Try to open ``display`` (python-xlib). Returns (reachable, detail); never raises."""
    try:
        import Xlib.display
        import Xlib.error
    except ImportError as e:  # pragma: no cover - a dependency of the package
        return False, f"python-xlib missing: {e}"
    try:
        d = Xlib.display.Display(display or None)
    except Exception as e:  # DisplayNameError, DisplayConnectionError, OSError ...
        return False, f"X display {display or '(unset)'} unreachable: {e}"
    try:
        return True, f"X display {display}, vendor {d.display.info.vendor}"
    finally:
        try:
            d.close()
        except Exception:
            pass
