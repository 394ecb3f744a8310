"""The recorder's periodic outputs on its own clock: a health message every second (consoles,
journal) and the status file (``station status``) at most 2 s old, well inside the 5 s after
which ``station status`` calls the recorder hung. In-process recorder, virtual clock, real
journal and status file."""

from __future__ import annotations

import dataclasses
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


def test_the_headset_profile_is_read_again_only_when_it_changed(tmp_path, monkeypatch):
    """The health beat (every second) says the headset profile's state; the file is parsed once
    and again only after it changed on disk (a new calibration, a broken file)."""
    from calibration.profile_writer import write_profile
    from station.headset import HeadsetProfile, profile_path
    cfg = config.load(system=False).replace(
        station={"id": "timers-01", "headset": "hs1", "headset_dir": str(tmp_path / "headsets")},
        publisher={"enabled": False})
    prof = HeadsetProfile(headset_id="hs1", station_id="timers-01", technician="Tess", created="2026-12-01T00:00:00Z",
                          noise_floor_dbfs=-70.0, gate_dbfs=-60.0, vad_mode=2, input_latency_ms=12.5,
                          round_trip_ms=40.0, coupling_db=41.0, speech_level_dbfs=-26.0, passed=True)
    path = write_profile(prof, profile_path(cfg))
    import station.headset as headset_mod
    reads = []
    real = headset_mod.load_profile
    monkeypatch.setattr(headset_mod, "load_profile", lambda c: reads.append(1) or real(c))
    clock = [10 * S]
    rec = recmod.Recorder(cfg, clock=lambda: clock[0], data_dir=tmp_path / "data")
    rec.open_session()

    def beats(n):
        out = []
        for _ in range(n):
            clock[0] += S
            out += [body["headset"] for _, kind, _, body in rec.step() if kind == "health"]
        return out
    try:
        got = beats(5)
        assert [h["technician"] for h in got] == ["Tess"] * 5 and len(reads) == 1
        write_profile(dataclasses.replace(prof, technician="Theo"), path)   # recalibrated
        got = beats(2)
        assert got[-1]["technician"] == "Theo" and len(reads) == 2
        path.write_text("this is not TOML = = =\n")            # edited in place: another size
        got = beats(2)
        assert got[-1]["status"] == "invalid" and len(reads) == 3
    finally:
        rec.close()
