"""``station demo``: a simulated exam through the production pipeline; writes the report."""

from pathlib import Path

from station.cli import load_config
from station.commands import speed_arg
from station.errors import UserError


def register(sub):
    p = sub.add_parser("demo", help="run a simulated exam through the whole pipeline (no headset, no display)")
    p.add_argument("--speed", type=speed_arg, default=1.0, help="times real time (default 1, at most 1000)")
    p.add_argument("--fast", action="store_true", help="as fast as possible (deterministic)")
    p.add_argument("--duration", type=float, default=600.0, help="exam length in seconds (default 600)")
    p.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    p.add_argument("--station-id", default="demo-01")
    p.add_argument("--data-dir", default="var/demo", help="journal directory (default var/demo)")
    p.add_argument("--out", help="report directory (default DATA_DIR/reports/SESSION)")
    p.add_argument("--quiet", action="store_true", help="no live line")
    p.add_argument("--no-stream", action="store_true", help="no ZeroMQ publisher and loopback console")
    p.set_defaults(func=run)


def run(args):
    from station.demo import demo_config, main_demo
    if not 10 <= args.duration <= 6 * 3600:
        raise UserError("--duration must be between 10 and 21600 seconds", exit_code=2)
    cfg = demo_config(load_config(args), args.station_id, Path(args.data_dir), stream=not args.no_stream)
    return main_demo(args, cfg)
