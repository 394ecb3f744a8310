"""CURVE key files and the station's allow-list of console keys.

Key files are ZeroMQ certificates as written by ``zmq.auth.create_certificates``:
``<name>.key`` (public, shareable) and ``<name>.key_secret`` (secret: mode 0600 in a 0700
directory; a secret file readable by group or others is refused). Keys are 40-character Z85 text.

The station lets in only consoles whose public certificate lies in its allow-list directory
(``publisher.authorized_keys_dir``); ``AllowList`` is the ZAP credentials provider and re-reads
the directory when it changes, so ``station keys authorize`` takes effect without a restart.

Assessor = key: ``authorize(..., assessor_id=, assessor_name=)`` also writes ``<name>.assessor``
(JSON ``{"assessor_id", "assessor_name", "public_key"}``) beside ``<name>.key``. The station takes
the assessor of every command from the key that sent it (``AllowList.assessor_of``); a key
without such a binding may follow the station but not send commands. One assessor id is bound to
one key. ``fingerprint(key)`` (32 hex digits of SHA-256 over the 32-byte key) is what the journal
records with every mark and command.

Failure modes: a missing, unreadable, malformed or too-open key file raises ``UserError`` with
the path and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from station.config import data_dir
from station.errors import UserError

Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def keys_dir(cfg) -> Path:
    return data_dir(cfg) / "keys"


def station_secret_file(cfg) -> Path:
    return Path(cfg.publisher.secret_key_file or keys_dir(cfg) / "station.key_secret").expanduser()


def allow_dir(cfg) -> Path:
    return Path(cfg.publisher.authorized_keys_dir or keys_dir(cfg) / "authorized").expanduser()


def console_secret_file(cfg) -> Path:
    return Path(cfg.console.secret_key_file or keys_dir(cfg) / "console.key_secret").expanduser()


def generate(directory: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` (0644) and ``<name>.key_secret`` (0600) into ``directory`` (0700).
    Refuses to overwrite an existing key unless ``force``."""
    if not NAME.fullmatch(name):
        raise UserError(f"key name {name!r}: use letters, digits, '.', '-', '_' (at most 64)", 2)
    directory = Path(directory).expanduser()
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise UserError(f"{secret} already exists; use --force to replace it "
                        "(consoles and stations that trust the old key must be updated)")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        for p in (public, secret):
            p.unlink(missing_ok=True)
        pub, sec = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(sec, 0o600)
    os.chmod(pub, 0o644)
    return Path(pub), Path(sec)


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a secret certificate. Raises UserError."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: no key file; create one with `station keys generate`") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read key file: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise UserError(f"{path}: secret key file is readable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}")
    pub, sec = _load_cert(path)
    if sec is None:
        raise UserError(f"{path}: holds no secret key (is it the public .key file?)")
    return pub, sec


def load_public(value: str | Path) -> bytes:
    """A public key given as 40 Z85 characters or as the path of a certificate file."""
    text = str(value).strip()
    if Z85_KEY.fullmatch(text):
        return text.encode("ascii")
    pub, _ = _load_cert(Path(text).expanduser())
    return pub


def _load_cert(path: Path) -> tuple[bytes, bytes | None]:
    try:
        pub, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable ZeroMQ certificate ({e})") from None
    if not pub or not Z85_KEY.fullmatch(pub.decode("ascii", "replace")):
        raise UserError(f"{path}: malformed public key")
    return pub, sec


def fingerprint(z85: str | bytes) -> str:
    """32 hex digits of SHA-256 over the 32-byte CURVE public key given as Z85 ("" for "")."""
    if isinstance(z85, str):
        z85 = z85.encode("ascii", "replace")
    if not z85:
        return ""
    try:
        raw = zmq.utils.z85.decode(z85)
    except Exception:
        raw = z85
    return hashlib.sha256(raw).hexdigest()[:32]


def authorize(public_file: Path, directory: Path, name: str | None = None,
              assessor_id: str | None = None, assessor_name: str = "") -> Path:
    """Copy a console's public certificate into the allow-list directory; with ``assessor_id``
    bind the key to that assessor (``<name>.assessor``). Refuses a file that contains a secret
    key (it must never be copied around), and an assessor id already bound to another key."""
    public_file = Path(public_file).expanduser()
    pub, sec = _load_cert(public_file)
    if sec is not None:
        raise UserError(f"{public_file} contains a SECRET key; authorize the public .key file "
                        "instead and keep the secret one where it is")
    name = name or public_file.name.removesuffix(".key")
    if not NAME.fullmatch(name):
        raise UserError(f"name {name!r}: use letters, digits, '.', '-', '_' (at most 64)", 2)
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.key"
    for other in directory.glob("*.key"):
        if other != target and _safe_public(other) == pub:
            raise UserError(f"this key is already authorized as {other}")
    if assessor_id is not None:
        if not NAME.fullmatch(assessor_id):
            raise UserError(f"assessor id {assessor_id!r}: use letters, digits, '.', '-', '_' (at most 64)", 2)
        if len(assessor_name) > 128:
            raise UserError("assessor name: at most 128 characters", 2)
        for other in directory.glob("*.assessor"):
            bound = _read_binding(other)
            if bound and bound["assessor_id"] == assessor_id and other.stem != name:
                raise UserError(f"assessor {assessor_id!r} is already bound to another key ({other}); "
                                "one assessor, one key: remove that binding first")
    binding = directory / f"{name}.assessor"
    tmp = directory / f".{name}.key.tmp"
    shutil.copyfile(public_file, tmp)
    os.chmod(tmp, 0o644)
    if assessor_id is None:
        binding.unlink(missing_ok=True)
    else:
        btmp = directory / f".{name}.assessor.tmp"
        btmp.write_text(json.dumps({"assessor_id": assessor_id, "assessor_name": assessor_name,
                                    "public_key": pub.decode("ascii")}) + "\n")
        os.chmod(btmp, 0o644)
        os.replace(btmp, binding)
    os.replace(tmp, target)
    return target


def _read_binding(path: Path) -> dict | None:
    """A ``.assessor`` file's content, or None when unreadable or malformed."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(d, dict) or not isinstance(d.get("assessor_id"), str)
            or not NAME.fullmatch(d["assessor_id"]) or not isinstance(d.get("assessor_name", ""), str)
            or not isinstance(d.get("public_key"), str)):
        return None
    return d


def _safe_public(path: Path) -> bytes | None:
    try:
        pub, _ = zmq.auth.load_certificate(path)
        return pub
    except Exception:
        return None


class AllowList:
    """ZAP credentials provider: the console keys in ``directory`` (``*.key`` files).

    ``callback(domain, key)`` is called by the authenticator thread with a Z85 key (bytes) and
    answers whether it may connect; the directory is re-read when its mtime changes (checked at
    most once per ``recheck_s``). ``name_of(z85)`` gives the certificate's file name (the console
    name); ``assessor_of(z85)`` the (assessor id, name) the key is bound to, or None.
    Counters: ``accepted``, ``rejected``.
    """

    def __init__(self, directory: Path, recheck_s: float = 1.0):
        self.directory = Path(directory).expanduser()
        self.recheck_s = recheck_s
        self.accepted = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._keys: dict[bytes, str] = {}
        self._assessors: dict[bytes, tuple[str, str]] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.recheck_s:
            return
        self._checked = now
        try:
            mtime = self.directory.stat().st_mtime
        except OSError:
            mtime = None
        if not force and mtime == self._mtime:
            return
        keys: dict[bytes, str] = {}
        assessors: dict[bytes, tuple[str, str]] = {}
        if mtime is not None:
            for p in sorted(self.directory.glob("*.key")):
                pub = _safe_public(p)
                if pub:
                    keys[pub] = p.name.removesuffix(".key")
                    b = _read_binding(p.with_suffix(".assessor"))
                    if b and b["public_key"].encode("ascii", "replace") == pub:  # a stale binding binds nothing
                        assessors[pub] = (b["assessor_id"], b.get("assessor_name", ""))
        with self._lock:
            self._keys, self._assessors, self._mtime = keys, assessors, mtime

    def callback(self, domain: str, key: bytes) -> bool:
        self._reload()
        with self._lock:
            ok = key in self._keys
        if ok:
            self.accepted += 1
        else:
            self.rejected += 1
        return ok

    def name_of(self, z85: str | bytes) -> str:
        if isinstance(z85, str):
            z85 = z85.encode("ascii", "replace")
        with self._lock:
            return self._keys.get(z85, "")

    def assessor_of(self, z85: str | bytes) -> tuple[str, str] | None:
        if isinstance(z85, str):
            z85 = z85.encode("ascii", "replace")
        self._reload()
        with self._lock:
            return self._assessors.get(z85)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


def is_loopback(endpoint: str) -> bool:
    """True for endpoints that never leave this machine: tcp on 127.0.0.0/8, ::1 or localhost,
    ipc:// and inproc://."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:]+):(\d+|\*)", endpoint)
    if not m:
        return False
    host = m.group(1).strip("[]")
    return host in ("localhost", "::1") or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None
