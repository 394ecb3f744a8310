"""``station uninstall``: remove what ``station install`` put in place. Journals and keys stay
unless ``--purge``; a configuration the admin edited stays (reported as kept)."""

from __future__ import annotations

import os
import subprocess

from station.commands.install import add_common
from station.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("uninstall", help="remove units and configuration (journals stay unless --purge)",
                       description=__doc__.split("\n\n")[0])
    add_common(p)
    p.add_argument("--purge", action="store_true", help="also delete journals, keys and the edited configuration")
    p.set_defaults(func=run)


def run(args) -> int:
    from station.ops import install as inst
    if args.scope == "system" and os.geteuid() != 0:
        raise UserError("system scope needs root (or use --scope user)", exit_code=2)
    plan = inst.make_plan(args.scope, args.root, args.exe, args.owner, args.station_id)
    if inst.systemd_running(plan.root):
        units = [n for n, _ in plan.unit_targets()]
        subprocess.run(["systemctl", *(["--user"] if plan.scope == "user" else []), "disable", "--now", *units],
                       check=False, capture_output=True)
    steps = inst.uninstall(plan, purge=args.purge)
    for s in steps:
        print(s.line())
    removed = [s for s in steps if s.action == "removed"]
    print(f"station uninstall ({plan.scope}): " + (f"{len(removed)} removed" if removed else "nothing to remove"))
    if removed and inst.systemd_running(plan.root):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    return 0
