"""``station replay SESSION``: re-run the engine on a journal and check it reproduces every
published message exactly (live summaries included). ``--fast`` checks only the final figures
(contacts, marks, exam) with the fast path (a 6-hour session in seconds). Exit 0 identical,
1 differences, 3 bad journal."""

import json
import time

from station.cli import load_config
from station.config import data_dir


def register(sub):
    p = sub.add_parser("replay", help="re-run the metrics engine on a session journal and compare")
    p.add_argument("session", help="session id (or unique prefix) or journal path")
    p.add_argument("--data-dir", help="journal directory (default from the configuration)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--fast", action="store_true", help="final figures only (much faster)")
    p.set_defaults(func=run)


def run(args):
    from pathlib import Path

    from station.recorder.journal import Journal, resolve_session
    from station.recorder.replay import replay
    root = Path(args.data_dir) if args.data_dir else data_dir(load_config(args))
    path = resolve_session(root, args.session)
    t0 = time.perf_counter()
    with Journal.open(path) as j:
        res = replay(j, exact=not args.fast)
    took = time.perf_counter() - t0
    out = {"session": path.stem, "batches": res.batches, "events": res.events, "messages_produced": res.produced,
           "messages_compared": res.compared, "identical": not res.mismatches, "mismatches": res.mismatches,
           "seconds": round(took, 3)}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{path.stem}: {res.batches} batches, {res.events} events, {res.compared} messages compared in {took:.2f} s")
        what = "final figures (contacts, marks, exam)" if args.fast else "every published engine message"
        print(f"identical: {what} reproduced" if not res.mismatches
              else "DIFFERENT:\n  " + "\n  ".join(res.mismatches))
    return 0 if not res.mismatches else 1
