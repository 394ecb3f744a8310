"""``station.recorder.status``: health of the running recorder/agent of this station.

Reads the status file the recorder writes every second (``station.recorder.status``): health per source,
session, last sequence number, journal size, disk use, queue and publisher counters.
Exit codes: 0 running; 1 not running (no status file, process gone, or no update for
``--max-age`` seconds: hung). ``--json`` prints the raw status document.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from station.argtypes import number
from station.cli import load_config


def register(sub) -> None:
    p = sub.add_parser("status", help="show the running agent's health (exit 1 when not running)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="the recorder's data directory (default from the configuration)")
    p.add_argument("--max-age", type=number(0.1, what="seconds"), default=5.0, help="a status older than this (s) means hung")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(func=run)


def _mb(n) -> str:
    return f"{n / 1e6:.1f} MB" if isinstance(n, (int, float)) and n >= 0 else "?"


def run(args) -> int:
    from station.config import data_dir as config_data_dir
    from station.recorder.status import read_status
    cfg = load_config(args)
    root = Path(args.data_dir) if args.data_dir else config_data_dir(cfg)
    state, doc = read_status(root, args.max_age)
    if args.json:
        print(json.dumps({"state": state, "status": doc}, indent=1, default=str))
        return 0 if state == "running" else 1
    if state in ("absent", "unreadable"):
        extra = f": {doc['error']}" if doc else ""
        print(f"station: not running (no status in {root}{extra})", file=sys.stderr)
        return 1
    j = doc.get("journal", {})
    lines = [
        f"state      {state}" + (f" (last update {doc.get('age_s', 0):.1f} s ago)" if state != "stopped" else
                                 " (process gone; figures below are its last status)"),
        f"station    {doc.get('station_id')}   pid {doc.get('pid')}   version {doc.get('software_version')}",
        f"session    {doc.get('session_id')}",
        f"sequence   {j.get('last_seq')}   blocks {j.get('blocks')}",
        f"journal    {_mb(j.get('size_bytes'))}   disk free {_mb(j.get('disk_free_bytes'))}"
        + (f"   ERROR {j['error']}" if j.get("error") else ""),
    ]
    try:
        du = shutil.disk_usage(root)
        lines.append(f"disk       {root}: {du.used / du.total:.0%} used, {_mb(du.free)} free")
    except OSError:
        pass
    q = doc.get("queue", {})
    lines.append(f"queue      waiting {q.get('waiting')}   dropped {q.get('dropped')}")
    for name, s in sorted((doc.get("sources") or {}).items()):
        if isinstance(s, dict):
            st = s.get("link") or s.get("state") or "?"
            detail = {k: v for k, v in s.items() if k in ("detail", "error", "reason") and v}
            lines.append(f"source     {name}: {st}" + (f"  {detail}" if detail else ""))
            for sub_name, sub in sorted((s.get("sources") or {}).items()) if isinstance(s.get("sources"), dict) else []:
                if isinstance(sub, dict):
                    lines.append(f"             {sub_name}: {sub.get('state', '?')}")
    for name, st in sorted((doc.get("engine_health") or {}).items()):
        lines.append(f"health     {name}: {st}")
    h = doc.get("headset") or {}
    if h:
        lines.append(f"headset    {h.get('status')}" + (f"  {'; '.join(h.get('warnings', []))}" if h.get("warnings") else ""))
    pub = doc.get("publisher")
    if isinstance(pub, dict):
        short = {k: v for k, v in pub.items() if isinstance(v, (int, float, str))}
        lines.append("publisher  " + " ".join(f"{k}={v}" for k, v in sorted(short.items()))[:200])
    print("\n".join(lines))
    return 0 if state == "running" else 1
