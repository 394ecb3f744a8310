"""Write a headset profile that ``station.headset.read_profile`` accepts.

The file is ``<headset_dir>/<headset-id>.toml`` with exactly the ``[profile]`` keys of
``station.headset.HeadsetProfile`` (``sensitivity_dbspl_at_0dbfs`` only when known; the calibrated
sources' identities as ``[profile.agent_source]`` / ``[profile.customer_source]`` when the devices
are sound-server sources). It is written
to a temporary file in the same directory, read back through ``read_profile`` (so a value out of
the agent's accepted range fails here, not in the agent) and then renamed into place, so a reader
never sees half a profile. Failure modes: ``UserError`` when the directory cannot be written;
``ConfigError`` (from read_profile) when a value is out of range.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import tomli_w

from station.errors import UserError
from station.headset import HeadsetProfile, SourceIdentity, read_profile

HEADER = ("# Headset profile written by `station calibrate`; read by the agent (station/headset.py).\n"
          "# Units: dBFS, dB, ms; created is UTC. Re-run the calibration rather than editing it.\n")


def profile_dict(profile: HeadsetProfile) -> dict:
    """The ``[profile]`` table for a HeadsetProfile (floats rounded to 0.01, None left out)."""
    body = {}
    for f in dataclasses.fields(HeadsetProfile):
        v = getattr(profile, f.name)
        if v is None:
            continue
        if isinstance(v, float):
            v = round(v, 2)
        elif isinstance(v, SourceIdentity):   # a [profile.<name>] table
            v = v.table()
        body[f.name] = v
    return {"profile": body}


def write_profile(profile: HeadsetProfile, path: Path) -> Path:
    """Atomically write ``profile`` to ``path``; return the path. See the module doc for failures."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write the headset profile in {path.parent}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(HEADER)
            f.write(tomli_w.dumps(profile_dict(profile)))
            f.flush()
            os.fsync(f.fileno())
        read_profile(Path(tmp))  # the agent's own check
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
