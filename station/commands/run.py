"""``station run``: the agent in one process (sources, journal, engine, publisher)."""

from pathlib import Path

from station.cli import load_config
from station.commands import speed_arg


def add_source_options(p):
    p.add_argument("--sources", choices=("real", "scenario"), default="real",
                   help="real capture (default) or the simulated exam (tests, demonstrations)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed")
    p.add_argument("--speed", type=speed_arg, default=1.0, help="scenario speed (x real time, at most 1000)")


def register(sub):
    p = sub.add_parser("run", help="run the agent: capture, journal, engine and publisher in one process")
    add_source_options(p)
    p.add_argument("--data-dir", help="journal directory (default from the configuration)")
    p.set_defaults(func=run)


def run(args):
    from station.agent import run_agent
    from station.logs import setup_logging
    from station.ops.sdnotify import Notifier
    setup_logging(args.verbose)
    cfg = load_config(args)
    return run_agent(cfg, sources_kind=args.sources, seed=args.seed, speed=args.speed,
                     data_dir=Path(args.data_dir) if args.data_dir else None, notify=Notifier())
