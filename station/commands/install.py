"""``station.ops.install``: units, configuration, data and key directories of an exam PC
(see ``station.ops.install`` for the layout). Idempotent: a second run reports ``unchanged``.

    station install [--scope system|user] [--root DIR] [--exec PATH] [--station-id ID]
"""

from __future__ import annotations

import os
import subprocess

from station.errors import UserError


def add_common(p) -> None:
    p.add_argument("--scope", choices=("system", "user"), default="system",
                   help="system: recorder/capture/console/proxy services and accounts (exam PC, root); "
                        "user: the whole agent as this user's service (practice)")
    p.add_argument("--root", "--prefix", dest="root", default="/",
                   help="install below this directory instead of / (tests, images)")
    p.add_argument("--exec", dest="exe", help="the station command the units start (default: this one)")
    p.add_argument("--owner", default="station", help="service account owning journals and keys (system scope)")
    p.add_argument("--station-id", help="station id written into a new configuration (default: host name)")


def register(sub) -> None:
    p = sub.add_parser("install", help="install units, configuration and key/data directories",
                       description=__doc__.split("\n\n")[0])
    add_common(p)
    p.add_argument("--no-create-account", action="store_true", help="do not create the service account")
    p.add_argument("--allow-writable-code", action="store_true",
                   help="install even when the station's code is writable by accounts other than root "
                        "(development machines only: on an exam PC the candidate could replace it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from station.ops import install as inst
    if args.scope == "system" and os.geteuid() != 0:
        raise UserError("system scope needs root (or use --scope user)", exit_code=2)
    plan = inst.make_plan(args.scope, args.root, args.exe, args.owner, args.station_id)
    try:
        steps = inst.install(plan, create_account=not args.no_create_account,
                             allow_writable_code=args.allow_writable_code)
    except KeyError as e:
        raise UserError(f"no such account {e}: create it or drop --no-create-account", exit_code=2) from None
    except PermissionError as e:
        raise UserError(f"{e.filename}: permission denied", exit_code=1) from None
    for s in steps:
        print(s.line())
    changed = [s for s in steps if s.action in ("created", "updated")]
    print(f"station install ({plan.scope}): " + (f"{len(changed)} change(s)" if changed else "nothing to change: already installed"))
    if changed and inst.systemd_running(plan.root):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    if changed:
        if plan.scope == "system":
            print("next: edit /etc/station/station.toml (station id), `station keys authorize CONSOLE.key`, "
                  "`systemctl enable --now station-recorder station-capture`; exam accounts need no "
                  "station group (only station-capture may reach the hand-over socket)")
        else:
            print("next: `systemctl --user daemon-reload && systemctl --user enable --now station-agent`")
    return 0
