"""Headset profiles: what calibration measured, read by the agent.

A profile is ``<headset_dir>/<headset-id>.toml`` with one ``[profile]`` table (see
``HeadsetProfile`` for keys and units). ``station calibrate`` writes it; the audio source reads the
gate, VAD mode, coupling and latency from it, and the calibrated sound-server sources' identity
(``[profile.agent_source]`` / ``[profile.customer_source]``, ``SourceIdentity``; optional); the health beat warns when it is missing, too old, or
made on another station (``profile_warnings``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

from station.config import Config, ConfigError
from station.hardware import FIELDS as HARDWARE_FIELDS, Hardware


@dataclass(frozen=True)
class SourceIdentity:
    """The sound-server source calibration measured, as the server named it ("" = not reported):
    name (source name, e.g. ``alsa_input.usb-Jabra_...``), hardware (``device.bus``,
    ``device.vendor.id`` / ``device.product.id`` hex, ``device.serial``), monitor (a sink's monitor,
    i.e. the customer signal, rather than a capture device). Written by calibration as the flat
    table ``[profile.agent_source]`` / ``[profile.customer_source]`` (``table``: name, bus, vendor,
    product, serial, monitor); the capture gives no evidence from a source that does not match it
    (``station.capture.audio_identity``)."""

    name: str = ""
    hardware: Hardware = Hardware()
    monitor: bool = False

    def table(self) -> dict:
        """The profile's flat table of this identity."""
        return {"name": self.name, **dataclasses.asdict(self.hardware), "monitor": self.monitor}


_IDENTITY_FIELDS = ("agent_source", "customer_source")


@dataclass(frozen=True)
class HeadsetProfile:
    """Calibration results for one headset on one station.

    noise_floor_dbfs: RMS level of 5 s of silence on the microphone (dBFS).
    gate_dbfs: energy gate for the VAD (dBFS); frames below are never speech.
    vad_mode: webrtcvad aggressiveness 0..3 chosen by calibration.
    input_latency_ms: from sound at the microphone to the frame's ADC timestamp (ms); subtracted.
    round_trip_ms: output-to-input latency measured with a chirp (ms).
    coupling_db: earpiece-to-microphone coupling loss (dB, positive = quieter in the mic).
    speech_level_dbfs: active speech level of the calibration sentence (ITU-T P.56, dBFS).
    sensitivity_dbspl_at_0dbfs: dB SPL that reads 0 dBFS, when a rig measured it, else None.
    own_margin_db: own-voice margin checked by calibration (dB): microphone frames more than this
    below the wearer's level (speech_level_dbfs, then learned) are another person's voice; None in
    profiles made before it existed (then audio.own_margin_db).
    created: ISO 8601 UTC time of calibration. passed: the certificate's overall verdict.
    agent_source / customer_source: the calibrated microphone's / customer signal's sound-server
    source (``SourceIdentity``), or None (PortAudio devices, profiles made before identities).
    """

    headset_id: str
    station_id: str
    technician: str
    created: str
    noise_floor_dbfs: float
    gate_dbfs: float
    vad_mode: int
    input_latency_ms: float
    round_trip_ms: float
    coupling_db: float
    speech_level_dbfs: float
    passed: bool
    sensitivity_dbspl_at_0dbfs: float | None = None
    own_margin_db: float | None = None
    agent_source: SourceIdentity | None = None
    customer_source: SourceIdentity | None = None

    def created_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created.replace("Z", "+00:00"))


_NUMERIC = {"noise_floor_dbfs": (-140.0, 0.0), "gate_dbfs": (-140.0, 0.0), "input_latency_ms": (0.0, 2000.0),
            "round_trip_ms": (0.0, 4000.0), "coupling_db": (-20.0, 140.0), "speech_level_dbfs": (-140.0, 0.0),
            "sensitivity_dbspl_at_0dbfs": (60.0, 200.0), "own_margin_db": (0.0, 60.0)}
_OPTIONAL = {"sensitivity_dbspl_at_0dbfs", "own_margin_db"}   # may be missing: None


def _read_identity(path: Path, key: str, v) -> SourceIdentity:
    """A ``[profile.<key>]`` table as a SourceIdentity. Raises ConfigError naming the key."""
    if not isinstance(v, dict):
        raise ConfigError(f"{path}: profile.{key} must be a table")
    known = {"name", "monitor", *HARDWARE_FIELDS}
    unknown = set(v) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) profile.{key}." + f", profile.{key}.".join(sorted(unknown)))
    for k, x in v.items():
        want = bool if k == "monitor" else str
        if not isinstance(x, want):
            raise ConfigError(f"{path}: profile.{key}.{k} = {x!r}; allowed: "
                              + ("true or false" if want is bool else "a string"))
    hardware = Hardware(**{k: x for k, x in v.items() if k in HARDWARE_FIELDS})
    return SourceIdentity(name=v.get("name", ""), hardware=hardware, monitor=v.get("monitor", False))


def profile_dir(cfg: Config) -> Path:
    if cfg.station.headset_dir:
        return Path(cfg.station.headset_dir).expanduser()
    return cfg.base_dir / "headsets"


def profile_path(cfg: Config, headset_id: str | None = None) -> Path:
    return profile_dir(cfg) / f"{headset_id or cfg.station.headset}.toml"


def read_profile(path: Path) -> HeadsetProfile:
    """Parse and check one profile file. Raises ConfigError naming the file and key."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: headset profile not found") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable headset profile: {e}") from None
    body = raw.get("profile")
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: missing [profile] table")
    kwargs = {}
    for f in dataclasses.fields(HeadsetProfile):
        if f.name not in body:
            if f.name in _OPTIONAL or f.name in _IDENTITY_FIELDS:
                kwargs[f.name] = None
                continue
            raise ConfigError(f"{path}: profile.{f.name} is missing")
        v = body[f.name]
        if f.name in _IDENTITY_FIELDS:
            v = _read_identity(path, f.name, v)
        elif f.name in _NUMERIC:
            lo, hi = _NUMERIC[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"{path}: profile.{f.name} = {v!r}; allowed: a number from {lo:g} to {hi:g}")
            v = float(v)
        elif f.name == "vad_mode":
            if isinstance(v, bool) or v not in (0, 1, 2, 3):
                raise ConfigError(f"{path}: profile.vad_mode = {v!r}; allowed: 0, 1, 2 or 3")
        elif f.name == "passed":
            if not isinstance(v, bool):
                raise ConfigError(f"{path}: profile.passed = {v!r}; allowed: true or false")
        elif not isinstance(v, str):
            raise ConfigError(f"{path}: profile.{f.name} = {v!r}; allowed: a string")
        kwargs[f.name] = v
    unknown = set(body) - {f.name for f in dataclasses.fields(HeadsetProfile)}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) profile." + ", profile.".join(sorted(unknown)))
    profile = HeadsetProfile(**kwargs)
    try:
        profile.created_at()
    except ValueError:
        raise ConfigError(f"{path}: profile.created = {profile.created!r}; allowed: an ISO 8601 time") from None
    return profile


def load_profile(cfg: Config) -> HeadsetProfile | None:
    """The configured headset's profile, or None when no headset is configured or its file is
    missing (a warning, see profile_warnings). A present but invalid file raises ConfigError."""
    if not cfg.station.headset:
        return None
    path = profile_path(cfg)
    if not path.exists():
        return None
    return read_profile(path)


class ProfileFile:
    """The configured headset's profile as ``load_profile`` gives it, read again only when its
    file changed (path, inode, size, mtime: calibration replaces the file, an edit in place
    changes its size or mtime), for callers that ask every second (the recorder's health beat:
    a TOML parse per beat cost CPU). ``current()`` returns the profile or None, or raises again
    the error the file last gave (ConfigError for an invalid file, OSError for an unreadable one)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._key: tuple | None = None
        self._value: HeadsetProfile | None = None
        self._error: Exception | None = None

    def current(self) -> HeadsetProfile | None:
        path = profile_path(self.cfg) if self.cfg.station.headset else None
        try:
            st = path.stat() if path is not None else None
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else (str(path),)
        except OSError:
            key = (str(path),)
        if key != self._key:
            self._key = key
            try:
                self._value, self._error = load_profile(self.cfg), None
            except (ConfigError, OSError) as e:
                self._value, self._error = None, e
        if self._error is not None:
            raise self._error
        return self._value


def profile_warnings(cfg: Config, profile: HeadsetProfile | None, now: dt.datetime | None = None) -> list[str]:
    """Operator-readable warnings for the health beat; empty when the profile is fine."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not cfg.station.headset:
        return ["no headset configured (station.headset): default VAD gate, no latency correction"]
    if profile is None:
        return [f"headset profile missing: {profile_path(cfg)} (run station calibrate)"]
    out = []
    age_days = (now - profile.created_at()).total_seconds() / 86400
    if age_days > cfg.station.headset_max_age_days:
        out.append(f"headset profile is {age_days:.0f} days old (limit {cfg.station.headset_max_age_days})")
    if profile.station_id != cfg.station.id:
        out.append(f"headset profile was made on station {profile.station_id}, this is {cfg.station.id}")
    if not profile.passed:
        out.append("headset calibration did not pass")
    return out
