"""Whole-agent cost: CPU and RSS of the real agent processes under the issue-3 load profiles.

    .venv/bin/python benchmarks/agent_bench.py [--profile office|stress|both] [--duration 60]
                                               [--mode run|split|both] [--rss-every 60]
                                               [--softphone on|off|both] [--block-ms MS]
                                               [--audio-path old|native|both]

Runs the agent exactly as an exam PC does, as child processes, against Xvfb + openbox and a
private PulseAudio with agent/customer null sinks: ``--mode run`` is ``station run`` (sources,
journal, engine and ZeroMQ publisher in one process), ``--mode split`` is ``station capture``
(the candidate-side process: audio, input, focus) feeding ``station recorder`` (journal, engine,
publisher) over the local socket. Load (``benchmarks.loads``): espeak-ng speech looping on both
channels, xdotool mouse/keys/focus at the profile's rates. The sound server pushes audio to each
recorder as often as the lowest-latency client of the device asks: ``--softphone on`` (default)
keeps the harness's 10 ms recorder on both devices, as a softphone in a call does (100 pushes/s
per stream), ``off`` stops it once the agent records, as between calls (chat, e-mail).
``--audio-path``: ``old`` records the monitors through PortAudio and ALSA's pulse plugin
(devices ``agent_monitor``), ``native`` by the sound server's own names (``agent.monitor``, libpulse's
simple API, one wake-up per block); ``both`` (default) measures each, printed one after the other.

Measured from /proc after a 5 s warm-up, over ``--duration`` s: each process's CPU time (user +
system, all threads) / wall time = its share of one core, the busiest threads by name, and RSS at
1 min and at the end (RSS growth; issue 3 asks for the stress profile: within 10 MB between 1 min
and 30 min, i.e. ``--profile stress --duration 1800``). Afterwards the session journal is read
and the captured counts are printed (speech frames/s, keys, focus changes), so a figure from an
agent that captured nothing cannot pass for a cheap one.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.loads import WINDOWS, InputLoad, SpeechLoad  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all threads), in clock ticks."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def thread_ticks(pid: int) -> dict[int, tuple[str, int, int]]:
    """{tid: (thread name, run time ns, times scheduled)} of a process's live threads, from
    /proc/.../schedstat (the scheduler's exact run time, not tick samples)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            run_ns, _wait_ns, slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(run_ns), int(slices))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def station(*args: str, wrapper: str | None = None) -> list[str]:
    """The command line of a station process (wrapper: a script run instead of "-m station")."""
    entry = [wrapper] if wrapper else ["-m", "station"]
    return [sys.executable, *entry, "--no-system-config", *args]


def captured(data: Path, since_ns: int, until_ns: int) -> tuple[dict[str, int], np.ndarray, int]:
    """Events per stream stamped in [since_ns, until_ns) in the newest session journal; the delay
    (ns) from each of those speech frames' end to the recorder cycle that journaled it; and how
    many events (any stream; a speech frame by its end) came late: behind an earlier cycle's
    watermark."""
    from station.recorder.journal import Journal, list_sessions
    info = list_sessions(data)[-1]
    counts: dict[str, int] = {}
    delays = []
    late = 0
    mark = -(2 ** 62)
    with Journal.open(info.path) as j:
        for b in j.iter_batches():
            for name, cols in b.streams.items():
                t = np.asarray(cols["t_ns"])
                inside = (t >= since_ns) & (t < until_ns)
                counts[name] = counts.get(name, 0) + int(inside.sum())
                ends = (t + np.asarray(cols["dur_ns"]) if name == "speech" else t)[inside]
                if name == "speech":
                    delays.append(b.t_ns - ends)
                late += int(np.count_nonzero(ends <= mark))
            mark = max(mark, b.watermark_ns)
    return counts, np.concatenate(delays) if delays else np.zeros(0, dtype=np.int64), late


def run(profile: str, mode: str, duration: float, rss_every: float, softphone: bool = True,
        wrapper: str | None = None, block_ms: int | None = None, audio_path: str = "native") -> dict:
    """One measured run (see the module docstring). softphone: keep a 10 ms recorder on both
    devices, as a softphone in a call does (the sound server then pushes audio to every recorder
    100 times/s); False: the agent is the only recorder. wrapper: see --wrap. block_ms: audio.block_ms
    (None: the config's)."""
    from tests.pulse_harness import PulseServer
    from tests.streaming_station import Rig
    from tests.support import XTEST_INPUT_TOML
    from tests.x11_harness import X11Session

    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp, X11Session() as x, PulseServer() as pa:
        tmp = Path(tmp)
        rig = Rig(tmp, station_id="bench-01")
        over = tmp / "audio.toml"
        agent, customer = ("agent.monitor", "customer.monitor") if audio_path == "native" else (
            "agent_monitor", "customer_monitor")
        over.write_text(f'[audio]\nagent_device = "{agent}"\ncustomer_device = "{customer}"\n'
                        + (f"block_ms = {block_ms}\n" if block_ms else "") + XTEST_INPUT_TOML)
        cfg = ["--config", str(rig.station_cfg), "--config", str(over)]
        data = tmp / "data"
        wins = [x.open_window(c, t) for c, t in WINDOWS]
        x.activate(wins[0])
        env = {**pa.child_env(), "DISPLAY": x.display}
        logs = []
        procs: dict[str, subprocess.Popen] = {}

        def start(name: str, args: list[str]) -> None:
            log = open(tmp / f"{name}.log", "wb")
            logs.append(log)
            procs[name] = subprocess.Popen(station(*cfg, *args, wrapper=wrapper), cwd=REPO, env=env, stdout=log, stderr=log)

        try:
            if mode == "run":
                start("station run", ["run", "--data-dir", str(data)])
            else:
                start("station recorder", ["recorder", "--data-dir", str(data)])
                deadline = time.monotonic() + 30
                while not (data / "capture.sock").exists():
                    if time.monotonic() > deadline:
                        raise SystemExit("the recorder did not open its socket: see " + str(tmp / "station recorder.log"))
                    time.sleep(0.1)
                start("station capture", ["capture", "--data-dir", str(data)])
            if not softphone:
                pa.stop_keepalives()
            speech = SpeechLoad(pa, tmp).start()
            load = InputLoad(x, wins, profile).start()
            time.sleep(5.0)
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited with {p.returncode}: see {tmp / (name + '.log')}")
            t_since = time.monotonic_ns()
            w0 = time.monotonic()
            c0 = {n: cpu_ticks(p.pid) for n, p in procs.items()}
            th0 = {n: thread_ticks(p.pid) for n, p in procs.items()}
            rss: dict[str, list[tuple[float, float]]] = {n: [] for n in procs}
            next_rss = min(60.0, duration)
            while (elapsed := time.monotonic() - w0) < duration:
                time.sleep(min(1.0, duration - elapsed))
                if time.monotonic() - w0 >= next_rss:
                    for n, p in procs.items():
                        rss[n].append((time.monotonic() - w0, rss_mb(p.pid)))
                    next_rss += rss_every
            wall = time.monotonic() - w0
            t_until = time.monotonic_ns()
            c1 = {n: cpu_ticks(p.pid) for n, p in procs.items()}
            th1 = {n: thread_ticks(p.pid) for n, p in procs.items()}
            for n, p in procs.items():
                rss[n].append((wall, rss_mb(p.pid)))
            load.stop()
            speech.stop()
        finally:
            for p in reversed(list(procs.values())):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            for log in logs:
                log.close()
        counts, speech_delays, late = captured(data, t_since, t_until)
    result = {"profile": profile, "mode": mode, "softphone": softphone, "audio_path": audio_path, "wall_s": wall, "captured": counts, "processes": {},
              "late_frames": late,
              "speech_delay_ms": [float(np.percentile(speech_delays, q)) / 1e6 if len(speech_delays) else float("nan")
                                  for q in (50, 99, 100)],
              "keys_sent": sum(1 for t in load.key_t0 if t_since <= t < t_until),
              "focus_sent": sum(1 for t, _ in load.focus_t0 if t_since <= t < t_until)}
    for n in procs:
        threads = []
        for tid, (tname, run_ns, slices) in th1[n].items():
            _, run0, slices0 = th0[n].get(tid, (tname, 0, 0))
            if run_ns > run0:
                threads.append((tname, 100.0 * (run_ns - run0) / 1e9 / wall, (slices - slices0) / wall))
        threads.sort(key=lambda t: -t[1])
        result["processes"][n] = {"cpu_pct": 100.0 * (c1[n] - c0[n]) / TICK / wall,
                                  "threads": threads, "rss_mb": rss[n]}
    return result


def report(r: dict) -> None:
    total = sum(p["cpu_pct"] for p in r["processes"].values())
    c = r["captured"]
    peer = "softphone recording at 10 ms" if r["softphone"] else "agent the only recorder"
    print(f"== {r['profile']} profile, {r['mode']}, {peer}, {r['audio_path']} audio path: {r['wall_s']:.0f} s")
    for name, p in r["processes"].items():
        busiest = ", ".join(f"{t} {pct:.2f} ({runs:.0f}/s)" for t, pct, runs in p["threads"][:8])
        first, last = p["rss_mb"][0], p["rss_mb"][-1]
        print(f"  {name:17s} CPU {p['cpu_pct']:.2f} % of one core   RSS {first[1]:.1f} MB at {first[0]:.0f} s, "
              f"{last[1]:.1f} MB at {last[0]:.0f} s ({last[1] - first[1]:+.1f} MB)")
        print(f"  {'':17s} threads (% of one core, times run per s): {busiest}")
    print(f"  agent total       CPU {total:.2f} % of one core")
    print(f"  captured          speech frames {c.get('speech', 0) / r['wall_s']:.1f}/s (100/s expected), "
          f"key events {c.get('key', 0)} for {r['keys_sent']} keys sent (press + release), "
          f"focus changes {c.get('focus', 0)} for {r['focus_sent']} sent, mouse bins {c.get('mouse', 0)}")
    p50, p99, worst = r["speech_delay_ms"]
    print(f"  speech delay      frame end -> journaled: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms; "
          f"events behind the watermark (any stream): {r['late_frames']}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=["office", "stress", "both"], default="both")
    ap.add_argument("--mode", choices=["run", "split", "both"], default="both")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per run")
    ap.add_argument("--rss-every", type=float, default=60.0, help="RSS sample interval (s)")
    ap.add_argument("--wrap", help="run this Python script with the station arguments instead of "
                                   "'python -m station' (e.g. a tracemalloc wrapper)")
    ap.add_argument("--softphone", choices=["on", "off", "both"], default="on",
                    help="on: a 10 ms recorder also holds both devices, as a softphone in a call "
                         "(the harness's keep-alive); off: the agent is the only recorder")
    ap.add_argument("--block-ms", type=int, help="audio.block_ms for the agent (default: the config's)")
    ap.add_argument("--audio-path", choices=["old", "native", "both"], default="both",
                    help="old: PortAudio + ALSA pulse plugin; native: the sound server's names (libpulse)")
    a = ap.parse_args()
    for profile in (["office", "stress"] if a.profile == "both" else [a.profile]):
        for softphone in ([True, False] if a.softphone == "both" else [a.softphone == "on"]):
            for mode in (["run", "split"] if a.mode == "both" else [a.mode]):
                for path in (["old", "native"] if a.audio_path == "both" else [a.audio_path]):
                    report(run(profile, mode, a.duration, a.rss_every, softphone, a.wrap, a.block_ms, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
