"""``station categories``: which category the focused window gets, live, for an admin clicking
through the exam's applications before an exam.

Prints the configured rules (numbered), then one line per focus change with what the station
sees of the window (WM_CLASS instance and class, title, process) and the category and rule it
gets, exactly as the capture's focus source classifies it (the same ``FocusSource``). Runs until
Ctrl-C; ``--once`` prints the focused window and exits; ``--json`` prints one JSON object a line.

Exit codes: 0 done (Ctrl-C, ``--once``, ``--seconds`` elapsed); 1 focus cannot be observed in
this session (no display, X server unreachable, Wayland without the station's GNOME Shell
extension: the line says why); 2 bad configuration.
"""

from __future__ import annotations

import json
import queue
import time

from station.argtypes import number
from station.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("categories", help="show live which category (and rule) the focused window gets")
    p.add_argument("--once", action="store_true", help="print the focused window and exit")
    p.add_argument("--seconds", type=number(0, what="seconds"), default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


GRACE_S = 2.0   # a source still lost this long after the start, with nothing seen: exit 1


def run(args) -> int:
    from station.capture.focus import FocusSource
    from station.cli import load_config
    from station.eventqueue import EventQueue
    from station.events import SourceHealth

    cfg = load_config(args)
    rules = cfg.categories.rule
    if not args.json:
        print(f"{len(rules)} rule(s), first match wins; no match = other:")
        for i, r in enumerate(rules):
            pats = ", ".join(f"{k} ~ {r[k]!r}" for k in ("class", "title", "process") if r[k])
            print(f"  {i + 1:3d}. {r['category']:<12} {pats}")
        print("Click through the exam's applications; Ctrl-C to stop.", flush=True)
    seen: queue.Queue = queue.Queue()
    events = EventQueue()
    src = FocusSource(cfg, observer=seen.put)
    src.start(events)
    t0 = time.monotonic()
    end = t0 + args.seconds if args.seconds else None
    lost = ""
    seen_any = False
    try:
        while end is None or time.monotonic() < end:
            for ev in events.drain_events():
                if isinstance(ev, SourceHealth):
                    lost = ev.detail if ev.state == "lost" else ""
                    if ev.state != "ok" and not args.json:
                        print(f"focus {ev.state}: {ev.detail}", flush=True)
            try:
                w = seen.get(timeout=0.2)
            except queue.Empty:
                if lost and not seen_any and time.monotonic() - t0 > GRACE_S:
                    raise UserError(f"focus cannot be observed: {lost}") from None
                continue
            seen_any = True
            _show(w, rules, args.json)
            if args.once:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        src.stop()
    return 0


def _show(w, rules, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"t_ns": w.t_ns, "window_id": w.window_id, "app_id": w.app_id, "instance": w.instance,
                          "class": w.wm_class, "title": w.title, "pid": w.pid, "process": w.process,
                          "category": w.match.category,
                          "rule": None if w.match.rule is None else w.match.rule + 1}), flush=True)
        return
    if not w.window_id:
        print(f"{time.strftime('%H:%M:%S')}  (no focused window)  ->  {w.match.describe(rules)}", flush=True)
        return
    app = f"app_id={w.app_id!r} " if w.app_id else ""
    print(f"{time.strftime('%H:%M:%S')}  {app}instance={w.instance!r} class={w.wm_class!r} "
          f"title={w.title!r} process={w.process!r}  ->  {w.match.describe(rules)}", flush=True)
