"""``station recorder``: journal, engine and publisher, fed by ``station capture`` over the local
socket. Runs as a system service under its own user."""

from pathlib import Path

from station.cli import load_config


def register(sub):
    p = sub.add_parser("recorder", help="run the recorder (journal, engine, publisher) for a capture process")
    p.add_argument("--data-dir", help="journal directory (default from the configuration)")
    p.set_defaults(func=run)


def run(args):
    from station.logs import setup_logging
    from station.ops.sdnotify import Notifier
    from station.recorder.process import run_recorder
    setup_logging(args.verbose)
    cfg = load_config(args)
    return run_recorder(cfg, data_dir=Path(args.data_dir) if args.data_dir else None, notify=Notifier())
