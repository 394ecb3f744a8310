"""The demo: the production pipeline (recorder: journal, engine, publisher) on the built-in
scenario source, with no headset and no display.

``run_demo`` plays a simulated exam into a ``Recorder``. Paced (``speed`` x real time, a
``VirtualClock``) or ``fast`` (as fast as the machine goes, a stepped clock: deterministic). It
prints a live line per second of wall time, ends the session, writes the report and returns its
paths together with the scenario's ground truth for comparison.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from station.capture.base import SourcesWatermark
from station.capture.process import SIMULATED_DETAIL
from station.capture.scenario import ScenarioSource, VirtualClock
from station.clock import monotonic_ns
from station.config import Config
from station.eventqueue import EventQueue
from station.recorder.loop import Recorder
from station.recorder.report import build_report
from station.rendering import write_report
from station.scenario import Scenario

NS_PER_S = 1_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_config(cfg: Config, station_id: str = "demo-01", data_dir: Path | None = None,
                stream: bool = True) -> Config:
    """The demo's settings on top of cfg: station id, the demo typing reference, data dir, and
    station -> console streaming over loopback (plaintext, allowed on loopback only) on free ports."""
    station = {"id": station_id, "mode": "practice"}   # a demo is simulated, never an exam
    if data_dir is not None:
        station["data_dir"] = str(data_dir)
    typing = {} if cfg.typing.reference_file else {"reference_file": "typing/demo-reference.txt"}
    if not stream:
        return cfg.replace(station=station, typing=typing, publisher={"enabled": False})
    pub, req = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    console = {"allow_plaintext_loopback": True, "assessor_id": "demo-assessor",
               "station": [{"id": station_id, "pub_endpoint": pub, "req_endpoint": req, "public_key": ""}]}
    if data_dir is not None:
        console["store"] = str(Path(data_dir) / "console.sqlite")
    return cfg.replace(station=station, typing=typing, console=console,
                       publisher={"enabled": True, "allow_plaintext_loopback": True, "pub_bind": pub, "req_bind": req})


@dataclass
class DemoResult:
    session_id: str
    journal_path: Path
    report_json: Path
    report_html: Path
    truth: dict
    report: dict
    published: int                          # messages journaled and published (last seq)
    console_seqs: list[int] | None = None   # what the loopback console stored (None: no streaming)


class SteppedClock:
    """A clock that only moves when told: the fast demo's station time."""

    def __init__(self, start_ns: int):
        self.t = start_ns

    def now(self) -> int:
        return self.t


def live_line(summary: dict | None, t_rel_s: float, seq: int) -> str:
    """One terminal line: time, current contact, who is active, S1/S3 so far."""
    if not summary:
        return f"[{int(t_rel_s) // 60:02d}:{int(t_rel_s) % 60:02d}] waiting for data"
    lv, c, s = summary["live"], summary.get("contact"), summary["session"]
    mark = lambda b: "#" if b else "."  # noqa: E731
    contact = f"{c['kind']:<5} {c['duration_ms'] // 1000:>4d} s" if c else "no contact"
    share = lambda v: "  - " if v is None else f"{v:4.2f}"  # noqa: E731
    return (f"[{int(t_rel_s) // 60:02d}:{int(t_rel_s) % 60:02d}] {contact:<14} agent {mark(lv['agent_talking'])} "
            f"customer {mark(lv['customer_talking'])} typing {mark(lv['typing'])} mouse {mark(lv['mouse'])} "
            f"focus {lv['focus']:<11} dead air {lv['dead_air_ms'] / 1000:4.1f} s | contacts {sum(s['contacts'].values())} "
            f"S1 {share(s['s1_share'])} S3 {share(s['s3_share'])} | seq {seq}")


def run_demo(cfg: Config, *, seed: int = 1, duration_s: float = 600.0, speed: float = 1.0, fast: bool = False,
             data_dir: Path, out_dir: Path | None = None,
             print_line: Callable[[str], None] | None = print, stop: threading.Event | None = None) -> DemoResult:
    """Play one simulated exam through a recorder (and, when cfg.publisher.enabled, a ZeroMQ
    publisher with a console following it over loopback); returns journal, report, truth."""
    stop = stop or threading.Event()
    from station.recorder.process import publisher_factory as make_publisher
    publisher_factory = make_publisher(cfg)
    console = None
    start = monotonic_ns()
    scenario = Scenario(cfg, seed=seed, duration_s=duration_s, start_ns=start)
    end_ns = scenario.end_ns
    published = 0
    if fast:
        clock = SteppedClock(start)
        rec = Recorder(cfg, clock=clock.now, data_dir=data_dir, publisher_factory=publisher_factory, resume=False,
                       simulated=SIMULATED_DETAIL)
    else:
        vclock = VirtualClock(start, speed)
        source = ScenarioSource(scenario, vclock)
        queue = EventQueue()
        rec = Recorder(cfg, clock=vclock.now, data_dir=data_dir, publisher_factory=publisher_factory, resume=False,
                       queue=queue, watermark=SourcesWatermark([source], queue), simulated=SIMULATED_DETAIL)
    rec.open_session()
    if publisher_factory is not None:
        from station.console.follower import Console
        console = Console(cfg, deliver=True)
        console.start()
    latest: dict = {}

    def line(t_rel_s: float) -> str:
        if console is not None:   # show what the console received: the streaming path works
            for m in console.poll(0):
                if m.kind == "summary":
                    latest["summary"], latest["seq"] = m.data, m.seq
        summary = latest.get("summary", rec.last_summary)
        return live_line(summary, t_rel_s, latest.get("seq", rec.journal.last_seq()))

    last_print = time.monotonic()
    try:
        if fast:
            step = rec.ingest_ns
            while clock.t < end_ns + 2 * NS_PER_S and not stop.is_set():
                clock.t += step
                rec.queue.put_many(scenario.events_until(min(clock.t, end_ns)))
                published += len(rec.step())
                if print_line and time.monotonic() - last_print >= 1.0:
                    last_print = time.monotonic()
                    print_line(line((clock.t - start) / NS_PER_S))
        else:
            source.start(rec.queue)
            try:
                while not stop.is_set():
                    published += len(rec.step())
                    if print_line and time.monotonic() - last_print >= 1.0:
                        last_print = time.monotonic()
                        print_line(line((vclock.now() - start) / NS_PER_S))
                    if source.finished and vclock.now() >= end_ns + 2 * NS_PER_S:
                        break
                    stop.wait(rec.ingest_ns / 1e9 / max(speed, 1.0))
            finally:
                source.stop()
        session_id = rec.journal.header.session_id
        rec.end_session()
        path = rec.journal.path
        last_seq = rec.journal.last_seq()
        console_seqs = None
        if console is not None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                console_seqs = console.reader.seqs(cfg.station.id, session_id)
                if len(console_seqs) >= last_seq:
                    break
                time.sleep(0.1)
    finally:
        if console is not None:
            console.stop()
        rec.close()
    from station.recorder.journal import Journal
    with Journal.open(path) as j:
        rep = build_report(j)
    out = out_dir or (data_dir / "reports" / session_id)
    jp, hp = write_report(rep, out)
    return DemoResult(session_id, path, jp, hp, scenario.truth(), rep, last_seq, console_seqs)


def truth_table(res: DemoResult) -> str:
    """Ground truth (from the scenario's seed) beside what the station measured, per contact."""
    lines = ["contact  kind   talk agent s (truth/measured)  customer s   dead air   S3 agent share"]
    measured = res.report["contacts"]
    for k, t in enumerate(res.truth["contacts"], 1):
        m = min(measured, key=lambda c: abs(c["start_ns"] - t["start_ns"]) + (0 if c["kind"] == t["kind"] else 10 ** 15),
                default=None)
        if m is None:
            lines.append(f"{k:>7}  {t['kind']:<5}  not detected")
            continue
        if t["kind"] == "phone":
            lines.append(f"{k:>7}  {t['kind']:<5}  {t['agent_talk_ms'] / 1000:7.1f} / {m.get('agent_talk_ms', 0) / 1000:<7.1f}"
                         f"         {t['customer_talk_ms'] / 1000:5.1f} / {m.get('customer_talk_ms', 0) / 1000:<5.1f}"
                         f"  {t['dead_air_count']} / {m.get('dead_air_count')}      "
                         f"{t['s3_agent_share']:.3f} / {m.get('s3_agent_share') or 0:.3f}")
        else:
            lines.append(f"{k:>7}  {t['kind']:<5}  {(t['end_ns'] - t['start_ns']) / 1e9:7.1f} s / {m['duration_ms'] / 1000:.1f} s")
    return "\n".join(lines)


def main_demo(args, cfg: Config) -> int:  # pragma: no cover - exercised through the CLI tests
    res = run_demo(cfg, seed=args.seed, duration_s=args.duration, speed=args.speed, fast=args.fast,
                   data_dir=Path(args.data_dir), out_dir=Path(args.out) if args.out else None,
                   print_line=None if args.quiet else print)
    print(truth_table(res))
    ok = res.report["integrity"]["ok"]
    print(f"session {res.session_id}: {res.published} messages; journal {res.journal_path}")
    if res.console_seqs is not None:
        want = res.published
        got = res.console_seqs
        missing = len(set(range(1, want + 1)) - set(got))
        print(f"console over ZeroMQ (loopback): stored {len(got)} of {want} messages, {missing} missing, "
              f"{len(got) - len(set(got))} duplicated")
    print(f"integrity: {'ok' if ok else 'PROBLEMS: ' + '; '.join(res.report['integrity']['journal_problems'] + res.report['integrity']['replay_mismatches'])}")
    print(f"report: {res.report_html}")
    sys.stdout.flush()
    return 0 if ok else 1
