"""Cost and latency of the evdev input backend at the office and stress profiles.

    .venv/bin/python benchmarks/evdev_bench.py [--profile office|stress|both] [--duration 20]

This machine has no /dev/input: the real source (``EvdevInput``: device set, reads, conversion)
reads FIFOs in a fixture /dev/input with a fixture sysfs (``tests/evdev_fixtures.py``), fed by the
parent process in real time as a kernel would deliver them: one mouse frame (REL_X, REL_Y,
SYN_REPORT, stamped at its time) per 1/mouse_hz, key taps at keys_hz (MSC_SCAN, EV_KEY, SYN).
The source runs in a child process (this file with ``--child``) that does nothing else but drain
its queue 4 times a second (as the capture's hand-over client): its CPU time (user + system, all
threads) over wall time is the backend's share of one core. No X display (no typing-task
characters side).

Printed per profile: CPU share, moves and keys captured, mouse bins, key delay p50/p99 (the time
a key event reached the queue minus its kernel stamp).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROFILES = {"office": {"mouse_hz": 125, "keys_hz": 8}, "stress": {"mouse_hz": 1000, "keys_hz": 20}}


def child(root: str) -> None:
    from station.capture.focus import FocusState
    from station.capture.input._evdev import EvdevInput
    from station.clock import monotonic_ns
    from station.config import load
    from station.eventqueue import EventQueue
    from station.events import KeyEvent, MouseBin

    class StampedQueue(EventQueue):
        def put(self, ev):
            if isinstance(ev, KeyEvent) and ev.down:
                delays.append(monotonic_ns() - ev.t_ns)
            super().put(ev)

    delays: list[int] = []
    q = StampedQueue()
    env_display = os.environ.pop("DISPLAY", None)
    src = EvdevInput(load(system=False), FocusState(), dev_dir=f"{root}/dev", sys_root=f"{root}/sys", twin_chars=False)
    src.start(q)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    while not src.connected.is_set():
        time.sleep(0.01)
    t0, c0 = time.monotonic(), os.times()
    moves = keys = bins = 0
    while not stop.wait(0.25):
        for e in q.drain_events():
            if isinstance(e, MouseBin):
                bins += 1
                moves += e.count
            elif isinstance(e, KeyEvent) and e.down:
                keys += 1
    c1, t1 = os.times(), time.monotonic()
    src.stop()
    delays.sort()
    pct = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))] / 1e6 if delays else None
    print(json.dumps({"cpu_pct": 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0),
                      "moves": moves, "keys": keys, "bins": bins, "seconds": t1 - t0,
                      "key_delay_p50_ms": pct(0.5), "key_delay_p99_ms": pct(0.99),
                      "dropped": src.counts["dropped"]}), flush=True)
    del env_display


def run(profile: str, duration: float) -> dict:
    from evdev import ecodes as E

    from station.capture.input._evdev import encode
    from tests import evdev_fixtures as fx
    prof = PROFILES[profile]
    with tempfile.TemporaryDirectory(prefix="evdev-bench-") as root:
        dev, sysr = Path(root) / "dev", Path(root) / "sys"
        dev.mkdir()
        fx.add_device(sysr, "event3", "usb_keyboard")
        fx.add_device(sysr, "event4", "usb_mouse")
        os.mkfifo(dev / "event3")
        os.mkfifo(dev / "event4")
        p = subprocess.Popen([sys.executable, __file__, "--child", root], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert p.stdout.readline().strip() == "ready"
        while True:
            try:
                kfd = os.open(dev / "event3", os.O_WRONLY | os.O_NONBLOCK)
                mfd = os.open(dev / "event4", os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                time.sleep(0.01)
        end = time.monotonic() + duration
        step, kstep = 1 / prof["mouse_hz"], 1 / prof["keys_hz"]
        next_m = next_k = time.monotonic()
        sign = 1
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_m:
                t = time.monotonic_ns()
                os.write(mfd, encode(fx.move(t - t % 1000, 2 * sign, sign)))
                sign = -sign if int(now) % 2 else sign
                next_m += step
            if now >= next_k:
                t = time.monotonic_ns()
                os.write(kfd, encode(fx.key(t - t % 1000, E.KEY_A, 1) + fx.key(t - t % 1000 + 1000, E.KEY_A, 0)))
                next_k += kstep
            time.sleep(max(0.0, min(next_m, next_k) - time.monotonic()))
        out, _ = p.communicate("", timeout=30)
        os.close(kfd)
        os.close(mfd)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="both", choices=["office", "stress", "both"])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    for prof in (["office", "stress"] if a.profile == "both" else [a.profile]):
        r = run(prof, a.duration)
        print(f"{prof}: evdev backend {r['cpu_pct']:.2f} % of one core; {r['moves']} moves "
              f"({r['moves'] / r['seconds']:.0f}/s) in {r['bins']} bins, {r['keys']} keys; key delay "
              f"p50 {r['key_delay_p50_ms']:.1f} ms, p99 {r['key_delay_p99_ms']:.1f} ms; dropped frames {r['dropped']}")


if __name__ == "__main__":
    main()
