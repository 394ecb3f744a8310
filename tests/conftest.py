"""Fixtures shared by all tests; helpers are in tests/support.py."""

from pathlib import Path

import pytest

from tests.support import ARTIFACTS


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def cfg_file(tmp_path):
    """Write a small override config and return its path: cfg_file('[station]\\nid = "x"')."""
    def write(text: str, name: str = "override.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
