"""Tamper evidence (issue 7): the candidate is logged in at the station and may try to read, edit or
stop what watches them.

One exam PC as `station install` lays it out (in a temporary root): the recorder runs as the
`station` account, the capture as `station-capture`, the candidate is the test account
`candidate` (in no station group); a console follows the station over CURVE. (Forgery through the
hand-over socket: tests/test_forgery.py.)

- a process of the candidate cannot read the keys, the journal or the status file, nor write
  to the journal or its directory;
- killing (SIGKILL) or stopping (SIGSTOP) the capture raises an alert at the console within 2 s,
  and both gaps are in the report;
- a journal edited afterwards (as root, with sqlite3) fails the report's integrity check;
- events injected through XTEST (xdotool) reach the journal flagged ``injected``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from station import config
from station.recorder.journal import Journal, list_sessions
from tests.accounts import CANDIDATE, CAPTURE, STATION, ExamPC, as_user, children, stop
from tests.support import REPO, console_config, console_station, free_port, require, station_cmd, wait_for

S = 1_000_000_000


PROBE = r"""
import json, os, sqlite3, sys
data = sys.argv[1]
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "ALLOWED"
    except (OSError, sqlite3.Error) as e:
        res[name] = "denied: " + type(e).__name__
sess = os.path.join(data, "sessions")
journals = sys.argv[2:]
attempt("list data dir", lambda: os.listdir(data))
attempt("list sessions", lambda: os.listdir(sess))
attempt("read station secret key", lambda: open(os.path.join(data, "keys", "station.key_secret"), "rb").read())
attempt("read status", lambda: open(os.path.join(data, "status.json"), "rb").read())
attempt("create file in sessions", lambda: open(os.path.join(sess, "x.journal"), "wb").close())
attempt("add authorized key", lambda: open(os.path.join(data, "keys", "authorized", "me.key"), "wb").close())
for j in journals:
    attempt("read journal", lambda: open(j, "rb").read(16))
    attempt("write journal", lambda: open(j, "r+b").close())
    attempt("sqlite read journal", lambda: sqlite3.connect(f"file:{j}?mode=ro", uri=True).execute("select count(*) from messages").fetchone())
    attempt("unlink journal", lambda: os.unlink(j))
print(json.dumps(res))
"""


@pytest.mark.timeout(150)
@pytest.mark.slow
def test_candidate_cannot_touch_the_journal_and_capture_stops_are_alerted(tmp_path, request):
    from station.console.follower import Console
    from station.recorder.report import build_report

    procs: list[subprocess.Popen] = []
    console = None
    pc = ExamPC(request)
    try:
        data = pc.data
        from station import keys
        keys.generate(tmp_path / "ck", "console")           # the assessor's key, not on the PC
        pc.authorize(tmp_path / "ck" / "console.key")
        pub, req = free_port(), free_port()
        cfg_args = pc.site_config(f'[publisher]\npub_bind = "tcp://127.0.0.1:{pub}"\nreq_bind = "tcp://127.0.0.1:{req}"\n',
                                  mode="practice")
        rec = subprocess.Popen(as_user(STATION, *cfg_args, "recorder"), stdout=open(tmp_path / "rec.log", "wb"),
                               stderr=subprocess.STDOUT, cwd="/")
        procs.append(rec)
        wait_for(lambda: pc.socket.exists(), 30, "the capture socket", 0.1)

        def start_capture(name):
            p = subprocess.Popen(as_user(CAPTURE, *cfg_args, "capture", "--sources", "scenario"),
                                 stdout=open(tmp_path / f"{name}.log", "wb"), stderr=subprocess.STDOUT, cwd="/")
            procs.append(p)
            return p
        cap = start_capture("cap1")
        ccfg_path = tmp_path / "console.toml"
        console_config(ccfg_path, data_dir=tmp_path / "console", store=tmp_path / "console.sqlite",
                       secret_key_file=tmp_path / "ck" / "console.key_secret",
                       stations=[console_station("exam-07", pub, req, data / "keys" / "station.key")])
        console = Console(config.load([ccfg_path], system=False))
        console.start()
        seen: list = []

        def alert(typ, after):
            for t, m in seen:
                if m.kind == "alert" and t >= after:
                    b = msgpack.unpackb(m.body) if isinstance(m.body, (bytes, bytearray)) else m.body
                    if b.get("type") == typ and b.get("source") == "capture":
                        return t
            return None

        def pump(pred, timeout, what):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                for m in console.poll(20):
                    seen.append((time.monotonic_ns(), m))
                v = pred()
                if v:
                    return v
            raise AssertionError(f"timed out waiting for {what}; log: "
                                 + (tmp_path / "rec.log").read_text()[-1500:])

        pump(lambda: sum(1 for _, m in seen if m.kind == "summary") >= 4, 60, "summaries at the console")
        # the capture's interpreter may take seconds to start on a busy machine: only a link that
        # is up can be lost (before its first HELLO the console has "capture not connected")
        pump(lambda: alert("source_back", 0), 60, "the capture's link to the recorder")
        # 1. the candidate's processes cannot read or change what the recorder keeps
        journals = wait_for(lambda: [str(i.path) for i in list_sessions(data)], 20, "the session's journal")
        r = subprocess.run(as_user(CANDIDATE, "-c", PROBE, str(data), *journals), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        probe = json.loads(r.stdout)
        print("\ncandidate probe:", probe)
        assert probe and all(v.startswith("denied") for v in probe.values()), probe
        # ... while the capture (its own account) hands events over
        assert sum(1 for _, m in seen if m.kind == "health") >= 1

        # 2. kill the capture: an alert at the console within 2 s
        kids = children(cap.pid)           # runuser -> the capture account's interpreter
        assert kids, "the capture runs under runuser"
        killed = time.monotonic_ns()
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        t_alert = pump(lambda: alert("source_lost", killed), 5, "the capture-lost alert (kill)")
        kill_delay = (t_alert - killed) / S
        cap = start_capture("cap2")
        back = time.monotonic_ns()
        pump(lambda: alert("source_back", back), 30, "the capture to come back")
        time.sleep(1.0)

        # 3. stop (freeze) the capture: the same within 2 s
        pids = children(cap.pid)
        stopped = time.monotonic_ns()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        t_alert = pump(lambda: alert("source_lost", stopped), 5, "the capture-lost alert (stop)")
        stop_delay = (t_alert - stopped) / S
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        os.kill(cap.pid, signal.SIGCONT)       # runuser stops itself when its child stops
        pump(lambda: alert("source_back", stopped), 10, "the capture to resume")
        print(f"capture killed: alert at the console after {kill_delay:.2f} s; stopped: {stop_delay:.2f} s")
        assert kill_delay <= 2.0 and stop_delay <= 2.0
    finally:
        if console is not None:
            console.stop()
        stop(procs)

    (info,) = list_sessions(data)
    st = os.stat(info.path)
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (pwd.getpwnam("station").pw_uid, "0o600")
    with Journal.open(info.path) as j:
        rep = build_report(j)
    assert rep["integrity"]["ok"], rep["integrity"]
    gaps = [g for g in rep["data_gaps"] if g["source"] == "capture"]
    # the session's start until the first HELLO, the kill, the freeze (and the capture's stop
    # before the recorder's at the end of the test)
    assert len(gaps) >= 3 and gaps[0]["start_ns"] <= rep["session"]["start_ns"], rep["data_gaps"]
    assert all(g["duration_ms"] >= 1000 for g in gaps[1:3]), rep["data_gaps"]

    # 4. an edit of the journal file (as root, bypassing the recorder) is detected by the report
    for sql in ("UPDATE messages SET body = body || x'00' WHERE seq = (SELECT max(seq) / 2 FROM messages)",
                "UPDATE blocks SET n_events = n_events + 1 WHERE idx = 3",
                "DELETE FROM messages WHERE seq = (SELECT max(seq) FROM messages)"):
        copy = tmp_path / "edited.journal"
        shutil.copy(info.path, copy)
        wal = Path(str(info.path) + "-wal")    # a recorder that did not close (killed) leaves its
        if wal.exists():                       # last transactions, even the schema, in the WAL
            shutil.copy(wal, str(copy) + "-wal")
        else:
            Path(str(copy) + "-wal").unlink(missing_ok=True)
        con = sqlite3.connect(copy)
        con.execute(sql)
        con.commit()
        con.close()
        with Journal.open(copy) as j:
            rep = build_report(j)
        assert not rep["integrity"]["ok"] and rep["integrity"]["journal_problems"], sql
        r = subprocess.run(station_cmd("--no-system-config", "report", str(copy), "--out", str(tmp_path / "rep")),
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 1 and "PROBLEMS" in r.stdout, r.stdout + r.stderr


@pytest.mark.timeout(120)
def test_xtest_injected_keys_reach_the_journal_flagged(tmp_path):
    """xdotool (XTEST) keys typed while the real capture runs in its own process, through the
    hand-over, into the recorder's journal: the key stream's ``injected`` column is set, the
    XTEST devices are journaled without evidence, and the assessors get the injected_input
    alert (XTEST is off the allow-list, as on an exam PC)."""
    require("Xvfb", "openbox", "xdotool")
    from tests.x11_harness import X11Session
    data = tmp_path / "data"
    cfgp = tmp_path / "station.toml"
    cfgp.write_text('[station]\nid = "xtest-01"\n[publisher]\nenabled = false\n')
    procs = []
    with X11Session() as x:
        env = dict(x.env, STATION_INPUT_BACKEND=os.environ.get("STATION_INPUT_BACKEND", "xi2"))
        try:
            rec = subprocess.Popen(station_cmd("--no-system-config", "--config", str(cfgp), "recorder", "--data-dir", str(data)),
                                   stdout=open(tmp_path / "rec.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO)
            procs.append(rec)
            wait_for(lambda: (data / "capture.sock").exists(), 30, "the socket", 0.1)
            cap = subprocess.Popen(station_cmd("--no-system-config", "--config", str(cfgp), "capture", "--data-dir", str(data)),
                                   stdout=open(tmp_path / "cap.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO, env=env)
            procs.append(cap)
            win = x.open_window("crm-app", "Customer 1")
            x.activate(win)

            def keys():
                infos = [i for i in list_sessions(data) if not i.problem]   # not one being created
                if not infos:
                    return None
                with Journal.open(infos[-1].path) as j:
                    cols = [b.streams["key"] for b in j.iter_batches() if "key" in b.streams]
                return cols or None
            def input_ok():
                infos = [i for i in list_sessions(data) if not i.problem]   # not one being created
                if not infos:
                    return False
                with Journal.open(infos[-1].path) as j:
                    return any(src == "input" and state == "ok" for b in j.iter_batches() if "health" in b.streams
                               for src, state in zip(b.streams["health"]["source"], b.streams["health"]["state"]))
            wait_for(input_ok, 30, "the capture's input source to report ok in the journal", 0.2)
            x.xdotool("type", "--delay", "20", "hello")
            # all ten events (5 presses, 5 releases) journaled
            cols = wait_for(lambda: (c := keys()) and sum(len(k["down"]) for k in c) >= 10 and c, 20,
                            "the typed keys in the journal", 0.2)

            def alerts():
                with Journal.open(list_sessions(data)[-1].path) as j:
                    return [msgpack.unpackb(bytes(m.body)) for m in j.iter_messages(0) if m.kind == "alert"]
            got = wait_for(lambda: (lambda a: a if "injected_input" in {x["type"] for x in a} else None)(alerts()),
                           10, "the injected_input alert", 0.2)
            with Journal.open(list_sessions(data)[-1].path) as j:
                devices = [d for b in j.iter_batches() if "device" in b.streams for d in b.events("device")]
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(20)
    injected = np.concatenate([np.asarray(c["injected"]) for c in cols])
    down = np.concatenate([np.asarray(c["down"]) for c in cols])
    print(f"\nXTEST keys in the journal: {int(down.sum())} presses, {int(injected.sum())} of {len(injected)} events flagged injected")
    assert down.sum() >= 5
    assert injected.all(), "XTEST-injected keys must be flagged in the journal"
    xtest = [d for d in devices if d.name == "Virtual core XTEST keyboard"]
    assert xtest and not xtest[0].evidence and xtest[0].virtual, "the XTEST device is journaled without evidence"
    assert next(a for a in got if a["type"] == "injected_input")["keys"] >= 5
