"""Capture cost and latency: input + focus sources under xdotool load on Xvfb + openbox.

    .venv/bin/python benchmarks/capture_bench.py [--profile office|stress|both] [--duration 60]
                                                 [--backend xi2|pynput|both]

The sources run in a child process (this file with ``--child``) that does nothing else, so its
CPU time (user + system, all threads, from ``os.times()``) over wall time is the sources' share of
one core. The parent drives the load with xdotool (XTEST) in separate processes
(``benchmarks.loads.InputLoad``): mouse moves (the rate reached is measured from the captured
motion events), keys written to a long-running ``xdotool -`` and stamped just before the write,
and one ``xdotool windowactivate --sync`` per focus change, stamped before the call (this includes
xdotool's start).

Printed per profile: CPU share, reached mouse/key/focus rates, key delay p50/p99 (stamped press
minus the time just before the command was written to xdotool), focus
latency p50/p99 (same), RSS after 10 s and at the end (growth). Profiles as in issue 3:
see ``benchmarks.loads.PROFILES``. ``--backend`` sets ``STATION_INPUT_BACKEND`` for the child (both: one
run per backend and profile).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loads import PROFILES, WINDOWS, InputLoad  # noqa: E402


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child() -> None:
    """Run the sources until stdin closes; print one JSON line with costs and stamps."""
    from station.config import load
    from station.events import FocusChange, KeyEvent, MouseBin
    from tests.x11_harness import Capture

    cap = Capture(load(system=False)).start()
    backend = cap.input.status().get("backend", "")
    keys, focus, moves = [], [], 0
    rss_10s = None
    print("ready", flush=True)
    t_start = time.monotonic()
    c0 = os.times()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def take(events):
        # keep only what the parent needs
        nonlocal moves
        for e in events:
            if isinstance(e, KeyEvent) and e.down and not e.repeat:
                keys.append(e.t_ns)
            elif isinstance(e, FocusChange) and e.window_id:
                focus.append((e.t_ns, e.window_id))
            elif isinstance(e, MouseBin):
                moves += e.count

    while not stop.wait(0.5):
        take(cap.queue.drain_events())  # drain like a recorder would (every 0.5 s)
        if rss_10s is None and time.monotonic() - t_start >= 10:
            rss_10s = _rss_kb()
    c1 = os.times()
    wall = time.monotonic() - t_start
    rss_end = _rss_kb()
    cap.stop()
    input_status = cap.input.status()
    take(cap.events + cap.queue.drain_events())  # emitted while stopping (last bins, held-back keys;
    #                                       Capture.stop() collects them into cap.events)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(json.dumps({"backend": backend, "cpu_s": cpu, "wall_s": wall, "keys": keys, "focus": focus,
                      "moves": moves, "rss_10s_kb": rss_10s, "rss_end_kb": rss_end,
                      "dropped": cap.queue.dropped, "input_status": input_status}), flush=True)


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-q * len(v) // 100)) - 1))
    return v[k]


def run_profile(name: str, duration: float, backend: str) -> dict:
    from tests.x11_harness import X11Session

    prof = PROFILES[name]
    with X11Session() as x:
        wins = [x.open_window(c, t) for c, t in WINDOWS]
        x.activate(wins[0])
        env = x.env
        env["STATION_INPUT_BACKEND"] = backend
        proc = subprocess.Popen([sys.executable, __file__, "--child"], env=env, cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("capture child did not start")
        load = InputLoad(x, wins, name).start()
        time.sleep(duration)
        load.stop()
        key_t0, focus_t0 = load.key_t0, load.focus_t0
        time.sleep(0.3)
        out, _ = proc.communicate(input="", timeout=60)
        res = json.loads(out.strip().splitlines()[-1])

    key_t = sorted(res["keys"])
    delays = []
    j = 0
    for t0 in key_t0:
        while j < len(key_t) and key_t[j] < t0:
            j += 1
        if j < len(key_t):
            delays.append((key_t[j] - t0) / 1e6)
            j += 1
    flat = []
    for t0, wid in focus_t0:
        hit = [t for t, w in res["focus"] if w == wid and t >= t0]
        if hit:
            flat.append((min(hit) - t0) / 1e6)
    return {"profile": name, "backend": res["backend"], "duration_s": res["wall_s"],
            "cpu_share_pct": 100.0 * res["cpu_s"] / res["wall_s"],
            "mouse_hz_target": prof["mouse_hz"], "mouse_hz_reached": res["moves"] / res["wall_s"],
            "keys_sent": len(key_t0), "keys_captured": len(key_t),
            "key_delay_ms_p50": pct(delays, 50), "key_delay_ms_p99": pct(delays, 99),
            "focus_sent": len(focus_t0), "focus_captured": len(flat),
            "focus_latency_ms_p50": pct(flat, 50), "focus_latency_ms_p99": pct(flat, 99),
            "rss_10s_mb": (res["rss_10s_kb"] or 0) / 1024, "rss_end_mb": res["rss_end_kb"] / 1024,
            "queue_dropped": res["dropped"], "input_status": res["input_status"]}


def print_result(r: dict) -> None:
    print(f"== {r['profile']}, input backend {r['backend']}: {r['duration_s']:.0f} s")
    print(f"  input+focus CPU        {r['cpu_share_pct']:.2f} % of one core")
    print(f"  mouse                  target {r['mouse_hz_target']} Hz, reached "
          f"{r['mouse_hz_reached']:.0f} Hz (xdotool)")
    print(f"  keys                   sent {r['keys_sent']}, captured {r['keys_captured']}; "
          f"delay p50 {r['key_delay_ms_p50']:.1f} ms, p99 {r['key_delay_ms_p99']:.1f} ms")
    print(f"  focus                  sent {r['focus_sent']}, captured {r['focus_captured']}; "
          f"latency p50 {r['focus_latency_ms_p50']:.1f} ms, p99 {r['focus_latency_ms_p99']:.1f} ms")
    print(f"  RSS                    {r['rss_10s_mb']:.1f} MB after 10 s, {r['rss_end_mb']:.1f} MB "
          f"at end (growth {r['rss_end_mb'] - r['rss_10s_mb']:+.1f} MB)")
    print(f"  queue drops            {r['queue_dropped']}")
    print("  json " + json.dumps(r), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=["office", "stress", "both"], default="both")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per profile")
    ap.add_argument("--backend", choices=["xi2", "pynput", "both"], default="xi2",
                    help="input backend (STATION_INPUT_BACKEND)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child()
        return
    backends = ["xi2", "pynput"] if a.backend == "both" else [a.backend]
    for name in (["office", "stress"] if a.profile == "both" else [a.profile]):
        for backend in backends:
            print_result(run_profile(name, a.duration, backend))


if __name__ == "__main__":
    main()
