"""Shared test helpers (import as ``from tests.support import require``).

Real parts (Xvfb, PulseAudio, espeak-ng, socat, chromium, ...) must run in CI: ``require`` skips a
test when a part is missing on a developer machine, but fails it when the ``CI`` environment
variable is set, so CI can never go green by skipping.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
IN_CI = bool(os.environ.get("CI"))


def require(*binaries: str) -> None:
    """Skip (or, under CI, fail) unless every binary is on PATH."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        msg = "missing real part(s): " + ", ".join(missing)
        if IN_CI:
            pytest.fail(msg + " (CI is set: real parts must be installed, see scripts/quickstart)")
        pytest.skip(msg)


def station_cmd(*args: str) -> list[str]:
    """argv that runs the station command line of this checkout with this interpreter."""
    return [sys.executable, "-m", "station", *args]


