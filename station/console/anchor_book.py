"""The console's countersigned exam-end anchors (table ``anchors`` of the console store).

When a station's ``anchor`` message arrives (``station/anchors.py``: the final chain heads of a
session, signed by the station), the web console countersigns it with the Ed25519 key derived
from its own CURVE secret key and keeps the pair here, one row per (station, session, station
signature). ``station sessions verify --against <console store>`` and both reports read it.

Its own SQLite connection to the store file (WAL: the follower's writer and this one take turns;
a busy store waits up to 5 s). Failure modes: ``add`` raises ``sqlite3.Error`` when the store
cannot be written (the caller logs it; the anchor message itself is in the store anyway).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from station import anchors, keys

SCHEMA = """CREATE TABLE IF NOT EXISTS anchors (
    station TEXT NOT NULL, session TEXT NOT NULL, station_signature TEXT NOT NULL, record TEXT NOT NULL,
    noted_wall_ns INTEGER NOT NULL, PRIMARY KEY (station, session, station_signature))"""


class AnchorBook:
    def __init__(self, store_path: Path, cfg, console_name: str):
        self.path = Path(store_path)
        self.name = console_name
        self.key = None
        if any(s["public_key"] for s in cfg.console.station):   # CURVE console: it has a key
            self.key = anchors.signing_key(keys.load_secret(keys.console_secret_file(cfg))[1])
        self.db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        self.db.execute(SCHEMA)
        self.db.commit()
        self.lock = threading.Lock()

    def add(self, station: str, session: str, anchor: dict) -> bool:
        """Countersign and keep one anchor; False when it was kept already."""
        rec = anchors.countersign(self.key, anchor, self.name, time.time_ns())
        with self.lock:
            cur = self.db.execute("INSERT OR IGNORE INTO anchors VALUES (?,?,?,?,?)",
                                  (station, session, str(anchor.get("signature", "")), json.dumps(rec, sort_keys=True),
                                   time.time_ns()))
            self.db.commit()
        return cur.rowcount == 1

    def records(self, station: str, session: str) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT record FROM anchors WHERE station=? AND session=? ORDER BY rowid",
                                   (station, session)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        self.db.close()
