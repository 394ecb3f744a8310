"""The whole station pipeline: demo against its ground truth, exact replay, SIGKILL and resume,
the capture -> recorder hand-over with a stopped capture, and bad configuration."""

import os
import signal
import subprocess
import time

import msgpack
import pytest

from station import config
from station.demo import demo_config, run_demo
from station.recorder.journal import Journal, list_sessions
from station.recorder.replay import ENGINE_KINDS, replay
from tests.support import REPO, station_cmd, wait_for

S = 1_000_000_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = demo_config(config.load(system=False), "demo-01", root)
    return run_demo(cfg, seed=1, duration_s=600, fast=True, data_dir=root, print_line=None)


def within(measured, truth, rel=0.02, abs_=0.0):
    return abs(measured - truth) <= max(rel * abs(truth), abs_)


def test_demo_report_matches_ground_truth(demo):
    truth = demo.truth["contacts"]
    got = demo.report["contacts"]
    assert sum(1 for t in truth if t["kind"] == "phone") >= 2
    assert sum(1 for t in truth if t["kind"] == "chat") >= 1
    assert len(got) == len(truth)
    for t in truth:
        m = min(got, key=lambda c: abs(c["start_ns"] - t["start_ns"]))
        assert m["kind"] == t["kind"]
        assert within(m["duration_ms"] * 1e6, t["end_ns"] - t["start_ns"])
        if t["kind"] != "phone":
            continue
        assert within(m["agent_talk_ms"], t["agent_talk_ms"])
        assert within(m["customer_talk_ms"], t["customer_talk_ms"])
        assert m["dead_air_count"] == t["dead_air_count"]
        assert m["overtalk_count"] == t["overtalk_count"]
        assert within(m["s3_agent_share"], t["s3_agent_share"], abs_=0.02)
        assert within(m["s3_customer_share"], t["s3_customer_share"], abs_=0.02)
        assert within(m["s1_share"], t["s1_share"], abs_=0.02)
    d5 = demo.report["competences"]["D5"]["figures"]
    assert d5["estimate"] is False
    assert within(d5["accuracy"], demo.truth["typing_task"]["accuracy"], abs_=0.005)
    assert demo.report["integrity"]["ok"]
    assert demo.report_html.exists() and "<svg" in demo.report_html.read_text()


def test_demo_streams_every_message_to_its_loopback_console(demo):
    assert demo.console_seqs == list(range(1, demo.published + 1))


def test_live_summaries_equal_replayed_ones_exactly(demo):
    with Journal.open(demo.journal_path) as j:
        journaled = sum(1 for _ in j.iter_messages(kinds=ENGINE_KINDS))
        summaries = sum(1 for _ in j.iter_messages(kinds=("summary",)))
        res = replay(j, exact=True)
    assert summaries >= 600 / 0.5 * 0.95
    assert res.mismatches == []
    assert res.compared == journaled


@pytest.mark.parametrize("speed,duration_s", [(30, 300), (100, 600), (200, 600)])
def test_paced_demo_passes_its_exact_integrity_check(tmp_path, speed, duration_s):
    """Paced by a virtual clock, the scenario runs behind it whenever the machine is busy; the
    watermark waits for it, so no event is late and the exact replay reproduces every message
    (at 60x and 100x the live contacts used to differ from the replayed ones)."""
    cfg = demo_config(config.load(system=False), "demo-01", tmp_path, stream=False)
    res = run_demo(cfg, seed=1, duration_s=duration_s, speed=speed, data_dir=tmp_path, print_line=None)
    integ = res.report["integrity"]
    assert integ["ok"] and integ["exact"], integ
    assert res.report["late_events"]["count"] == 0
    assert integ["messages_compared"] >= 20   # summaries, contacts, evidence ... all compared
    assert any(c["kind"] == "phone" for c in res.report["contacts"])


@pytest.mark.parametrize("speed", ["inf", "nan", "0", "-3", "1e9", "fast"])
def test_demo_refuses_a_bad_speed_with_one_clear_line(speed):
    p = subprocess.run(station_cmd("--no-system-config", "demo", "--speed", speed, "--no-stream"),
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 2
    assert "argument --speed" in p.stderr and "Traceback" not in p.stderr + p.stdout
    assert p.stderr.strip().splitlines()[-1].startswith("station demo: error: argument --speed")


def test_replay_detects_a_changed_figure(demo, tmp_path):
    """Replay must catch a journal whose published figures differ from what the engine computes."""
    import shutil
    import sqlite3
    copy = tmp_path / "copy.journal"
    shutil.copy(demo.journal_path, copy)
    con = sqlite3.connect(copy)
    seq, body = con.execute("SELECT seq, body FROM messages WHERE kind='contact' ORDER BY seq LIMIT 1").fetchone()
    d = msgpack.unpackb(body)
    d["agent_talk_ms"] += 1000
    con.execute("UPDATE messages SET body=? WHERE seq=?", (msgpack.packb(d), seq))
    con.commit()
    con.close()
    with Journal.open(copy) as j:
        assert j.verify() != []            # the hash chain sees the edit
        assert replay(j, exact=True).mismatches != []   # and replay sees the figure


def _cfg_file(tmp_path, text=""):
    p = tmp_path / "station.toml"
    p.write_text('[station]\nid = "crash-01"\n[publisher]\nenabled = false\n' + text)
    return p


def _start(args, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen(station_cmd("--no-system-config", *args), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def _blocks(data):
    infos = list_sessions(data)
    return infos[-1].blocks if infos else 0


def test_sigkill_mid_session_then_resume(tmp_path):
    data = tmp_path / "data"
    cfgp = _cfg_file(tmp_path)
    args = ["--config", str(cfgp), "run", "--sources", "scenario", "--speed", "1", "--data-dir", str(data)]
    p = _start(args, tmp_path, "run1")
    try:
        wait_for(lambda: _blocks(data) >= 10, 60, "5 s of journal")
        time.sleep(0.3)
        killed_at = time.monotonic_ns()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    (info,) = list_sessions(data)
    with Journal.open(info.path) as j:
        assert j.verify() == []
        batches = list(j.iter_batches())
        seq1 = j.last_seq()
        frames = [b.streams["speech"]["t_ns"] for b in batches if "speech" in b.streams]
    last = batches[-1].t_ns
    # at most 1 s of events lost: the last committed batch is less than 1 s older than the kill
    assert killed_at - last <= 1 * S, (killed_at - last) / S
    # and what was committed is complete: the agent's speech frames have no hole
    import numpy as np
    t = np.unique(np.concatenate(frames))
    assert np.all(np.diff(t[t > t[0]]) <= 20_000_000 * 2)   # two channels share times; no missing frame

    p = _start(args, tmp_path, "run2")
    try:
        wait_for(lambda: _blocks(data) >= len(batches) + 6, 60, "the restarted agent to journal")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    infos = list_sessions(data)
    assert len(infos) == 1, "the restarted agent must continue the same session"
    with Journal.open(infos[0].path) as j:
        assert j.verify() == []
        seqs = [m.seq for m in j.iter_messages()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) > seq1
        health = [m for m in j.iter_messages(kinds=("health",)) if m.seq > seq1]
        assert health, "the resumed agent publishes health again"
        assert replay(j, exact=True).mismatches == []


def test_stopped_capture_is_a_gap_within_two_seconds(tmp_path):
    data = tmp_path / "data"
    cfgp = _cfg_file(tmp_path)
    rec = _start(["--config", str(cfgp), "recorder", "--data-dir", str(data)], tmp_path, "recorder")
    cap = None
    try:
        wait_for(lambda: (data / "capture.sock").exists(), 30, "the hand-over socket")
        cap = _start(["--config", str(cfgp), "capture", "--sources", "scenario", "--data-dir", str(data)], tmp_path, "capture")

        def capture_events():
            infos = [i for i in list_sessions(data) if not i.problem]   # not one being created
            if not infos:
                return 0
            with Journal.open(infos[-1].path) as j:
                return sum(b.count("speech") for b in j.iter_batches())
        wait_for(lambda: capture_events() > 200, 60, "capture events in the journal")
        cap.send_signal(signal.SIGSTOP)      # frozen: no beats, no batches
        stopped_at = time.monotonic_ns()

        def alert():
            with Journal.open(list_sessions(data)[-1].path) as j:
                for m in j.iter_messages(kinds=("alert",)):
                    body = msgpack.unpackb(m.body)
                    if (body.get("type") == "source_lost" and body.get("source") == "capture"
                            and "no data" in body.get("detail", "")):     # not the start's "not connected"
                        return m
            return None
        wait_for(alert, 10, "the capture-lost alert")
        published_at = time.monotonic_ns()
        assert published_at - stopped_at <= 2.2 * S, (published_at - stopped_at) / S
        cap.send_signal(signal.SIGCONT)

        def back():
            with Journal.open(list_sessions(data)[-1].path) as j:
                return sum(msgpack.unpackb(m.body).get("type") == "source_back"
                           for m in j.iter_messages(kinds=("alert",))) >= 2    # the HELLO, then the thaw
        wait_for(back, 10, "the capture to come back")
    finally:
        for p in (cap, rec):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                p.wait(20)
    from station.recorder.report import build_report
    with Journal.open(list_sessions(data)[-1].path) as j:
        rep = build_report(j)
    gaps = [g for g in rep["data_gaps"] if g["source"] == "capture"]
    # from the session's start to the capture's HELLO, the freeze, and (the capture is stopped
    # first) from the capture's exit to the recorder's
    assert len(gaps) == 3, gaps
    assert gaps[0]["start_ns"] <= rep["session"]["start_ns"] and gaps[1]["duration_ms"] >= 1000


BAD_CONFIGS = [
    ("[station]\nid = 5\n", "station.id"),
    ("[station]\nretention_days = 0\n", "station.retention_days"),
    ("[audio]\nframe_ms = 25\n", "audio.frame_ms"),
    ("[audio]\nmystery = 1\n", "unknown key audio.mystery"),
    ("[nosuch]\nx = 1\n", "unknown section [nosuch]"),
    ("[[categories.rule]]\ncategory = \"crm\"\nclass = \"([\"\ntitle = \"\"\nprocess = \"\"\n", "regular expression"),
    ("[[categories.rule]]\ncategory = \"sales\"\nclass = \"\"\ntitle = \"\"\nprocess = \"\"\n", "categories.rule[0].category"),
    ("[station\nid = 'x'\n", "not valid TOML"),
    ("[activity]\ndead_air_ms = nan\n", "activity.dead_air_ms"),
]


@pytest.mark.parametrize("text,expected", BAD_CONFIGS)
def test_bad_config_gives_one_clear_line_and_exit_2(tmp_path, text, expected):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = subprocess.run(station_cmd("--no-system-config", "--config", str(p), "replay", "x"),
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert expected in r.stderr and str(p) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_binary_config_file_is_refused_cleanly(tmp_path):
    p = tmp_path / "bin.toml"
    p.write_bytes(os.urandom(256) + b"\xff\xfe")
    r = subprocess.run(station_cmd("--no-system-config", "--config", str(p), "replay", "x"),
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(p) in r.stderr
