"""The recorder's periodic outputs on its own clock: a health message every second (consoles,
journal) and the status file (``station status``) at most 2 s old, well inside the 5 s after
which ``station status`` calls the recorder hung. In-process recorder, virtual clock, real
journal and status file."""

from __future__ import annotations

import json

from station import config
from station.recorder import loop as recmod
from station.recorder.status import read_status, status_path

S = 1_000_000_000


def test_health_every_second_and_status_file_never_older_than_two_seconds(tmp_path):
    cfg = config.load(system=False).replace(station={"id": "timers-01"}, publisher={"enabled": False})
    clock = [10 * S]
    rec = recmod.Recorder(cfg, clock=lambda: clock[0], data_dir=tmp_path / "data")
    rec.open_session()
    health_t, status_t, lags = [], set(), []
    try:
        for _ in range(40):    # 20 s of ingest cycles, 500 ms apart
            clock[0] += cfg.journal.ingest_interval_ms * 1_000_000
            health_t += [t for _, kind, t, _ in rec.step() if kind == "health"]
            doc = json.loads(status_path(tmp_path / "data").read_bytes())
            status_t.add(doc["t_ns"])
            lags.append(clock[0] - doc["t_ns"])
        state, _ = read_status(tmp_path / "data")
    finally:
        rec.close()
    gaps = [b - a for a, b in zip(health_t, health_t[1:])]
    assert len(health_t) >= 19 and max(gaps) <= S, f"health beats {gaps} ns apart (promised: every 1 s)"
    assert max(lags) <= recmod.STATUS_INTERVAL_NS <= 2 * S, f"status file up to {max(lags) / S:.1f} s old"
    assert len(status_t) < len(health_t), "the status file is rewritten at every health beat"
    assert state == "running"
