"""``station doctor [--json]``: pass/fail table of what capture and recording need
(see ``station.ops.doctor``). Exit 0 when every required check passes, 1 otherwise."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check display, X extensions, window manager, audio, "
                                             "config, journal directory and ZeroMQ CURVE")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from station.cli import load_config
    from station.ops import doctor

    checks = doctor.run_checks(lambda: load_config(args))
    ok = doctor.all_ok(checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(doctor.format_table(checks))
    return 0 if ok else 1
