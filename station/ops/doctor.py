"""``station doctor``: can this machine capture and record an exam? A list of pass/fail checks.

Checks (all required; each never raises, a failure is a ``Check`` with ``ok=False``):

- ``display``: the capture backend (``station.capture.platform``): X11 and reachable passes;
  Wayland fails with the message that other applications' input and focus are not visible;
  no display fails.
- ``input backend``: which keyboard/mouse backend the capture will use and why
  (``platform.input_backend``: evdev where ``/dev/input`` is readable by this account, else
  XInput 2 under X11; ``input.backend``, ``STATION_INPUT_BACKEND``); fails when it cannot see input;
- ``input hot-plug`` (a warning only; with the evdev backend): udev's events over netlink
  (``station.capture.input._hotplug``), or a rescan of ``/dev/input`` every 0.5 s where udev does
  not run (the warning says why);
- ``input allow-list`` (a warning only): ``input.allow`` pins the exam's devices, or is empty
  (every physical device gives evidence);
- ``xinput2``: XInput >= 2.1 (the X11 keyboard/mouse backend when evdev is not readable; required
  only when it is the chosen backend; flags input from devices without evidence, XTEST by default);
- ``xrecord``: the RECORD extension (needed only by the pynput fallback backend).
- ``window manager``: an EWMH window manager runs (``_NET_SUPPORTING_WM_CHECK``) and announces
  ``_NET_ACTIVE_WINDOW`` in ``_NET_SUPPORTED`` (event-driven focus capture).
- ``audio ...``: whatever ``station.capture.audio.doctor_checks(cfg)`` returns (devices, rates,
  headset profile); one failed ``audio`` check when that module is not available.
- ``focus``, ``input`` (GNOME or a wlroots compositor under Wayland): whether the station's GNOME
  Shell extension is on the session bus, owned by gnome-shell and answering (``focus_gnome.probe``),
  or the compositor offers the foreign-toplevel protocol (``focus_wlr.probe``); keyboard and
  mouse are not visible to a Wayland client (fails with ``WAYLAND_GNOME_MESSAGE``).
- ``config``: the configuration loads and validates.
- ``journal dir``: ``station.config.data_dir(cfg)`` is writable (or can be created).
- ``zmq curve``: libzmq was built with CURVE security (``zmq.has("curve")``).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable

from station.capture import platform


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _input_backend(backend: platform.Backend, configured: str) -> tuple[str, str]:
    try:
        return platform.input_backend(backend, configured=configured)
    except Exception as e:   # a bad STATION_INPUT_BACKEND
        return "", str(e)


def _input_check(backend: platform.Backend, configured: str) -> Check:
    """Which input backend the capture will use, and why; fails where it cannot see input."""
    chosen, why = _input_backend(backend, configured)
    if not chosen:
        return Check("input backend", False, why)
    if chosen == "evdev":
        ok, detail = platform.evdev_probe()
        return Check("input backend", ok, f"evdev: {why}" if ok else f"evdev chosen, but {detail}")
    if backend.name != "x11":
        return Check("input backend", False, f"{chosen}: {why}; {backend.reason}")
    return Check("input backend", True, f"{chosen}: {why}")


def _hotplug_check(backend: platform.Backend, configured: str) -> list[Check]:
    """How the evdev backend follows hot-plug (udev's events, or a rescan where udev does not
    run): a warning when it must rescan; nothing when another backend reads input."""
    if _input_backend(backend, configured)[0] != "evdev":
        return []
    from station.capture.input._hotplug import describe
    ok, how = describe()
    return [Check("input hot-plug", ok, how, required=False)]


def _allow_check(cfg) -> Check:
    """Whether the exam's input devices are pinned (``input.allow``); a warning, not required."""
    n = len(cfg.input.allow)
    if n:
        return Check("input allow-list", True, f"{n} entr{'y' if n == 1 else 'ies'}: only matching devices give evidence",
                     required=False)
    return Check("input allow-list", False, "input.allow is empty: every physical keyboard and mouse gives evidence, "
                 "a USB key injector too; pin the exam's devices with `station input devices`", required=False)


def _x11_checks(backend: platform.Backend, configured: str = "auto") -> list[Check]:
    if backend.name != "x11":
        why = "not an X11 session"
        return [Check("display", False, backend.reason),
                Check("xrecord", False, why), Check("window manager", False, why)]
    try:
        import Xlib.display
        d = Xlib.display.Display(backend.display or None)
    except Exception as e:
        detail = f"X display {backend.display} unreachable: {type(e).__name__}: {e}"
        return [Check("display", False, detail), Check("xrecord", False, "no X display"),
                Check("window manager", False, "no X display")]
    try:
        out = [Check("display", True, f"X11 {backend.display} ({d.display.info.vendor})")]
        chosen, _ = _input_backend(backend, configured)
        xi = platform.xinput_version(backend.display)
        xi_ok = xi is not None and xi >= (2, 1)
        out.append(Check("xinput2", xi_ok, f"XInput {xi[0]}.{xi[1]}" + (" (input backend)" if chosen == "xi2" else "")
                         if xi else "no XInputExtension", required=chosen == "xi2"))
        if d.has_extension("RECORD"):
            out.append(Check("xrecord", True, "RECORD extension present", required=chosen == "pynput"))
        else:
            out.append(Check("xrecord", False, "the X server has no RECORD extension (needed only by the "
                                               "pynput input backend)", required=chosen == "pynput"))
        out.append(_ewmh_check(d))
        return out
    finally:
        d.close()


def _ewmh_check(d) -> Check:
    root = d.screen().root
    check = root.get_full_property(d.intern_atom("_NET_SUPPORTING_WM_CHECK"), 0)
    if check is None or not len(check.value):
        return Check("window manager", False, "no EWMH window manager (_NET_SUPPORTING_WM_CHECK "
                                              "unset): start one (e.g. openbox)")
    name = ""
    try:
        win = d.create_resource_object("window", int(check.value[0]))
        p = win.get_full_property(d.intern_atom("_NET_WM_NAME"), 0)
        if p is not None and p.value:
            name = p.value.decode("utf-8", "replace") if isinstance(p.value, bytes) else str(p.value)
    except Exception:
        pass
    supported = root.get_full_property(d.intern_atom("_NET_SUPPORTED"), 0)
    active = d.intern_atom("_NET_ACTIVE_WINDOW")
    if supported is None or active not in list(supported.value):
        return Check("window manager", False, f"window manager {name or '?'} does not support "
                                              "_NET_ACTIVE_WINDOW: focus cannot be followed")
    return Check("window manager", True, f"{name or 'EWMH window manager'}, _NET_ACTIVE_WINDOW supported")


def _wayland_checks(backend: platform.Backend, configured: str = "auto") -> list[Check]:
    """What works in a GNOME or wlroots Wayland session: focus; input only through evdev."""
    try:
        kind, _ = platform.focus_backend(backend)
    except Exception as e:
        return [Check("focus", False, str(e))]
    if kind not in ("gnome", "wlroots") or backend.name == "x11":
        return []
    if kind == "gnome":
        from station.capture import focus_gnome
        from station.capture.focus import read_comm
        ok, detail = focus_gnome.probe(read_comm)
    else:
        from station.capture import focus_wlr
        ok, detail = focus_wlr.probe()
    chosen, why = _input_backend(backend, configured)
    if chosen == "evdev":
        return [Check("focus", ok, detail), Check("input", True, f"evdev: {why}")]
    return [Check("focus", ok, detail), Check("input", False, backend.reason)]


def _audio_checks(cfg) -> list[Check]:
    try:
        audio = importlib.import_module("station.capture.audio")
    except ImportError as e:
        return [Check("audio", False, f"audio source not available: {e}")]
    fn: Callable | None = getattr(audio, "doctor_checks", None)
    if fn is None:
        return [Check("audio", False, "station.capture.audio has no doctor_checks")]
    try:
        results = fn(cfg)
    except Exception as e:
        return [Check("audio", False, f"audio checks failed: {type(e).__name__}: {e}")]
    return [Check(str(name), bool(ok), str(detail)) for name, ok, detail in results]


def _journal_check(cfg) -> Check:
    from station.config import data_dir
    path = data_dir(cfg)
    if path.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
                pass
        except OSError as e:
            return Check("journal dir", False, f"{path} is not writable: {e.strerror}")
        return Check("journal dir", True, f"{path} writable")
    if path.exists():
        return Check("journal dir", False, f"{path} exists and is not a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check("journal dir", True, f"{path} will be created (under writable {parent})")
    return Check("journal dir", False, f"{path} does not exist and {parent} is not writable")


def _curve_check() -> Check:
    try:
        import zmq
    except ImportError as e:
        return Check("zmq curve", False, f"pyzmq missing: {e}")
    if zmq.has("curve"):
        return Check("zmq curve", True, f"libzmq {zmq.zmq_version()} with CURVE")
    return Check("zmq curve", False, f"libzmq {zmq.zmq_version()} built without CURVE: "
                                     "station-console traffic cannot be encrypted")


def run_checks(load_config: Callable[[], Any]) -> list[Check]:
    """Run every check. ``load_config`` returns a Config or raises ConfigError / UserError."""
    from station.config import ConfigError
    from station.errors import UserError

    try:
        backend = platform.detect()
    except UserError as e:
        backend = platform.Backend("none", "", str(e))
    cfg = None
    try:
        cfg = load_config()
        config_check = Check("config", True, "valid: " + ", ".join(cfg.sources))
    except (ConfigError, UserError) as e:
        config_check = Check("config", False, str(e))
    configured = cfg.input.backend if cfg is not None else "auto"
    checks = _x11_checks(backend, configured)
    checks += _wayland_checks(backend, configured)
    checks.append(_input_check(backend, configured))
    checks += _hotplug_check(backend, configured)
    if cfg is not None:
        checks.append(_allow_check(cfg))
    if cfg is not None:
        checks += _audio_checks(cfg)
    else:
        checks.append(Check("audio", False, "not checked: configuration invalid"))
    checks.append(config_check)
    checks.append(_journal_check(cfg) if cfg is not None
                  else Check("journal dir", False, "not checked: configuration invalid"))
    checks.append(_curve_check())
    return checks


def all_ok(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def format_table(checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'check':<{width}}  result  detail"]
    for c in checks:
        result = "PASS" if c.ok else ("FAIL" if c.required else "WARN")
        lines.append(f"{c.name:<{width}}  {result:<6}  {c.detail}")
    lines.append("all required checks pass" if all_ok(checks) else "some required checks FAILED")
    return "\n".join(lines)
