"""``station console``: follow the configured stations ([[console.station]]).

``--plain`` prints one line per message (station, session, seq, kind, short body) and a ``#`` line
whenever a station's state or clock estimate changes; every message is also kept in the console
store (console.store), so a restarted console resumes where it stopped. Without ``--plain`` it
serves the assessor web console (station/web, docs/console.md) on console.http_host:http_port.
``station console stats [--json]``: Cohen's kappa of every exam in the console store and the
centre's across candidates. ``station console anchors --out FILE``: export the journal anchors
the store holds (chain heads and countersigned exam-end anchors), for ``station sessions verify
--against FILE`` on a station. ``--hash-password`` reads a password (twice, from the terminal; or one line from stdin) and prints
the ``password_hash`` for a ``[[console.assessor]]`` login.
"""

from __future__ import annotations

import signal
import sys
import time

from station.argtypes import number
from station.cli import load_config
from station.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("console", help="follow stations (assessor console)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("action", nargs="?", choices=("web", "stats", "anchors"), default="web",
                   help="web (default: the web console), stats (agreement of the assessors), "
                        "anchors (export the journal anchors)")
    p.add_argument("--json", action="store_true", help="stats: print JSON")
    p.add_argument("--out", help="anchors: the file to write")
    p.add_argument("--plain", action="store_true", help="text mode: one line per message")
    p.add_argument("--duration", type=number(0, what="seconds"), default=0.0,
                   help="stop after this many seconds (0 = until interrupted)")
    p.add_argument("--port", type=number(0, 65535, integer=True, what="port"), default=0, help="web console port (default console.http_port)")
    p.add_argument("--width", type=number(20, 10_000, integer=True, what="width"), default=120, help="maximum line length in --plain mode")
    p.add_argument("--hash-password", action="store_true",
                   help="print the password_hash of a password for [[console.assessor]] and exit")
    p.set_defaults(func=run)


def hash_password() -> int:
    import getpass

    from station.console.passwords import hash_password as make
    if sys.stdin.isatty():
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            raise UserError("the two passwords differ", 2)
    else:
        pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 8:
        raise UserError("use a password of at least 8 characters", 2)
    print(f'password_hash = "{make(pw)}"')
    return 0


def run(args) -> int:
    if args.hash_password:
        return hash_password()
    cfg = load_config(args)
    if args.action in ("stats", "anchors"):
        return offline(cfg, args)
    if args.plain:
        return run_plain(cfg, args.duration, args.width)
    from station.console.web.app import run_web  # the web console (docs/console.md)
    return run_web(cfg, args)


def offline(cfg, args) -> int:
    """``stats`` and ``anchors``: read the console store only (the console may be running)."""
    import json

    from station.console.follower import store_path
    path = store_path(cfg)
    if not path.exists():
        raise UserError(f"{path}: no console store (console.store); has this console run?", 2)
    if args.action == "anchors":
        from station import anchors
        if not args.out:
            raise UserError("anchors: give --out FILE", 2)
        found = anchors.load(path)
        anchors.export(args.out, found)
        print(f"wrote {args.out}: anchors of {len(found)} session(s) from {path}")
        return 0
    from station.console.store import ConsoleStore
    from station.console.stats import centre_agreement, format_table
    reader = ConsoleStore(path, readonly=True)
    try:
        res = centre_agreement(reader)
    finally:
        reader.close()
    print(json.dumps(res, indent=1) if args.json else format_table(res))
    return 0


def run_plain(cfg, duration: float = 0.0, width: int = 120) -> int:
    from station.console.follower import Console, format_line
    if not cfg.console.station:
        raise UserError("no stations to follow: add [[console.station]] entries to the configuration", 2)
    console = Console(cfg)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    console.start()
    shown: dict[str, tuple] = {}
    end = time.monotonic() + duration if duration > 0 else None
    out = sys.stdout
    try:
        while not stop and (end is None or time.monotonic() < end):
            for m in console.poll(200):
                out.write(format_line(m, width) + "\n")
            for sid, st in console.states().items():
                off = st["offset_ns"]
                key = (st["state"], st["detail"], st["session"], off is not None and round(off / 1e5))
                if shown.get(sid) != key:
                    shown[sid] = key
                    clock = (f" offset={off / 1e6:+.3f}ms rtt={st['rtt_ns'] / 1e6:.3f}ms"
                             if off is not None else "")
                    detail = f" ({st['detail']})" if st["detail"] else ""
                    out.write(f"# {sid} {st['state']}{detail} session={st['session']}{clock}\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        for sid, st in console.states().items():
            counts = " ".join(f"{k}={v}" for k, v in sorted(st["counts"].items()))
            out.write(f"# {sid} counts {counts}\n")
        out.flush()
        console.stop()
    return 0
