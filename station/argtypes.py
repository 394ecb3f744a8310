"""Argument types for the command line: a number out of range or not finite is one usage line
from argparse (``argument --port: invalid port 1..65535 value: '70000'``, exit 2), never a
traceback or a silently odd run."""

from __future__ import annotations

import math


def number(lo: float | None = None, hi: float | None = None, *, integer: bool = False, what: str = ""):
    """An argparse ``type`` accepting a finite number (an int when ``integer``) in [lo, hi]."""
    def parse(text: str):
        v = int(text) if integer else float(text)
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(text)
        return v

    rng = (f"{lo:g}..{hi:g}" if lo is not None and hi is not None else
           f">= {lo:g}" if lo is not None else f"<= {hi:g}" if hi is not None else "")
    parse.__name__ = " ".join(x for x in (what or ("whole number" if integer else "number"), rng) if x)
    return parse
