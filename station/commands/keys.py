"""``station keys generate|show|authorize``: CURVE key files for stations, consoles and proxies.

generate   write <name>.key (public) and <name>.key_secret (0600) into --dir (0700); default
           name "station", default dir <data_dir>/keys (the paths the configuration expects).
show       print the public key of a key file (default: this station's, publisher.secret_key_file).
authorize  copy a console's (or proxy's) PUBLIC .key file into the station's allow-list
           directory (publisher.authorized_keys_dir); a running station picks it up within 1 s.
           --assessor-id ID [--assessor-name NAME] binds the key to that assessor: the station
           journals every command sent with this key as that assessor (never the id a message
           claims); a key without a binding may follow the station but not send commands.
"""

from __future__ import annotations

from pathlib import Path

from station import keys
from station.cli import load_config


def register(sub) -> None:
    p = sub.add_parser("keys", help="generate, show and authorize CURVE keys",
                       description=__doc__.split("\n\n")[0])
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")
    g = ks.add_parser("generate", help="create a key pair")
    g.add_argument("--name", default="station", help="file name stem (default: station)")
    g.add_argument("--dir", type=Path, help="directory (default: <data_dir>/keys)")
    g.add_argument("--force", action="store_true", help="replace an existing key pair")
    g.set_defaults(func=_generate)
    s = ks.add_parser("show", help="print a public key")
    s.add_argument("file", nargs="?", type=Path,
                   help="key file (default: this station's secret key file)")
    s.set_defaults(func=_show)
    a = ks.add_parser("authorize", help="allow a console's public key on this station")
    a.add_argument("public_key_file", type=Path)
    a.add_argument("--name", help="name in the allow-list (default: the file's name)")
    a.add_argument("--dir", type=Path, help="allow-list directory (default: publisher.authorized_keys_dir)")
    a.add_argument("--assessor-id", help="bind the key to this assessor (commands sent with it are theirs)")
    a.add_argument("--assessor-name", default="", help="the assessor's name, shown in consoles and reports")
    a.set_defaults(func=_authorize)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _generate(args) -> int:
    d = args.dir or keys.keys_dir(load_config(args))
    pub, sec = keys.generate(d, args.name, force=args.force)
    print(f"public key  {keys.load_public(pub).decode()}")
    print(f"public file {pub}   (give this one to the other side)")
    print(f"secret file {sec}   (mode 0600; never copy it)")
    return 0


def _show(args) -> int:
    path = args.file or keys.station_secret_file(load_config(args))
    print(keys.load_public(path).decode())
    return 0


def _authorize(args) -> int:
    d = args.dir or keys.allow_dir(load_config(args))
    if args.assessor_name and not args.assessor_id:
        from station.errors import UserError
        raise UserError("--assessor-name needs --assessor-id", 2)
    target = keys.authorize(args.public_key_file, d, args.name, args.assessor_id, args.assessor_name)
    pub = keys.load_public(target)
    who = f" for assessor {args.assessor_id}" if args.assessor_id else " (may follow, not send commands)"
    print(f"authorized {pub.decode()} as {target}{who}; fingerprint {keys.fingerprint(pub)}")
    return 0
