"""``station input devices``: the kernel's keyboards and pointers, each with its identity, whether
it is virtual, and whether it gives evidence under the current ``input.allow``; then a
ready-to-paste ``[input]`` block pinning the physical ones (docs/operations.md "Input devices").

Run it as root (or a member of group ``input``) on the exam PC with exactly the exam's keyboard
and mouse plugged in. ``--json`` prints one JSON object. Exit codes: 0 listed; 1 no readable
input device (the line says why); 2 bad configuration.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("input", help="input devices: identity, evidence, allow-list entries")
    isub = p.add_subparsers(dest="input_command", metavar="ACTION", required=True)
    d = isub.add_parser("devices", help="list keyboards and pointers with identity and ready-to-paste allow entries")
    d.add_argument("--json", action="store_true", help="one JSON object")
    d.add_argument("--dev-dir", default="/dev/input", help="where the evdev nodes are (default /dev/input)")
    d.add_argument("--sys-root", default="/sys", help="where sysfs is mounted (default /sys)")
    d.set_defaults(func=run_devices)


def run_devices(args) -> int:
    from station.capture.input.devices import Policy, identity_from_sysfs, list_nodes, readable_nodes
    from station.cli import load_config

    policy = Policy.from_config(load_config(args))
    rows = []
    for node in list_nodes(args.dev_dir):
        ident = identity_from_sysfs(node, args.sys_root)
        if ident is None or not (ident.keyboard or ident.pointer):
            continue
        evidence, why = policy.decide(ident)
        rows.append({"node": node, **ident.as_dict(), "evidence": evidence, "why": why,
                     "allow_entry": ident.allow_entry()})
    pin = [r["allow_entry"] for r in rows if not r["virtual"]]
    if args.json:
        print(json.dumps({"devices": rows, "allow": pin}, indent=1))
        return 0 if rows else 1
    if not rows:
        ok, denied = readable_nodes(args.dev_dir)
        why = (f"cannot read {', '.join(denied)} (run as root or as a member of group input)" if denied and not ok
               else f"no keyboard or pointer in {args.dev_dir}")
        print(f"station input devices: {why}")
        return 1
    for r in rows:
        role = "+".join(x for x in ("keyboard" if r["keyboard"] else "", "pointer" if r["pointer"] else "") if x)
        print(f"{r['node']}: {r['name']!r} ({role}) bus {r['bus'] or '?'}, {r['vendor'] or '????'}:{r['product'] or '????'}, "
              f"phys {r['phys'] or '(none)'}{', VIRTUAL' if r['virtual'] else ''}")
        print(f"    evidence: {'yes' if r['evidence'] else 'NO'} ({r['why']})")
        print(f"    allow entry: {r['allow_entry']}")
    if pin:
        print("\nTo pin these physical devices (only they give evidence), put into /etc/station/station.toml:")
        print("[input]\nallow = [\n" + "".join(f"    {e},\n" for e in pin) + "]")
    return 0
