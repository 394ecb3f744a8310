"""What following hot-plug costs the evdev backend: udev's events vs the 0.5 s rescan.

    .venv/bin/python benchmarks/hotplug_bench.py [--seconds 10] [--runs 3]

The real source (``EvdevInput``) on a fixture /dev/input with one idle keyboard (a FIFO, as in
``tests/test_input_evdev.py``; this machine has no /dev/input and runs no udev), once following
hot-plug by rescanning (what it does without udev) and once by udev events (the recorded
transcript ``tests/udev_records/usb_keyboard.txt`` fed through the monitor's interface, as
``_hotplug.UdevMonitor`` would deliver it). Printed per mode and run: the backend thread's
wake-ups per second while idle (``idle_wakeups``), the process's CPU time per second of wall
time (ms/s), and the delay from a plug (node made, then the udev events) to its "present"
DeviceEvent in the queue (ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def one_run(mode: str, seconds: float) -> dict[str, float]:
    from station.capture.focus import FocusState
    from station.capture.input._evdev import EvdevInput
    from station.config import load
    from station.eventqueue import EventQueue
    from station.events import DeviceEvent
    from tests import evdev_fixtures as fx

    root = Path(tempfile.mkdtemp(prefix="hotplug-bench-"))
    dev, sysfs = root / "dev", root / "sys"
    dev.mkdir()
    sysfs.mkdir()
    fx.add_device(sysfs, "event3", "usb_keyboard")
    os.mkfifo(dev / "event3")
    udev = fx.RecordedUdev() if mode == "udev" else None
    q = EventQueue()
    src = EvdevInput(load(system=False), FocusState(), dev_dir=str(dev), sys_root=str(sysfs), twin_chars=False,
                     hotplug=udev)
    src.start(q)
    try:
        while not src.connected.is_set():
            time.sleep(0.01)
        q.drain_events()
        w0, t0, c0 = src.status().get("idle_wakeups", 0), time.monotonic(), time.process_time()
        time.sleep(seconds)
        w1, t1, c1 = src.status().get("idle_wakeups", 0), time.monotonic(), time.process_time()
        plug, _ = fx.udev_records(fx.UDEV_RECORDS / "usb_keyboard.txt")
        fx.add_device(sysfs, "event22", "usb_injector")
        t_plug = time.monotonic()
        os.mkfifo(dev / "event22")
        if udev is not None:
            udev.send(plug)
        while not any(isinstance(e, DeviceEvent) and e.device.endswith("event22") for e in q.drain_events()):
            time.sleep(0.001)
        delay = time.monotonic() - t_plug
    finally:
        src.stop()
        if udev is not None:
            udev.close()
    cpu = c1 - c0
    return {"wakeups_per_s": (w1 - w0) / (t1 - t0), "cpu_ms_per_s": 1000 * cpu / (t1 - t0),
            "plug_delay_ms": 1000 * delay}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="idle time measured per run (s)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs of {args.seconds:g} s idle per mode")
    for mode in ("rescan", "udev"):
        rows = [one_run(mode, args.seconds) for _ in range(args.runs)]
        for key in ("wakeups_per_s", "cpu_ms_per_s", "plug_delay_ms"):
            vals = [r[key] for r in rows]
            print(f"{mode:6} {key:14} median {statistics.median(vals):8.2f}  min {min(vals):8.2f}  max {max(vals):8.2f}")


if __name__ == "__main__":
    main()
