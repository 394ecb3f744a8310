"""``station report SESSION``: write report.json and report.html for a session."""

from pathlib import Path

from station.cli import load_config
from station.config import data_dir


def register(sub):
    p = sub.add_parser("report", help="write the JSON and HTML report of a session")
    p.add_argument("session", help="session id (or unique prefix) or journal path")
    p.add_argument("--data-dir", help="journal directory (default from the configuration)")
    p.add_argument("--out", help="output directory (default DATA_DIR/reports/SESSION)")
    p.add_argument("--against", metavar="ANCHORS",
                   help="console store or anchor file: check the journal against the heads the consoles hold")
    p.set_defaults(func=run)


def run(args):
    from station.recorder.journal import Journal, resolve_session
    from station.recorder.report import build_report
    from station.rendering import write_report
    root = Path(args.data_dir) if args.data_dir else data_dir(load_config(args))
    path = resolve_session(root, args.session)
    entry = None
    if args.against:
        from station import anchors
        with Journal.open(path) as j:
            sid = j.header.session_id
        entry = anchors.load(Path(args.against)).get(sid, {"heads": [], "final": []})
    with Journal.open(path) as j:
        rep = build_report(j, anchor=entry)
    out = Path(args.out) if args.out else root / "reports" / path.stem
    jp, hp = write_report(rep, out)
    integ = rep["integrity"]
    print(f"integrity: {'ok' if integ['ok'] else 'PROBLEMS'}")
    for p in integ["journal_problems"] + integ.get("anchor_problems", []) + integ["replay_mismatches"]:
        print(f"  {p}")
    sec = rep["security"]
    if sec["simulated"]:
        print("SIMULATED: fed by scenario (demo/test) sources, not an exam record")
    print("hand-over security: " + ("nothing refused or dropped" if not sec["counts"] else
                                    "PROBLEMS: " + ", ".join(f"{k} {v}" for k, v in sorted(sec["counts"].items()))))
    print(f"report: {hp}\njson: {jp}")
    return 0 if integ["ok"] else 1
