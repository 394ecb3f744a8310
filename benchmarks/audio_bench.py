"""Audio source CPU: its threads' CPU time / wall time while AudioSource captures two channels
(the agent and customer null-sink monitors of a private PulseAudio server) for --seconds (60),
through the old path (PortAudio + ALSA's pulse plugin: devices ``agent_monitor``) and the native
path (the sound server's own source names ``agent.monitor``, recorded with libpulse's simple API),
side by side (``--path both``, the default).

Speech-like load: espeak-ng sentences are played into both sinks in a loop, so the VAD sees
speech as well as silence. The players and the server are other processes (the threads that feed
the players are not counted); the figure is the audio source's worker and the PortAudio and ALSA
pulse-plugin threads it starts, or the native readers and the event watch (scheduler run time per
thread, /proc/self/task/*/schedstat).

    .venv/bin/python benchmarks/audio_bench.py [--seconds 60] [--block-ms MS] [--path old|native|both]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.agent_bench import thread_ticks  # noqa: E402
from station import config  # noqa: E402
from station.capture.audio import AudioSource  # noqa: E402
from station.eventqueue import EventQueue  # noqa: E402
from station.ops.malloc_tuning import limit_heap_growth  # noqa: E402
from tests.pulse_harness import PulseServer, espeak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--block-ms", type=int, help="audio.block_ms (default: the config's)")
    ap.add_argument("--path", choices=["old", "native", "both"], default="both")
    args = ap.parse_args()
    limit_heap_growth()   # as every station process does (station.cli)
    for path in (["old", "native"] if args.path == "both" else [args.path]):
        measure(args, path)
    return 0


DEVICES = {"old": ("agent_monitor", "customer_monitor"), "native": ("agent.monitor", "customer.monitor")}


def measure(args, path: str) -> None:
    agent, customer = DEVICES[path]
    cfg = config.load(system=False).replace(audio={"agent_device": agent, "customer_device": customer,
                                                   **({"block_ms": args.block_ms} if args.block_ms else {})})
    with tempfile.TemporaryDirectory() as d, PulseServer() as pa:
        pa.activate()
        line = espeak("Thank you for calling, how can I help you today?", Path(d) / "s.wav")
        loop = np.concatenate([line, np.zeros(16000, np.int16)] * 8)
        q = EventQueue()
        src = AudioSource(cfg)
        src.start(q)
        while src.state != "ok":
            time.sleep(0.05)
        stop = threading.Event()

        def player():
            while not stop.is_set():
                pbs = pa.play_together([("agent", loop, 0.0), ("customer", loop, -3.0)])
                for pb in pbs:
                    while pb.proc.poll() is None and not stop.is_set():
                        time.sleep(0.1)
                    pb.kill()

        th = threading.Thread(target=player, daemon=True)
        th.start()
        time.sleep(1.0)
        q.drain()
        # the audio source's threads only (its worker, and PortAudio's and the pulse plugin's
        # threads, which it starts): the harness's players feed pacat from threads of this process
        c0, w0 = _audio_thread_ns(), time.monotonic()
        frames = 0
        rss_first = None
        while time.monotonic() - w0 < args.seconds:
            time.sleep(0.5)
            frames += sum(1 for e in q.drain_events() if e.STREAM == "speech")
            if rss_first is None and time.monotonic() - w0 >= min(60.0, args.seconds / 2):
                rss_first = (time.monotonic() - w0, _rss_mb())
        c1, w1 = _audio_thread_ns(), time.monotonic()
        rss_end = _rss_mb()
        stop.set()
        src.stop()
        th.join(5)
        st = src.status()
    wall = w1 - w0
    cpu = sum(ns - c0.get(tid, 0) for tid, ns in c1.items()) / 1e9
    print(f"== {path} path ({agent}, {customer})")
    print(f"audio source: {wall:.1f} s wall, {cpu:.2f} s CPU = {100 * cpu / wall:.2f} % of one core "
          f"(block {cfg.audio.block_ms} ms, 2 channels, {cfg.audio.frame_ms} ms frames)")
    print(f"frames {frames} ({frames / wall:.1f}/s), overflows {st['overflows']}, dropped blocks "
          f"{st['dropped_blocks']}, reanchors {st['reanchors']}, adc clock {st['adc_clock']}, "
          f"load average {os.getloadavg()[0]:.1f}, per channel since start {st['frames']}, blocks {st['blocks']}")
    if rss_first is not None:
        print(f"RSS {rss_first[1]:.1f} MB at {rss_first[0]:.0f} s, {rss_end:.1f} MB at {wall:.0f} s "
              f"({rss_end - rss_first[1]:+.1f} MB)", flush=True)


# the worker (PortAudio's threads inherit its name; it also reads the native streams), libpulse's,
# the native path's source watch
AUDIO_THREADS = ("audio-source", "threaded-ml", "audio-watch")


def _audio_thread_ns() -> dict[int, int]:
    """{tid: run time ns} of this process's audio threads (the scheduler's exact figure)."""
    return {tid: run_ns for tid, (name, run_ns, _) in thread_ticks(os.getpid()).items() if name in AUDIO_THREADS}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
