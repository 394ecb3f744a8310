"""``python -m calibration ...``: the same as ``station calibrate ...``."""

import argparse
import sys

from station.cli import main as station_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # global station options (--config, --no-system-config, -v) may come first
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=[])
    pre.add_argument("--no-system-config", action="store_true")
    known, rest = pre.parse_known_args(argv)
    glob = [a for c in known.config for a in ("--config", c)]
    if known.no_system_config:
        glob.append("--no-system-config")
    return station_main(glob + ["calibrate"] + rest)


if __name__ == "__main__":
    sys.exit(main())
