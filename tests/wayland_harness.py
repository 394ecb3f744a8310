"""Real Wayland compositors for tests, with GTK 4 windows on them.

``GnomeSession``: GNOME Shell (headless), the station's focus extension installed by
``station install`` into a private root. ``SwaySession``: sway (wlroots, headless backend).

    with GnomeSession(tmp_path) as g:             # private session bus, gnome-shell --headless
        g.env                                      # what a capture in this session sees
        w = g.open_window("org.example.crm", "Klant 4471")
        w.set_title("Klant 4471 - address"); w.close()
        g.set_extension(False)                     # like `gnome-extensions disable`

Everything is private: HOME, XDG dirs, runtime dir, a session bus (``dbus-daemon --session``),
a stand-in system bus (gnome-shell asks logind on it; nothing answers), GSettings in a keyfile
(``GSETTINGS_BACKEND=keyfile``, which gnome-shell watches, so changing it is like the user
changing a setting). The shell runs ``--headless --wayland --no-x11 --virtual-monitor``.
Windows are GTK 4 programs (this file run by the system python3 with python3-gi). Every process
is stopped by its own pid on ``close()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
UUID = "station-focus@station.be"
SYSTEM_PYTHON = "/usr/bin/python3"   # has python3-gi (Debian); the venv has no gi


class GnomeError(RuntimeError):
    pass


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class GtkWindow:
    __test__ = False

    def __init__(self, proc: subprocess.Popen, app_id: str, title: str):
        self.proc, self.app_id, self.title = proc, app_id, title

    @property
    def pid(self) -> int:
        return self.proc.pid

    def set_title(self, title: str) -> None:
        self.proc.stdin.write(f"title {title}\n")
        self.proc.stdin.flush()
        self.title = title

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except Exception:
                _stop(self.proc)


class GnomeSession:
    def __init__(self, root: Path, width: int = 1024, height: int = 768):
        self.root = Path(root)
        self.size = f"{width}x{height}"
        self.procs: list[subprocess.Popen] = []
        self.windows: list[GtkWindow] = []
        self.shell: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def __enter__(self) -> "GnomeSession":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        home, inst = self.root / "home", self.root / "sysroot"
        runtime = self.root / "run"
        for d in (home / ".config" / "glib-2.0" / "settings", home / ".cache", runtime):
            d.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        # the extension exactly as `station install` lays it out (system-wide, for every user)
        r = subprocess.run([sys.executable, "-m", "station", "install", "--root", str(inst),
                            "--no-create-account", "--owner", "root", "--station-id", "gnome-test"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise GnomeError(f"station install failed: {r.stderr.strip()}")
        ext = inst / "usr/share/gnome-shell/extensions" / UUID
        if not (ext / "extension.js").exists():
            raise GnomeError(f"station install did not install the extension: {r.stdout}")
        data = home / ".local/share"
        (data / "gnome-shell/extensions").mkdir(parents=True, exist_ok=True)
        # gnome-shell finds system extensions in XDG_DATA_DIRS; the private root's share dir first
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DBUS_", "XDG_", "WAYLAND_")) and k not in ("DISPLAY", "HOME")}
        self.env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(home / ".config"),
                        XDG_DATA_HOME=str(data), XDG_CACHE_HOME=str(home / ".cache"),
                        XDG_DATA_DIRS=f"{inst / 'usr/share'}:/usr/local/share:/usr/share",
                        GSETTINGS_BACKEND="keyfile", XDG_CURRENT_DESKTOP="GNOME", XDG_SESSION_TYPE="wayland",
                        WAYLAND_DISPLAY="station-test-wl", NO_AT_BRIDGE="1", GDK_BACKEND="wayland")
        self.set_extension(True)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self._bus("session")
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = self._bus("system")
        self.shell = subprocess.Popen(["gnome-shell", "--headless", "--wayland", "--no-x11",
                                       "--virtual-monitor", self.size, "--wayland-display",
                                       self.env["WAYLAND_DISPLAY"]], env=self.env,
                                      stdout=subprocess.DEVNULL, stderr=open(self.root / "shell.log", "wb"))
        self.procs.append(self.shell)
        deadline = time.monotonic() + timeout
        while not self.name_owned("org.gnome.Shell"):
            if self.shell.poll() is not None or time.monotonic() > deadline:
                raise GnomeError("gnome-shell did not start: " + self.log_tail())
            time.sleep(0.1)
        # the shell starts in the Activities overview (and shows it again at the end of its start-up
        # animation): leave it, as a user's first click does; a window mapped under the overview
        # does not get the focus
        self.leave_overview(deadline)

    def overview_active(self) -> bool | None:
        try:
            return "true" in self.gdbus("call", "--dest", "org.gnome.Shell", "--object-path", "/org/gnome/Shell",
                                        "--method", "org.freedesktop.DBus.Properties.Get", "org.gnome.Shell",
                                        "OverviewActive", timeout=5)
        except (GnomeError, subprocess.TimeoutExpired):
            return None     # the shell's UI is not up yet

    def leave_overview(self, deadline: float | None = None) -> None:
        """Close the overview and wait until it stays closed for 1 s."""
        deadline = deadline or time.monotonic() + 30
        calm_since = None
        while True:
            state = self.overview_active()
            if state is False:
                calm_since = calm_since or time.monotonic()
                if time.monotonic() - calm_since >= 1.0:
                    return
            else:
                calm_since = None
                if state is True:
                    self.gdbus("call", "--dest", "org.gnome.Shell", "--object-path", "/org/gnome/Shell", "--method",
                               "org.freedesktop.DBus.Properties.Set", "org.gnome.Shell", "OverviewActive", "<false>")
            if self.shell.poll() is not None or time.monotonic() > deadline:
                raise GnomeError("gnome-shell's overview did not close: " + self.log_tail())
            time.sleep(0.1)

    def _bus(self, kind: str) -> str:
        # both are session-type buses: a stand-in system bus needs no root policy
        p = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nosyslog", "--print-address=1"],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        addr = p.stdout.readline().strip()
        if not addr:
            raise GnomeError(f"dbus-daemon ({kind}) did not start")
        return addr

    def close(self) -> None:
        for w in self.windows:
            w.close()
        for p in reversed(self.procs):
            _stop(p)
        self.procs.clear()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.root / "shell.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- the session -------------------------------------------------------------------------
    def gdbus(self, *args: str, timeout: float = 20) -> str:
        r = subprocess.run(["gdbus", args[0], "--session", *args[1:]], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise GnomeError(f"gdbus {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def name_owned(self, name: str) -> bool:
        try:
            out = self.gdbus("call", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus",
                             "--method", "org.freedesktop.DBus.NameHasOwner", name, timeout=5)
        except (GnomeError, subprocess.TimeoutExpired):
            return False
        return "true" in out

    def set_extension(self, enabled: bool) -> None:
        """Enable or disable the extension through the user's settings (as `gnome-extensions
        disable` or the Extensions app do): the running shell follows the change."""
        keyfile = Path(self.env["XDG_CONFIG_HOME"]) / "glib-2.0/settings/keyfile"
        lst = f"['{UUID}']" if enabled else "@as []"
        tmp = keyfile.with_suffix(".tmp")
        tmp.write_text(f"[org/gnome/shell]\nenabled-extensions={lst}\ndisable-user-extensions=false\n")
        tmp.replace(keyfile)

    def open_window(self, app_id: str, title: str) -> GtkWindow:
        if self.overview_active():
            self.leave_overview()
        w = open_gtk_window(self.env, app_id, title)
        self.windows.append(w)
        return w


def open_gtk_window(env: dict[str, str], app_id: str, title: str) -> GtkWindow:
    """A GTK 4 window (Wayland) with application id ``app_id`` and ``title``, once mapped."""
    proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE), "window", app_id, title], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if line != "mapped":
        _stop(proc)
        raise GnomeError(f"GTK window {app_id!r} did not map")
    return GtkWindow(proc, app_id, title)


class SwaySession:
    """sway on its headless backend, run as ``nobody`` (sway refuses to run as root) with a private
    runtime directory; ``env`` is what a client of this session sees (root may connect)."""

    def __init__(self, root: Path, user: str = "nobody"):
        self.root, self.user = Path(root), user
        self.modes: list[tuple[Path, int]] = []
        self.proc: subprocess.Popen | None = None
        self.windows: list[GtkWindow] = []
        self.env: dict[str, str] = {}

    def __enter__(self) -> "SwaySession":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 30.0) -> None:
        import pwd
        runtime = self.root / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam(self.user)
        os.chown(runtime, pw.pw_uid, pw.pw_gid)
        runtime.chmod(0o700)
        for d in [self.root, *self.root.parents]:      # nobody must reach its runtime dir (undone in close)
            mode = d.stat().st_mode & 0o7777
            if mode & 0o001 == 0:
                d.chmod(mode | 0o001)
                self.modes.append((d, mode))
        conf = self.root / "sway.conf"
        conf.write_text("output HEADLESS-1 resolution 1024x768\n")
        conf.chmod(0o644)
        senv = {"XDG_RUNTIME_DIR": str(runtime), "WLR_BACKENDS": "headless", "WLR_LIBINPUT_NO_DEVICES": "1",
                "WLR_RENDERER": "pixman", "HOME": str(self.root), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.proc = subprocess.Popen(["runuser", "-u", self.user, "--", "env", "-i",
                                      *[f"{k}={v}" for k, v in senv.items()], "sway", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sway.log", "wb"))
        deadline = time.monotonic() + timeout
        while not (runtime / "wayland-1").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise GnomeError("sway did not start: " + (self.root / "sway.log").read_text(errors="replace")[-1500:])
            time.sleep(0.05)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DBUS_", "XDG_", "WAYLAND_")) and k != "DISPLAY"}
        self.env.update(XDG_RUNTIME_DIR=str(runtime), WAYLAND_DISPLAY="wayland-1", XDG_CURRENT_DESKTOP="sway",
                        HOME=str(self.root), XDG_CACHE_HOME=str(self.root / "cache"),
                        XDG_SESSION_TYPE="wayland", GDK_BACKEND="wayland", NO_AT_BRIDGE="1")

    def open_window(self, app_id: str, title: str) -> GtkWindow:
        w = open_gtk_window(self.env, app_id, title)
        self.windows.append(w)
        return w

    def focus(self, app_id: str) -> None:
        """Give the window of ``app_id`` the keyboard focus (swaymsg over sway's IPC socket)."""
        socks = sorted((self.root / "run").glob("sway-ipc.*.sock"))
        if socks:
            subprocess.run(["swaymsg", "-s", str(socks[-1]), f'[app_id="{app_id}"] focus'],
                           capture_output=True, timeout=10)

    def close(self) -> None:
        for w in self.windows:
            w.close()
        if self.proc is not None and self.proc.poll() is None:
            # runuser forwards the signal to sway
            _stop(self.proc)
        for d, mode in reversed(self.modes):
            d.chmod(mode)
        self.modes.clear()


def available(*binaries: str) -> str:
    """"" when a headless compositor (default: GNOME Shell) can run here, else what is missing."""
    missing = [b for b in (binaries or ("gnome-shell", "dbus-daemon", "gdbus")) if shutil.which(b) is None]
    if not Path(SYSTEM_PYTHON).exists():
        missing.append(SYSTEM_PYTHON)
    else:
        r = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gtk', '4.0')"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            missing.append("python3-gi with GTK 4 (gir1.2-gtk-4.0)")
    return ", ".join(missing)


# -- the window program (system python3 with GTK 4) --------------------------------------------
def _window_main(app_id: str, title: str) -> None:
    import threading

    import gi
    gi.require_version("Gtk", "4.0")
    from gi.repository import GLib, Gtk

    GLib.set_prgname(app_id)   # the Wayland app id when the application is not on a session bus
    app = Gtk.Application(application_id=app_id)

    def on_activate(a):
        w = Gtk.ApplicationWindow(application=a, title=title)
        w.present()

        def reader():
            for line in sys.stdin:
                line = line.rstrip("\n")
                if line.startswith("title "):
                    GLib.idle_add(w.set_title, line[6:])
                elif line == "quit":
                    break
            GLib.idle_add(a.quit)

        threading.Thread(target=reader, daemon=True).start()
        print("mapped", flush=True)

    app.connect("activate", on_activate)
    app.run([])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "window":
        _window_main(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
