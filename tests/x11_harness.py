"""A real X11 session for tests and benchmarks: Xvfb + openbox + xdotool + windows of known class.

    with X11Session() as x:                      # Xvfb on a free display, openbox as EWMH WM
        crm = x.open_window("crm-app", "Customer 42")   # WM_CLASS class part and title
        x.activate(crm)                          # xdotool windowactivate --sync
        x.xdotool("type", "--delay", "20", "hello")
        x.kill_server(); x.restart_server()      # same display number; openbox restarted

Windows are tiny python-xlib programs (this file run as a script, mode ``window``) so that the
test controls WM_CLASS, the title (``win.set_title``), _NET_WM_PID, and can destroy them
(``win.close()``). Every subprocess is bounded by timeouts and killed on ``close()``.

Needs the binaries Xvfb, openbox, xdotool (``tests.support.require`` them first).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


class HarnessError(RuntimeError):
    pass


class TestWindow:
    """A window process. ``wid``: X window id; ``pid``: its process id (also in _NET_WM_PID)."""

    __test__ = False  # not a pytest test class

    def __init__(self, proc: subprocess.Popen, wid: int, wm_class: str, title: str):
        self.proc, self.wid, self.wm_class, self.title = proc, wid, wm_class, title

    @property
    def pid(self) -> int:
        return self.proc.pid

    def set_title(self, title: str) -> None:
        self.proc.stdin.write(f"title {title}\n".encode())
        self.proc.stdin.flush()
        self.title = title

    def close(self) -> None:
        """Destroy the window (the process exits)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=3)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=3)


class X11Session:
    """Xvfb + openbox on a free display number (Xvfb picks it with -displayfd)."""

    def __init__(self, width: int = 1024, height: int = 768, wm: bool = True):
        self.width, self.height, self.wm = width, height, wm
        self.display = ""
        self.xvfb: subprocess.Popen | None = None
        self.openbox: subprocess.Popen | None = None
        self.windows: list[TestWindow] = []

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "X11Session":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
        env["DISPLAY"] = self.display
        return env

    def start(self, display: str | None = None) -> None:
        args = ["Xvfb", "-screen", "0", f"{self.width}x{self.height}x24", "-nolisten", "tcp",
                "-noreset"]
        if display is None:
            r, w = os.pipe()
            self.xvfb = subprocess.Popen(args + ["-displayfd", str(w)], pass_fds=(w,),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.close(w)
            try:
                num = _read_line(r, 10.0)
            finally:
                os.close(r)
            if not num:
                raise HarnessError("Xvfb did not report a display number")
            self.display = f":{num}"
        else:
            self.display = display
            self.xvfb = subprocess.Popen(args + [display], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            self._wait_reachable(10.0)
        if self.wm:
            self.openbox = subprocess.Popen(["openbox", "--sm-disable"], env=self.env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait_wm(10.0)

    def _wait_reachable(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.xvfb.poll() is not None:
                raise HarnessError(f"Xvfb exited with {self.xvfb.returncode}")
            if subprocess.run(["xdotool", "getdisplaygeometry"], env=self.env, capture_output=True,
                              timeout=5).returncode == 0:
                return
            time.sleep(0.05)
        raise HarnessError(f"X display {self.display} not reachable")

    def _wait_wm(self, timeout: float) -> None:
        import Xlib.display
        deadline = time.monotonic() + timeout
        d = Xlib.display.Display(self.display)
        try:
            atom = d.intern_atom("_NET_SUPPORTING_WM_CHECK")
            while time.monotonic() < deadline:
                p = d.screen().root.get_full_property(atom, 0)
                if p is not None and len(p.value):
                    return
                time.sleep(0.05)
        finally:
            d.close()
        raise HarnessError("openbox did not become the window manager")

    def kill_server(self) -> None:
        """Kill Xvfb (and with it openbox and every window)."""
        if self.xvfb and self.xvfb.poll() is None:
            self.xvfb.terminate()
            self.xvfb.wait(timeout=10)
        for p in [self.openbox] + [w.proc for w in self.windows]:
            if p is not None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.windows.clear()
        self.openbox = None

    def restart_server(self) -> None:
        """Start Xvfb (and openbox) again on the same display number."""
        self.start(self.display)

    def close(self) -> None:
        for w in self.windows:
            w.close() if w.proc.poll() is None else None
        for p in (self.openbox, self.xvfb):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.windows.clear()

    # -- windows and input -----------------------------------------------------------------
    def open_window(self, wm_class: str, title: str, timeout: float = 10.0,
                    instance: str | None = None) -> TestWindow:
        """A window with WM_CLASS (``instance`` or wm_class.lower(), ``wm_class``) and ``title``."""
        inst = wm_class.lower() if instance is None else instance
        proc = subprocess.Popen([sys.executable, str(HERE), "window", self.display, wm_class, title, inst],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env)
        line = _read_line(proc.stdout.fileno(), timeout)
        if not line or not line.startswith("wid "):
            proc.kill()
            raise HarnessError(f"window {wm_class!r} did not map")
        w = TestWindow(proc, int(line.split()[1]), wm_class, title)
        self.windows.append(w)
        return w

    def xdotool(self, *args: str, timeout: float = 30.0) -> str:
        r = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"xdotool {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def xdotool_shell(self) -> "XdotoolShell":
        """A long-running ``xdotool -`` (commands read line by line from stdin): no process start
        per command, so delays measured from ``send`` are the X path, not fork/exec."""
        return XdotoolShell(self.env)

    def activate(self, win: TestWindow) -> None:
        self.xdotool("windowactivate", "--sync", str(win.wid))

    def active_window(self) -> int:
        return int(self.xdotool("getactivewindow").strip() or 0)


@contextlib.contextmanager
def x11_test_session():
    """A module's X11 desktop for tests: Xvfb + openbox (``X11Session``) with this process's
    environment pointing at it (``DISPLAY`` set; Wayland markers and the capture's backend
    overrides cleared), restored afterwards. Skips, or fails under CI, without Xvfb/openbox/xdotool."""
    import pytest

    from station.capture import platform
    from tests.support import require
    require("Xvfb", "openbox", "xdotool")
    with pytest.MonkeyPatch.context() as mp, X11Session() as x:
        for var in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", platform.ENV_OVERRIDE, platform.INPUT_ENV_OVERRIDE):
            mp.delenv(var, raising=False)
        mp.setenv("DISPLAY", x.display)
        yield x


class Capture:
    """Focus + input sources of this checkout running against the session's display, collecting
    every event. ``wait_for(pred)`` returns the first collected event matching ``pred``.
    ``allow_xtest``: xdotool's XTEST devices on the allow-list (``tests.support.xtest_input``), so
    its input counts as a candidate's; False: off it, flagged injected as on an exam PC."""

    def __init__(self, cfg, key_times=None, with_input: bool = True, allow_xtest: bool = True):
        from station.capture.focus import FocusSource, FocusState
        from station.capture.input import InputSource
        from station.eventqueue import EventQueue
        from tests.support import xtest_input

        cfg = xtest_input(cfg, allow=allow_xtest)

        self.queue = EventQueue()
        self.state = FocusState()
        self.focus = FocusSource(cfg, self.state)
        self.input = InputSource(cfg, self.state, key_times) if with_input else None
        self.events: list = []

    def start(self, timeout: float = 10.0) -> "Capture":
        self.focus.start(self.queue)
        if self.input is None:       # focus only (GNOME Wayland: no input source there)
            return self
        self.input.start(self.queue)
        if not (self.focus.connected.wait(timeout) and self.input.connected.wait(timeout)):
            raise HarnessError("capture sources did not connect: "
                               f"{self.focus.status()} {self.input.status()}")
        time.sleep(0.1)  # X RECORD context enabled just after pynput reports ready
        return self

    def stop(self) -> None:
        if self.input is not None:
            self.input.stop()
        self.focus.stop()
        self.collect()

    def collect(self) -> list:
        self.events.extend(self.queue.drain_events())
        return self.events

    def of(self, cls, since_ns: int = 0) -> list:
        self.collect()
        return [e for e in self.events if isinstance(e, cls) and e.t_ns >= since_ns]

    def wait_event(self, pred, timeout: float = 5.0, start: int = 0):
        """First event (from index ``start`` of ``events``) matching pred, or None on timeout."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            self.collect()
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


class XdotoolShell:
    """``xdotool -`` kept running; ``send(cmd)`` returns monotonic_ns() taken just before writing."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(["xdotool", "-"], stdin=subprocess.PIPE, env=env,
                                     stdout=subprocess.DEVNULL, text=True)

    def send(self, cmd: str) -> int:
        t0 = time.monotonic_ns()
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return t0

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "XdotoolShell":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-q * len(v) // 100)) - 1))
    return v[k]


def _read_line(fd: int, timeout: float) -> str:
    """Read one line from a raw fd with a timeout ("" on timeout or EOF)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return ""
        chunk = os.read(fd, 256)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode().strip()


# -- the window program (runs in its own process) ---------------------------------------------
def _window_main(display: str, wm_class: str, title: str, instance: str) -> None:
    import Xlib.display
    import Xlib.X

    d = Xlib.display.Display(display)
    screen = d.screen()
    win = screen.root.create_window(10, 10, 300, 200, 0, screen.root_depth,
                                    background_pixel=screen.white_pixel,
                                    event_mask=Xlib.X.StructureNotifyMask | Xlib.X.KeyPressMask)
    win.set_wm_class(instance, wm_class)
    utf8, net_name = d.intern_atom("UTF8_STRING"), d.intern_atom("_NET_WM_NAME")

    def set_title(t: str) -> None:
        win.set_wm_name(t.encode("latin-1", "replace").decode("latin-1"))  # STRING; full text below
        win.change_property(net_name, utf8, 8, t.encode())

    set_title(title)
    win.change_property(d.intern_atom("_NET_WM_PID"), Xlib.Xatom.CARDINAL, 32, [os.getpid()])
    win.map()
    d.flush()
    while True:
        ev = d.next_event()
        if ev.type == Xlib.X.MapNotify:
            break
    print(f"wid {win.id}", flush=True)
    xfd, infd = d.fileno(), sys.stdin.fileno()
    while True:
        while d.pending_events():
            d.next_event()
        r, _, _ = select.select([xfd, infd], [], [])
        if infd in r:
            line = sys.stdin.readline()
            if not line or line.strip() == "quit":
                win.destroy()
                d.sync()
                return
            if line.startswith("title "):
                set_title(line[6:].rstrip("\n"))
                d.flush()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "window":
        import Xlib.Xatom  # noqa: F401
        try:
            _window_main(*sys.argv[2:6])
        except Exception:  # the X server went away: just exit
            sys.exit(0)
    else:
        print(__doc__)
        sys.exit(2)
