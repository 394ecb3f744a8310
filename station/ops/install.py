"""Installation of the station on an exam PC (``station install`` / ``station uninstall``).

Layout, relative to ``root`` (``/`` on a real PC; a temporary directory in tests):

system scope (the exam deployment of ARCHITECTURE.md; needs root)::

    etc/station/station.toml                 0644 root   configuration (template; never overwritten)
    etc/systemd/system/station-recorder.service  0644    recorder: journal, engine, publisher, keys
    etc/systemd/system/station-console.service   0644    assessor console
    etc/systemd/system/station-proxy.service     0644    streaming fan-out proxy
    etc/systemd/system/station-capture.service   0644    capture, account station-capture
    usr/local/lib/station/session-grant          0755    run at each graphical login: display and
    etc/xdg/autostart/station-session-grant.desktop      sound server for the capture account
    etc/tmpfiles.d/station.conf                  0644    /run/station-audio (the sound grant's socket)
    etc/pipewire/pipewire-pulse.conf.d/station.conf      the same socket for pipewire-pulse
    usr/share/gnome-shell/extensions/station-focus@station.be/  0644   focus on GNOME Wayland
    etc/dconf/db/local.d/00-station-focus    0644   extension enabled for every user; Looking Glass off
    etc/dconf/db/local.d/locks/00-station-focus  0644   ... and the candidate cannot change that
    etc/dconf/profile/user                   0644   only when missing: user-db:user, system-db:local
    var/lib/station                          0700 station:station   journals (sessions/, 0700)
    var/lib/station/keys                     0700 station:station   station.key_secret 0600
    var/lib/station/keys/authorized          0700 station:station   console public keys

    Two system accounts (no login shell) are created when missing (on the host, also with
    ``--root``: file owners need a real uid): ``station`` (the recorder) and ``station-capture``
    (the capture; groups ``station`` for the hand-over socket and ``input`` for /dev/input). The
    capture account is the only other member of group ``station``: the socket directory
    ``/run/station`` is 0750 station:station, so no exam account can even reach
    ``/run/station/capture.sock``, and the recorder refuses every peer but the capture account
    (``SO_PEERCRED``). An older install told admins to add exam accounts to group ``station``:
    ``install`` removes every other member from that group (and an old per-user capture unit).

user scope (practice stations: the whole agent as one user service)::

    ~/.config/systemd/user/station-agent.service
    ~/.config/station/station.toml           0600   (the units pass it with --config)
    ~/.local/share/station[/keys[/authorized]]  0700

Idempotent: every step compares what is there with what should be there and reports
``created``, ``updated`` or ``unchanged``; a second run changes nothing and says so. A config file
the admin edited is kept (``kept``), never overwritten. ``uninstall`` removes units and an unedited
config; journals and keys stay unless ``purge`` (then the data directories and the account go too).

Failure modes: a path that exists with the wrong type, a missing template, or a failing
``useradd`` raise ``UserError`` with the path and reason.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from station.errors import UserError

REPO = Path(__file__).resolve().parents[2]   # the checkout (this file is station/ops/install.py)
UNIT_DIR = REPO / "systemd"
CONFIG_TEMPLATE_NAME = "station.toml"
DEFAULT_EXEC = "/usr/local/bin/station"
ACCOUNT = "station"
CAPTURE_ACCOUNT = "station-capture"
CAPTURE_GROUPS = ("station", "input")   # the hand-over socket's group; /dev/input
SYSTEM_UNITS = ("station-recorder.service", "station-console.service", "station-proxy.service",
                "station-capture.service")
LEGACY_UNITS = ("etc/systemd/user/station-capture.service",)   # older installs: capture as the candidate
USER_UNITS = ("station-agent.service",)
GRANT_SCRIPT = "usr/local/lib/station/session-grant"
GRANT_AUTOSTART = "etc/xdg/autostart/station-session-grant.desktop"
TMPFILES = "etc/tmpfiles.d/station.conf"
PIPEWIRE_DROPIN = "etc/pipewire/pipewire-pulse.conf.d/station.conf"
CAPTURE_SOCKET = "/run/station/capture.sock"

SYSTEM_CONFIG = """\
# /etc/station/station.toml: this exam PC's settings. Only the keys you change are needed;
# every key, its default and its range: `station doctor`, config/station.toml in the sources.
# Written by `station install`; never overwritten by it (delete it to get the template again).

[station]
id = "{station_id}"             # shown to assessors: set a unique id per PC (letters, digits, - _)
mode = "exam"                   # refuses simulated (scenario) sources
data_dir = "/var/lib/station"   # journals and keys (owner station, 0700)
retention_days = 90
headset = ""                    # headset id after `station calibrate` (config/headsets/<id>.toml)

[input]
# Only these keyboards and mice give evidence (docs/operations.md "Input devices"). Run
# `station input devices` as root with exactly the exam's devices plugged in and paste the
# entries it prints here. [] = every physical device, a USB key injector too: pin them.
allow = []

[handover]
socket = "{socket}"  # capture (account station-capture) -> recorder (account station)
capture_user = "{capture_user}"   # the only account the recorder accepts on the socket

[publisher]
enabled = true
pub_bind = "tcp://*:5556"
req_bind = "tcp://*:5557"
# consoles allowed in: `station keys authorize CONSOLE.key` (as the station user)
"""

USER_CONFIG = """\
# {path}: this user's station settings (practice / single-user agent).
[station]
id = "{station_id}"
data_dir = "{data_dir}"
"""


@dataclass
class Step:
    path: str
    action: str        # created | updated | unchanged | kept | removed | absent
    detail: str = ""

    def line(self) -> str:
        return f"{self.action:9s} {self.path}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    scope: str
    root: Path
    exe: str
    owner: str | None          # account owning data and keys (system scope)
    station_id: str
    home: Path | None = None   # user scope

    # ---------------------------------------------------------------- paths
    def p(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    @property
    def config_path(self) -> Path:
        if self.scope == "system":
            return self.p("etc/station/station.toml")
        return self.home / ".config/station/station.toml"

    @property
    def data_dir(self) -> Path:
        if self.scope == "system":
            return self.p("var/lib/station")
        return self.home / ".local/share/station"

    def unit_targets(self) -> list[tuple[str, Path]]:
        if self.scope == "system":
            return [(u, self.p("etc/systemd/system") / u) for u in SYSTEM_UNITS]
        return [(u, self.home / ".config/systemd/user" / u) for u in USER_UNITS]


def make_plan(scope: str = "system", root: str | Path = "/", exe: str | None = None,
              owner: str | None = ACCOUNT, station_id: str | None = None, home: str | Path | None = None) -> Plan:
    """Where things go. exe: the ``station`` command the units start (default: the one running
    now, i.e. ``<sys.prefix>/bin/station``, or /usr/local/bin/station)."""
    if scope not in ("system", "user"):
        raise UserError(f"--scope must be system or user, not {scope!r}", exit_code=2)
    if exe is None:
        cand = Path(sys.prefix) / "bin" / "station"
        exe = str(cand) if cand.exists() else (shutil.which("station") or DEFAULT_EXEC)
    if not os.path.isabs(exe):
        raise UserError(f"the station command must be an absolute path, not {exe!r}", exit_code=2)
    sid = station_id or _default_station_id()
    root = Path(root)
    if scope == "user":
        home = Path(home) if home else Path(os.path.expanduser("~"))
        if str(root) != "/":
            home = root / str(home).lstrip("/")
    return Plan(scope, root, exe, owner if scope == "system" else None, sid, home)


def _default_station_id() -> str:
    import socket
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return name or "station-01"


# ---------------------------------------------------------------- rendering
def render_unit(name: str, plan: Plan) -> str:
    src = UNIT_DIR / name
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{src}: unit template missing: {e.strerror}") from None
    cmd = plan.exe
    if plan.scope == "user":
        cmd = f"{plan.exe} --no-system-config --config {plan.config_path}"
    return text.replace(DEFAULT_EXEC, cmd, 1) if DEFAULT_EXEC in text else text


def render_config(plan: Plan) -> str:
    if plan.scope == "system":
        return SYSTEM_CONFIG.format(station_id=plan.station_id, socket=CAPTURE_SOCKET, capture_user=CAPTURE_ACCOUNT)
    return USER_CONFIG.format(path=plan.config_path, station_id=plan.station_id, data_dir=plan.data_dir)


# ---------------------------------------------------------------- primitives
def _ids(owner: str | None) -> tuple[int, int]:
    if owner is None:
        return os.getuid(), os.getgid()
    pw = pwd.getpwnam(owner)
    return pw.pw_uid, pw.pw_gid


def ensure_account(name: str, home: str = "/var/lib/station", comment: str = "exam station recorder") -> Step:
    """The system user and group ``name`` (no login shell)."""
    try:
        pwd.getpwnam(name)
        return Step(f"user {name}", "unchanged")
    except KeyError:
        pass
    try:
        grp.getgrnam(name)
        group_opt = ["--gid", name]
    except KeyError:
        group_opt = ["--user-group"]
    cmd = ["useradd", "--system", *group_opt, "--home-dir", home, "--no-create-home",
           "--shell", "/usr/sbin/nologin", "--comment", comment, name]
    _run_tool(cmd, f"create the account {name}")
    return Step(f"user {name}", "created", "system account, no login")


def _run_tool(cmd: list[str], what: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot {what}: {e}") from None
    if r.returncode != 0:
        raise UserError(f"cannot {what}: {r.stderr.strip() or r.returncode}")


def ensure_in_groups(user: str, groups: tuple[str, ...]) -> Step:
    """``user`` is a member of each existing group of ``groups`` (a missing group, e.g. ``input``
    on a minimal system, is reported, not created)."""
    added, missing = [], []
    for g in groups:
        try:
            members = grp.getgrnam(g).gr_mem
        except KeyError:
            missing.append(g)
            continue
        if user not in members and pwd.getpwnam(user).pw_gid != grp.getgrnam(g).gr_gid:
            _run_tool(["usermod", "-aG", g, user], f"add {user} to group {g}")
            added.append(g)
    detail = ", ".join([f"added to {g}" for g in added] + [f"no group {g} on this system" for g in missing])
    return Step(f"groups of {user}", "updated" if added else "unchanged", detail)


def ensure_only_members(group: str, allowed: set[str]) -> Step:
    """Group ``group`` has no member outside ``allowed``: exam accounts that an older install
    (or an admin following its docs) added to group ``station`` are taken out of it."""
    try:
        members = grp.getgrnam(group).gr_mem
    except KeyError:
        return Step(f"group {group}", "unchanged", "no such group")
    extra = sorted(set(members) - allowed)
    for user in extra:
        _run_tool(["gpasswd", "-d", user, group], f"remove {user} from group {group}")
    if extra:
        return Step(f"group {group}", "updated", f"removed {', '.join(extra)}: only {', '.join(sorted(allowed))} "
                                                  "may reach the hand-over socket")
    return Step(f"group {group}", "unchanged")


def ensure_dir(path: Path, mode: int, uid: int, gid: int) -> Step:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"{path}: exists and is not a directory")
    created = not path.exists()
    if created:
        path.mkdir(parents=True, mode=mode)
    changes = _fix_meta(path, mode, uid, gid)
    if created:
        return Step(str(path), "created", f"{mode:04o}")
    return Step(str(path), "updated" if changes else "unchanged", ", ".join(changes))


def ensure_file(path: Path, content: str, mode: int, uid: int, gid: int, *, keep_edits: bool = False,
                template_marker: str | None = None) -> Step:
    """Write ``content`` when different. keep_edits: an existing file is never replaced (only its
    mode/owner fixed)."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserError(f"{path}: exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists():
        old = path.read_text(encoding="utf-8", errors="replace")
        changes = []
        if old != content:
            if keep_edits:
                _fix_meta(path, mode, uid, gid)
                return Step(str(path), "kept", "differs from the template (admin edits): not overwritten")
            _atomic_write(path, content, mode, uid, gid)
            return Step(str(path), "updated", "content")
        changes = _fix_meta(path, mode, uid, gid)
        return Step(str(path), "updated" if changes else "unchanged", ", ".join(changes))
    _atomic_write(path, content, mode, uid, gid)
    return Step(str(path), "created", f"{mode:04o}")


def _fix_meta(path: Path, mode: int, uid: int, gid: int) -> list[str]:
    st = path.stat()
    changes = []
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
        changes.append(f"mode {mode:04o}")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)
        changes.append(f"owner {uid}:{gid}")
    return changes


def _atomic_write(path: Path, content: str, mode: int, uid: int, gid: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, content.encode("utf-8"))
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_station_key(keys_dir: Path, uid: int, gid: int) -> Step:
    """The station's CURVE key pair (secret 0600, public 0644) owned by the service account."""
    from station import keys
    secret = keys_dir / "station.key_secret"
    public = keys_dir / "station.key"
    if secret.exists():
        changes = _fix_meta(secret, 0o600, uid, gid)
        if public.exists():
            changes += _fix_meta(public, 0o644, uid, gid)
        return Step(str(secret), "updated" if changes else "unchanged", ", ".join(changes))
    keys.generate(keys_dir, "station")
    for p, m in ((secret, 0o600), (public, 0o644)):
        os.chown(p, uid, gid)
        os.chmod(p, m)
    return Step(str(secret), "created", "CURVE key pair; share station.key with the consoles")


# ---------------------------------------------------------------- GNOME Shell extension
GNOME_EXTENSION_UUID = "station-focus@station.be"
GNOME_EXTENSION_SRC = REPO / "station" / "capture" / "gnome-extension" / GNOME_EXTENSION_UUID
DCONF_SETTINGS = f"""\
# Written by `station install`: the exam station's GNOME Shell extension reports window focus under
# Wayland. Add the centre's own extensions to the list if it uses any (the list is locked).
[org/gnome/shell]
enabled-extensions=['{GNOME_EXTENSION_UUID}']
disable-user-extensions=false
development-tools=false
"""
DCONF_LOCKS = """\
# Written by `station install`: the candidate cannot disable the focus extension or open Looking Glass
/org/gnome/shell/enabled-extensions
/org/gnome/shell/disable-user-extensions
/org/gnome/shell/development-tools
"""
DCONF_PROFILE = "user-db:user\nsystem-db:local\n"


def gnome_shell_major(run=subprocess.run) -> int | None:
    """The installed GNOME Shell's major version (``gnome-shell --version``), None without one."""
    exe = shutil.which("gnome-shell")
    if exe is None:
        return None
    try:
        out = run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def ensure_gnome_extension(plan: Plan, shell_major: int | None) -> list[Step]:
    """The focus extension for every user, in the variant for ``shell_major`` (42-44: the
    ``imports`` file; 45 and later: the ES module), enabled and locked by dconf system defaults.
    Without GNOME Shell: one ``absent`` step saying so (nothing written)."""
    import json
    dest = plan.p("usr/share/gnome-shell/extensions") / GNOME_EXTENSION_UUID
    if shell_major is None:
        return [Step(str(dest), "absent", "GNOME Shell not installed: no Wayland focus extension needed")]
    meta = json.loads((GNOME_EXTENSION_SRC / "metadata.json").read_text())
    src = "extension-45.js" if shell_major >= 45 else "extension.js"
    if str(shell_major) not in meta["shell-version"]:
        meta["shell-version"] = [str(shell_major)]
    ids = (0, 0) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    steps = [ensure_dir(dest, 0o755, *ids),
             ensure_file(dest / "metadata.json", json.dumps(meta, indent=2) + "\n", 0o644, *ids),
             ensure_file(dest / "extension.js", (GNOME_EXTENSION_SRC / src).read_text(), 0o644, *ids),
             ensure_file(plan.p("etc/dconf/db/local.d/00-station-focus"), DCONF_SETTINGS, 0o644, *ids),
             ensure_file(plan.p("etc/dconf/db/local.d/locks/00-station-focus"), DCONF_LOCKS, 0o644, *ids),
             ensure_file(plan.p("etc/dconf/profile/user"), DCONF_PROFILE, 0o644, *ids, keep_edits=True)]
    if any(st.action in ("created", "updated") for st in steps) and str(plan.root) == "/" and shutil.which("dconf"):
        r = subprocess.run(["dconf", "update"], capture_output=True, text=True, timeout=60)
        steps.append(Step("dconf update", "updated" if r.returncode == 0 else "kept",
                          "system defaults compiled" if r.returncode == 0 else f"failed: {r.stderr.strip()[:200]}"))
    return steps


# ---------------------------------------------------------------- install / uninstall
def check_code_is_root_owned(plan: Plan) -> Step:
    """An exam PC's units must run code only root can change: the station package, the command
    the units start and its interpreter. Raises UserError naming what others could write."""
    import sys as _sys

    from station import software
    exe = Path(plan.exe)
    bad = software.writable_by_others(extra=(exe, Path(os.path.realpath(_sys.executable))))
    if bad:
        raise UserError("the station's code could be changed by an account other than root, so the candidate "
                        "might replace it: " + "; ".join(bad[:5]) + ". Install it root-owned (e.g. under /opt or "
                        "/usr/local) or pass --allow-writable-code for a development machine", exit_code=2)
    return Step("station code", "unchanged", "root-owned")


def install(plan: Plan, *, create_account: bool = True, allow_writable_code: bool = False,
            shell_major=gnome_shell_major) -> list[Step]:
    """``shell_major``: returns the GNOME Shell major version (None: not installed)."""
    steps: list[Step] = []
    if plan.scope == "system" and not allow_writable_code:
        steps.append(check_code_is_root_owned(plan))
    if plan.scope == "system":
        if create_account:
            steps.append(ensure_account(plan.owner))
        uid, gid = _ids(plan.owner)
        root_ids = (0, 0) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        if create_account:
            steps.append(ensure_account(CAPTURE_ACCOUNT, "/nonexistent", "exam station capture"))
            steps.append(ensure_in_groups(CAPTURE_ACCOUNT, CAPTURE_GROUPS))
            steps.append(ensure_only_members(plan.owner, {CAPTURE_ACCOUNT}))
        steps.append(ensure_dir(plan.p("etc/station"), 0o755, *root_ids))
        steps.append(ensure_file(plan.config_path, render_config(plan), 0o644, *root_ids, keep_edits=True))
        for name, target in plan.unit_targets():
            steps.append(ensure_file(target, render_unit(name, plan), 0o644, *root_ids))
        steps += install_session_grant(plan, root_ids)
        steps += [_remove(plan.p(rel)) for rel in LEGACY_UNITS if plan.p(rel).exists()]
        steps += ensure_gnome_extension(plan, shell_major())
    else:
        uid, gid = os.getuid(), os.getgid()
        steps.append(ensure_file(plan.config_path, render_config(plan), 0o600, uid, gid, keep_edits=True))
        for name, target in plan.unit_targets():
            steps.append(ensure_file(target, render_unit(name, plan), 0o644, uid, gid))
    data = plan.data_dir
    for d in (data, data / "sessions", data / "keys", data / "keys" / "authorized"):
        steps.append(ensure_dir(d, 0o700, uid, gid))
    steps.append(ensure_station_key(data / "keys", uid, gid))
    return steps


def install_session_grant(plan: Plan, root_ids: tuple[int, int]) -> list[Step]:
    """The login-time grant of the display and the sound server to the capture account: the
    script, its XDG autostart entry, and the runtime directory of the sound grant's socket."""
    script = (UNIT_DIR / "station-session-grant").read_text(encoding="utf-8")
    desktop = ("[Desktop Entry]\nType=Application\nName=Exam station capture access\n"
               f"Exec=/{GRANT_SCRIPT}\nNoDisplay=true\nX-GNOME-Autostart-Phase=Initialization\n")
    tmpfiles = (f"# /run/station-audio: the sound server's socket for the capture account ({GRANT_SCRIPT})\n"
                f"d /run/station-audio 1733 root {CAPTURE_ACCOUNT} -\n")
    pipewire = ("# pipewire-pulse: also listen where the station's capture account connects "
                "(/run/station-audio, reachable by group station-capture only)\n"
                "pulse.properties = {\n    server.address = [ \"unix:native\" \"unix:/run/station-audio/native\" ]\n}\n")
    return [ensure_file(plan.p(GRANT_SCRIPT), script, 0o755, *root_ids),
            ensure_file(plan.p(GRANT_AUTOSTART), desktop, 0o644, *root_ids),
            ensure_file(plan.p(TMPFILES), tmpfiles, 0o644, *root_ids),
            ensure_file(plan.p(PIPEWIRE_DROPIN), pipewire, 0o644, *root_ids)]


def uninstall(plan: Plan, *, purge: bool = False) -> list[Step]:
    steps: list[Step] = []
    for name, target in plan.unit_targets():
        steps.append(_remove(target))
    if plan.scope == "system":
        steps += [_remove(plan.p(rel)) for rel in (GRANT_SCRIPT, GRANT_AUTOSTART, TMPFILES, PIPEWIRE_DROPIN,
                                                   *LEGACY_UNITS)]
        ext = plan.p("usr/share/gnome-shell/extensions") / GNOME_EXTENSION_UUID
        for f in (ext / "metadata.json", ext / "extension.js", plan.p("etc/dconf/db/local.d/00-station-focus"),
                  plan.p("etc/dconf/db/local.d/locks/00-station-focus")):
            steps.append(_remove(f))
        if ext.is_dir() and not any(ext.iterdir()):
            ext.rmdir()
    cfg = plan.config_path
    if cfg.exists():
        if cfg.read_text(encoding="utf-8", errors="replace") == render_config(plan) or purge:
            steps.append(_remove(cfg))
        else:
            steps.append(Step(str(cfg), "kept", "edited by the admin; remove it yourself"))
    else:
        steps.append(Step(str(cfg), "absent"))
    data = plan.data_dir
    if purge:
        if data.exists():
            shutil.rmtree(data)
            steps.append(Step(str(data), "removed", "journals and keys deleted (--purge)"))
        else:
            steps.append(Step(str(data), "absent"))
    else:
        steps.append(Step(str(data), "kept", "journals and keys stay; --purge deletes them"))
    return steps


def _remove(path: Path) -> Step:
    if path.exists() or path.is_symlink():
        path.unlink()
        return Step(str(path), "removed")
    return Step(str(path), "absent")


def systemd_running(root: Path) -> bool:
    return str(root) == "/" and Path("/run/systemd/system").is_dir()
