"""Nothing lost, nothing doubled: one station session lived through everything that goes wrong.

Separate processes over real loopback sockets: the test station (tests/streaming_station.py,
real Journal + Publisher, 20 summaries/s + 1 Hz health), console A (`station console --plain`,
its own process, reaching the station through socat relays that the test cuts), and console B
(the console library in this process). Timeline (s):

   0  station starts; B follows from the start
  30  A starts (late join)
  36  A killed with SIGKILL, restarted at 37
  40  station frozen with SIGSTOP for 10 s, SIGCONT at 50
  52  A's link cut (socat relays killed) for 3 s
  57  station restarted (same session resumed from its journal)
  59  B sends a mark (C3 counter): journaled on the station, seen by A and B
  61  station stops journaling (session complete); both consoles must end with exactly the journal
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time

import msgpack
import pytest

from station import config
from station.console.follower import Console
from station.console.store import ConsoleStore
from tests.streaming_station import Rig, journal_messages, store_messages
from tests.support import SocatRelay
from tests.support import require, station_cmd

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
LATE_JOIN_S = 30.0
LINE = re.compile(r"^(\S+) (\S+) +(\d+) (\S+)")


def at(t0: float, second: float) -> None:
    delay = t0 + second - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def plain_lines(path):
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


def test_late_join_kill_restart_freeze_cut_link_two_consoles_and_a_mark(tmp_path):
    require("socat")
    rig = Rig(tmp_path)
    relay = SocatRelay([rig.pub_port, rig.req_port])
    fast = "resync_ms = 1000"
    cfg_a = rig.console_cfg("console-a", pub_port=relay.ports[0], req_port=relay.ports[1], extra=fast)
    cfg_b = config.load([rig.console_cfg("console-b", extra=fast)], system=False)
    station, ready = rig.start_station(rate=20)
    t0 = time.monotonic()
    session, jpath = ready["session"], ready["journal"]
    b = Console(cfg_b)
    b.start()
    relay.start()
    a_out = [tmp_path / "a1.out", tmp_path / "a2.out"]
    a_proc = None
    seen_b: list = []
    procs = [station]

    def run_a(out):
        p = subprocess.Popen(station_cmd("--config", str(cfg_a), "--no-system-config", "console", "--plain"),
                             stdout=open(out, "w"), stderr=open(str(out) + ".err", "w"))
        procs.append(p)
        return p

    def drain_b(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seen_b.extend(b.poll(100))

    try:
        drain_b(LATE_JOIN_S - 0.5)
        at(t0, LATE_JOIN_S)
        a_proc = run_a(a_out[0])
        drain_b(6)
        at(t0, 36)
        os.kill(a_proc.pid, signal.SIGKILL)  # console kill -9
        a_proc.wait()
        db = sqlite3.connect(f"file:{tmp_path / 'console-a.sqlite'}?mode=ro", uri=True)
        saved = db.execute("SELECT next_seq FROM sessions WHERE session=?", (session,)).fetchone()[0]
        db.close()
        # progress is saved about once a second; what was stored after it counts too
        ro = ConsoleStore(tmp_path / "console-a.sqlite", readonly=True)
        next_at_kill = ro.resume_seq("st-1", session, saved) if saved else saved
        ro.close()
        assert next_at_kill and next_at_kill > 400, "A had not caught up after its late join"
        drain_b(0.8)
        at(t0, 37)
        a_proc = run_a(a_out[1])
        drain_b(2.8)
        at(t0, 40)
        assert b.state("st-1")["state"] == "connected"
        station.send_signal(signal.SIGSTOP)
        drain_b(4)
        stale_seen = b.state("st-1")["state"]
        drain_b(5.8)
        at(t0, 50)
        station.send_signal(signal.SIGCONT)
        drain_b(1.8)
        at(t0, 52)
        relay.cut()
        drain_b(2.8)
        at(t0, 55)
        relay.start()
        drain_b(1.8)
        at(t0, 57)
        station.terminate()
        assert station.wait(15) == 0
        station, ready2 = rig.start_station(rate=20, resume=jpath)
        procs.append(station)
        assert ready2["session"] == session
        drain_b(1.8)
        at(t0, 59)
        ack = b.send_command("st-1", {"type": "mark", "competence": "C3", "kind": "counter",
                                      "text": "third objection"}, timeout=10)
        drain_b(1.8)
        at(t0, 61)
        station.send_signal(signal.SIGUSR1)  # session complete
        time.sleep(0.5)
        expected = journal_messages(jpath)
        last = expected[-1][0]

        def caught_up(store):
            try:
                got = store_messages(store, "st-1", session)
            except Exception:
                return False
            return got and got[-1][0] >= last and len(got) >= len(expected)

        end = time.monotonic() + 30
        while time.monotonic() < end and not (caught_up(tmp_path / "console-a.sqlite")
                                              and caught_up(tmp_path / "console-b.sqlite")):
            drain_b(0.2)
        drain_b(0.5)
        got_a = store_messages(tmp_path / "console-a.sqlite", "st-1", session)
        got_b = store_messages(tmp_path / "console-b.sqlite", "st-1", session)
        st_b = b.state("st-1")
        gaps_b = b.reader.gaps()
    finally:
        relay.cut()
        b.stop()
        for p in procs[::-1]:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    seqs = [e[0] for e in expected]
    assert seqs == list(range(1, len(seqs) + 1)), "the journal itself has holes"
    assert len(expected) > 1000
    # 0 missing, 0 duplicated, byte-identical, in both consoles' stores
    assert [g[0] for g in got_a] == seqs, f"A: missing {sorted(set(seqs) - {g[0] for g in got_a})[:20]}"
    assert got_a == expected
    assert got_b == expected
    assert gaps_b == []
    # B's application saw every message exactly once, in order
    assert [m.seq for m in seen_b if m.session == session] == seqs
    assert stale_seen == "stale", "B did not notice the frozen station"
    assert st_b["state"] == "connected" and st_b["session"] == session
    assert abs(st_b["offset_ns"]) < 5_000_000 and 0 < st_b["rtt_ns"] < 50_000_000
    # the mark: journaled on the station, stored by both consoles, delivered to B's application
    marks = [e for e in expected if e[1] == "mark"]
    assert len(marks) == 1 and marks[0][0] == ack["journaled_seq"]
    mark = msgpack.unpackb(marks[0][3])
    assert mark["competence"] == "C3" and mark["assessor_id"] == "console-b"
    assert mark["console_name"] == "console-b" and mark["text"] == "third objection"
    assert any(m.kind == "mark" and m.data["mark_id"] == mark["mark_id"] for m in seen_b)
    # A's text output: no message printed twice; the restarted A resumed where its store stopped
    run1, run2 = plain_lines(a_out[0]), plain_lines(a_out[1])
    s1, s2 = [x[2] for x in run1], [x[2] for x in run2]
    assert len(s1) == len(set(s1)) and len(s2) == len(set(s2)) and not set(s1) & set(s2)
    assert s1[0] == 1 and s2[0] == next_at_kill, (s1[:3], s2[:3], next_at_kill)
    text2 = a_out[1].read_text()
    assert "# st-1 stale" in text2
    counts = dict(kv.split("=") for kv in re.search(r"# st-1 counts (.*)", text2).group(1).split())
    print("console A (second run) counts:", counts, "console B:", st_b["counts"])
    assert int(counts["replayed"]) > 0 and int(counts["live"]) > 0  # the cut link was refilled
