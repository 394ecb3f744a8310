"""Which capture backend this session allows: chosen here, in ONE place, for every source.

Like pynput (one backend module per platform, picked once, with an environment override), the
input and focus sources ask ``detect()`` which backend to use and never look at the environment
themselves.

Backends:

- ``"x11"``: ``$DISPLAY`` is set (and no Wayland session is announced). Keyboard and mouse are
  recorded through XInput 2 raw events or X RECORD (pynput), see ``input_backend`` below, focus
  through EWMH property events (python-xlib). Whether the display is *reachable* right now is a separate question
  (``x11_probe``): an unreachable display is a lost source that is retried, not another backend.
- ``"wayland"``: ``$WAYLAND_DISPLAY`` is set or ``$XDG_SESSION_TYPE`` is ``wayland``. Under
  Wayland, X11 clients (XWayland) only see other X11 clients: other applications' input and
  focus are NOT visible. The sources then report ``SourceHealth("lost", WAYLAND_MESSAGE)`` instead
  of silently recording nothing, and ``station doctor`` fails with the same message. Wayland wins
  over ``$DISPLAY`` because a Wayland session also sets ``$DISPLAY`` (for XWayland).
- ``"none"``: no display at all (e.g. a service without a graphical session).

Override: ``STATION_CAPTURE_BACKEND`` = ``x11`` | ``wayland`` | ``none`` (anything else is a
``UserError``).

Focus backend (``focus_backend``), for the focus source:

- ``"x11"``: EWMH property events (``station.capture.focus``), in an X11 session;
- ``"gnome"``: GNOME on Wayland (``$XDG_CURRENT_DESKTOP`` names GNOME, e.g. "GNOME" or
  "ubuntu:GNOME"): the station's GNOME Shell extension reports focus over the session bus
  (``station.capture.focus_gnome``); keyboard and mouse stay invisible (``WAYLAND_GNOME_MESSAGE``);
- ``"wlroots"``: a wlroots compositor under Wayland (``$XDG_CURRENT_DESKTOP`` names sway, labwc,
  Wayfire, river or Hyprland): the foreign-toplevel protocol (``station.capture.focus_wlr``);
- ``"none"``: focus cannot be observed (the source reports why), e.g. KDE Plasma on Wayland.

Override: ``STATION_FOCUS_BACKEND`` = ``x11`` | ``gnome`` | ``wlroots`` | ``none``.

Input backend (``input_backend``), for the input source:

- ``"evdev"``: the kernel's input devices (``station.capture.input._evdev``): the default
  wherever ``/dev/input`` is readable by the capture account (group ``input``), X11 or Wayland:
  device identity, the allow-list, and nothing the display server forges;
- ``"xi2"``: XInput 2 raw events (``station.capture.input._xi2``): the default when the X server
  offers XInputExtension >= 2.1 (2.1 delivers raw events to the root window even while another
  client holds a grab; 2.0 does not), or when the display cannot be reached right now (every
  Xorg since 1.11 / 2011 has it; the XI2 reader reports ``"lost"`` with a hint to set the
  override when it finds none);
- ``"pynput"``: pynput's X RECORD backend (``station.capture.input._pynput``), when XI 2.1 is
  missing.

Otherwise (X11 only):

Override: ``STATION_INPUT_BACKEND`` = ``evdev`` | ``xi2`` | ``pynput`` (anything else is a
``UserError``), then ``input.backend`` in the configuration (``auto`` = the order above).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from station.errors import UserError

BACKENDS = ("x11", "wayland", "none")
ENV_OVERRIDE = "STATION_CAPTURE_BACKEND"
INPUT_BACKENDS = ("evdev", "xi2", "pynput")
INPUT_ENV_OVERRIDE = "STATION_INPUT_BACKEND"
XI2_MIN_VERSION = (2, 1)

WAYLAND_MESSAGE = ("Wayland session: other applications' keyboard, mouse and window focus are NOT "
                   "visible to the station under Wayland; log in to an X11 (Xorg) session for the exam")
WAYLAND_GNOME_MESSAGE = ("GNOME Wayland session: other applications' keyboard and mouse are NOT visible to "
                         "the station (window focus is, through its GNOME Shell extension); log in to "
                         "\"GNOME on Xorg\" for an exam that needs keyboard and mouse evidence")
FOCUS_BACKENDS = ("x11", "gnome", "wlroots", "none")
WLROOTS_DESKTOPS = ("sway", "labwc", "wayfire", "river", "hyprland")
WAYLAND_WLROOTS_MESSAGE = ("wlroots Wayland session: other applications' keyboard and mouse are NOT visible "
                           "to the station (window focus is, through the foreign-toplevel protocol); log in "
                           "to an X11 session for an exam that needs keyboard and mouse evidence")
FOCUS_ENV_OVERRIDE = "STATION_FOCUS_BACKEND"
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
                   "wayland": _wayland_reason(env), "none": f"forced by {ENV_OVERRIDE}: capture disabled"}
        return Backend(forced, display if forced == "x11" else "", reasons[forced])
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return Backend("wayland", "", _wayland_reason(env))
    if display:
        return Backend("x11", display, f"X11 display {display}")
    return Backend("none", "", NO_DISPLAY_MESSAGE)


def is_gnome(env: Mapping[str, str]) -> bool:
    """Does ``$XDG_CURRENT_DESKTOP`` (a colon-separated list) name GNOME?"""
    return "gnome" in [d.strip().lower() for d in env.get("XDG_CURRENT_DESKTOP", "").split(":")]


def is_wlroots(env: Mapping[str, str]) -> bool:
    """Does ``$XDG_CURRENT_DESKTOP`` name a wlroots compositor (``WLROOTS_DESKTOPS``)?"""
    return any(d.strip().lower() in WLROOTS_DESKTOPS for d in env.get("XDG_CURRENT_DESKTOP", "").split(":"))


def _wayland_reason(env: Mapping[str, str]) -> str:
    if is_gnome(env):
        return WAYLAND_GNOME_MESSAGE
    return WAYLAND_WLROOTS_MESSAGE if is_wlroots(env) else WAYLAND_MESSAGE


def focus_backend(backend: Backend, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Choose the focus backend: ("x11" | "gnome" | "none", reason). ``backend`` is ``detect()``'s
    choice. Raises UserError when STATION_FOCUS_BACKEND holds an unknown name."""
    env = os.environ if env is None else env
    forced = env.get(FOCUS_ENV_OVERRIDE, "").strip().lower()
    if forced:
        if forced not in FOCUS_BACKENDS:
            raise UserError(f"{FOCUS_ENV_OVERRIDE}={forced!r} is not a focus backend; allowed: "
                            + ", ".join(FOCUS_BACKENDS), exit_code=2)
        return forced, f"forced by {FOCUS_ENV_OVERRIDE}"
    if backend.name == "x11":
        return "x11", backend.reason
    if backend.name == "wayland" and is_gnome(env):
        return "gnome", "GNOME Wayland session: focus from the station's GNOME Shell extension over D-Bus"
    if backend.name == "wayland" and is_wlroots(env):
        return "wlroots", "wlroots Wayland session: focus from the foreign-toplevel protocol"
    return "none", backend.reason


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


def xinput_version(display: str) -> tuple[int, int] | None:
    """The XInput version the X server at ``display`` agrees to (asking for 2.2), (0, 0) when it
    has no XInputExtension, None when the display cannot be reached. Never raises."""
    try:
        import Xlib.display
        from Xlib.ext import xinput
    except ImportError:  # pragma: no cover - a dependency of the package
        return None
    try:
        d = Xlib.display.Display(display or None)
    except Exception:
        return None
    try:
        if not d.query_extension(xinput.extname):
            return (0, 0)
        r = xinput.XIQueryVersion(display=d.display, opcode=d.display.get_extension_major(xinput.extname),
                                  major_version=2, minor_version=2)
        return (int(r.major_version), int(r.minor_version))
    except Exception:
        return None
    finally:
        try:
            d.close()
        except Exception:
            pass


def evdev_probe(dev_dir: str = "/dev/input") -> tuple[bool, str]:
    """Can this process read the kernel's input devices? (readable, why); never raises."""
    from station.capture.input.devices import readable_nodes
    ok, denied = readable_nodes(dev_dir)
    if ok:
        return True, f"{len(ok)} readable evdev node(s) in {dev_dir}"
    if denied:
        return False, (f"{len(denied)} evdev node(s) in {dev_dir}, none readable by this account "
                       "(the capture account needs group input)")
    return False, f"no evdev nodes in {dev_dir}"


def input_backend(backend: Backend, env: Mapping[str, str] | None = None,
                  probe=xinput_version, configured: str = "auto", evdev=evdev_probe) -> tuple[str, str]:
    """Choose the input backend: ("evdev" | "xi2" | "pynput", reason). ``backend`` is
    ``detect()``'s choice; ``configured`` is ``input.backend`` (auto | evdev | xi2 | pynput);
    ``evdev()`` says whether ``/dev/input`` is readable (see ``evdev_probe``); ``probe(display)``
    returns the XInput version (see ``xinput_version``).

    Order: ``STATION_INPUT_BACKEND``, then ``input.backend`` unless "auto", then evdev where
    ``/dev/input`` is readable (X11 or Wayland), then XInput 2 / pynput under X11 as before.
    Raises UserError when STATION_INPUT_BACKEND holds an unknown name.
    """
    env = os.environ if env is None else env
    forced = env.get(INPUT_ENV_OVERRIDE, "").strip().lower()
    if forced:
        if forced not in INPUT_BACKENDS:
            raise UserError(f"{INPUT_ENV_OVERRIDE}={forced!r} is not an input backend; allowed: "
                            + ", ".join(INPUT_BACKENDS), exit_code=2)
        return forced, f"forced by {INPUT_ENV_OVERRIDE}"
    if configured and configured != "auto":
        return configured, f"input.backend = {configured!r} in the configuration"
    readable, why = evdev()
    if readable:
        return "evdev", f"{why}: the kernel's devices (identity, allow-list)"
    if backend.name != "x11":
        return "xi2", f"{why}; no X11 display (the source reports why it cannot capture)"
    version = probe(backend.display)
    if version is None:
        return "xi2", f"{why}; X display {backend.display} not reachable now: XInput 2 assumed"
    if version >= XI2_MIN_VERSION:
        return "xi2", f"{why}; XInputExtension {version[0]}.{version[1]} on {backend.display}"
    have = "no XInputExtension" if version == (0, 0) else f"XInputExtension {version[0]}.{version[1]}"
    return "pynput", f"{why}; {have} on {backend.display} (XI2 raw events need >= 2.1): X RECORD via pynput"
