"""Load and validate the station configuration.

Order: the defaults file (``config/station.toml`` of this checkout, or ``$STATION_DEFAULTS``),
then ``/etc/station/station.toml`` if it exists (``$STATION_SYSTEM_CONFIG`` overrides the path),
then each ``--config`` file. Later files override earlier ones key by key; a list of tables
(``[[categories.rule]]``) is replaced whole.

Every value is checked against ``station.config_schema``. Any problem raises ``ConfigError`` whose
message names the file, the key and what is allowed; the command line turns it into exit code 2.

Failure modes: unreadable file, TOML syntax error, unknown section or key, wrong type, value out of
range or not among the choices, invalid regular expression. All raise ``ConfigError``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from station.config_schema import SCHEMA, Field, Table

REPO_DEFAULTS = Path(__file__).resolve().parent.parent / "config" / "station.toml"
SYSTEM_CONFIG = Path("/etc/station/station.toml")


class ConfigError(Exception):
    """A configuration problem an operator can fix; the message says where and how."""


class Section:
    """Read-only attribute access to one section: ``cfg.audio.frame_ms``."""

    def __init__(self, name: str, values: dict[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no key {self._name}.{key}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setattr__(self, key, value):
        raise AttributeError("configuration is read-only")

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._values)


class Config:
    """A validated configuration: sections as attributes, plus where it came from.

    ``hash`` is the SHA-256 of the canonical JSON of all values; it goes into each session header.
    """

    def __init__(self, values: dict[str, dict[str, Any]], sources: list[str]):
        self._values = values
        self.sources = sources
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        self.hash = hashlib.sha256(canonical.encode()).hexdigest()
        self.base_dir = Path(sources[0]).parent if sources else REPO_DEFAULTS.parent
        for name, section in values.items():
            setattr(self, name, Section(name, section))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._values)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some keys changed (validated like a file): replace(station={"id": "x"})."""
        values = self.as_dict()
        _merge(values, sections, "<override>")
        return Config(values, self.sources + ["<override>"])


def defaults_path() -> Path:
    env = os.environ.get("STATION_DEFAULTS")
    if env:
        return Path(env)
    if REPO_DEFAULTS.exists():
        return REPO_DEFAULTS
    return Path("/usr/share/station/station.toml")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning I/O and syntax errors into ConfigError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None


def load(extra: list[str | Path] | None = None, *, system: bool = True) -> Config:
    """Load defaults, the system file (if present and ``system``), then each extra file."""
    base = defaults_path()
    values: dict[str, dict[str, Any]] = {}
    raw = read_toml(base)
    _merge(values, raw, str(base), complete=True)
    sources = [str(base)]
    paths: list[Path] = []
    if system:
        sys_path = Path(os.environ.get("STATION_SYSTEM_CONFIG", SYSTEM_CONFIG))
        if sys_path.exists():
            paths.append(sys_path)
    paths += [Path(p) for p in (extra or [])]
    for path in paths:
        _merge(values, read_toml(path), str(path))
        sources.append(str(path))
    return Config(values, sources)


def _merge(into: dict, raw: dict, where: str, complete: bool = False) -> None:
    """Validate ``raw`` against the schema and merge it into ``into`` (in place)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a table of sections")
    for section, body in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}]; allowed: "
                              + ", ".join(sorted(SCHEMA)))
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        schema = SCHEMA[section]
        target = into.setdefault(section, {})
        for key, value in body.items():
            name = f"{section}.{key}"
            if key not in schema:
                raise ConfigError(f"{where}: unknown key {name}; allowed: " + ", ".join(sorted(schema)))
            spec = schema[key]
            if isinstance(spec, Table):
                target[key] = _check_table(spec, value, name, where)
            else:
                target[key] = _check_value(spec, value, name, where)
    if complete:
        for section, schema in SCHEMA.items():
            for key in schema:
                if key not in into.get(section, {}):
                    raise ConfigError(f"{where}: the defaults file lacks {section}.{key}")


def _check_table(spec: Table, value: Any, name: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: {name} must be a list of tables ([[{name}]])")
    if len(value) > spec.max_items:
        raise ConfigError(f"{where}: {name} has {len(value)} entries; at most {spec.max_items} allowed")
    out = []
    for i, item in enumerate(value):
        entry = {}
        for key, val in item.items():
            if key not in spec.fields:
                raise ConfigError(f"{where}: unknown key {name}[{i}].{key}; allowed: "
                                  + ", ".join(sorted(spec.fields)))
            entry[key] = _check_value(spec.fields[key], val, f"{name}[{i}].{key}", where)
        for key, default in spec.defaults.items():
            entry.setdefault(key, default)
        missing = [k for k in spec.fields if k not in entry]
        if missing:
            raise ConfigError(f"{where}: {name}[{i}] lacks " + ", ".join(missing))
        if spec.one_of and all(entry[k] == spec.defaults.get(k) for k in spec.one_of):
            raise ConfigError(f"{where}: {name}[{i}] sets none of " + ", ".join(spec.one_of)
                              + "; it needs at least one (an entry without any would match everything)")
        out.append({k: entry[k] for k in spec.fields})
    return out


def _check_value(spec: Field, value: Any, name: str, where: str) -> Any:
    def bad(problem: str = "") -> ConfigError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return ConfigError(f"{where}: {name} = {shown}{problem}; allowed: {spec.describe()}")

    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        value = float(value)
        if not math.isfinite(value):
            raise bad()
    elif kind == "str":
        if not isinstance(value, str):
            raise bad()
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            raise bad()
        if spec.regex:
            try:
                re.compile(value)
            except re.error as e:
                raise bad(f" is not a valid regular expression ({e})") from None
    elif kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        if spec.choices is not None:
            for v in value:
                if v not in spec.choices:
                    raise bad(f" ({v!r} not allowed)")
        return list(value)
    if spec.choices is not None and value not in spec.choices:
        raise bad()
    if spec.lo is not None and value < spec.lo:
        raise bad()
    if spec.hi is not None and value > spec.hi:
        raise bad()
    return value


def data_dir(cfg: Config) -> Path:
    """Where journals live: station.data_dir, $STATION_DATA_DIR, /var/lib/station or ~/.local/share."""
    if cfg.station.data_dir:
        return Path(cfg.station.data_dir).expanduser()
    env = os.environ.get("STATION_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/station")
    return Path.home() / ".local" / "share" / "station"
