"""The ``station`` command line.

Sub-commands live in ``station/commands/<name>.py`` (see ``COMMANDS``); each registers its own
parser. Errors an operator can fix (``ConfigError``, ``UserError``) are printed as one clear line
on stderr with a meaningful exit code, never as a traceback; so is a file or directory the
command cannot create or use (an ``OSError`` naming a path: exit 1, the traceback only with -v):

0 ok; 1 failed (see message); 2 bad configuration or usage; 3 bad journal; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from station import __version__
from station.config import ConfigError
from station.errors import UserError
from station.ops.malloc_tuning import limit_heap_growth

COMMANDS = ["demo", "run", "capture", "recorder", "replay", "report", "sessions", "status",
            "doctor", "devices", "input", "categories", "keys", "console", "proxy", "calibrate", "install", "uninstall"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="station", description="Instrumented exam station.")
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="extra configuration file (may be repeated; later files win)")
    parser.add_argument("--no-system-config", action="store_true",
                        help="ignore /etc/station/station.toml")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"commands.{name}"):
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    limit_heap_growth()   # long-running commands (agent, recorder, console) keep a flat RSS
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"station: configuration error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"station: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("station: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.verbose or not (e.strerror and e.filename):
            raise          # not an operator's file problem (or -v): keep the traceback for a bug report
        print(f"station: {os.fsdecode(e.filename)}: {e.strerror} (check that it exists and that this "
              "account may use it)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1


def load_config(args):
    """The configuration for a command, from the common --config options."""
    from station import config
    return config.load(args.config, system=not args.no_system_config)


if __name__ == "__main__":
    sys.exit(main())
