"""``station capture``: the capture half (sources only), handing events to ``station recorder``
over the local socket. Runs in the candidate's graphical session."""

from pathlib import Path

from station.cli import load_config
from station.commands.run import add_source_options


def register(sub):
    p = sub.add_parser("capture", help="run the sources and hand events to the recorder (exam deployment)")
    add_source_options(p)
    p.add_argument("--data-dir", help="recorder data directory (locates the hand-over socket)")
    p.add_argument("--socket", help="hand-over socket path (default handover.socket or DATA_DIR/capture.sock)")
    p.set_defaults(func=run)


def run(args):
    from station.capture.process import run_capture
    from station.logs import setup_logging
    from station.ops.sdnotify import Notifier
    setup_logging(args.verbose)
    cfg = load_config(args)
    return run_capture(cfg, sources_kind=args.sources, seed=args.seed, speed=args.speed,
                       data_dir=Path(args.data_dir) if args.data_dir else None,
                       socket_path=Path(args.socket) if args.socket else None, notify=Notifier())
