"""Fault injection with real processes (issue 7): the station survives what an exam room throws at it.

- the recorder SIGKILLed mid-exam under the stress profile and restarted: journal intact, <= 1 s of
  events lost, sequence continues, the capture's buffered batches arrive after the restart;
- the journal's file system full (a 2 MB tmpfs): the agent keeps streaming to the console, raises
  an alert, and journals everything (same sequence numbers) once space returns;
- the console cut off from the station (socat relays killed): everything arrives after it returns;
- the wall clock stepped by an hour mid-exam: the metrics do not move (monotonic time only).

The stress profile (1000 Hz mouse in 10 ms bins, 20 keys/s, a focus change per second, two
speech channels of 20 ms frames) comes from a stress capture process, this file run as a script::

    python tests/test_faults.py stress-capture SOCKET STATION_ID

X server and PulseAudio restarts are in test_capture_restarts below (real Xvfb, real PulseAudio).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from station import config  # noqa: E402
from station.recorder.journal import Journal, list_sessions  # noqa: E402
from station.recorder.replay import replay  # noqa: E402
from tests.support import IN_CI, REPO, XTEST_INPUT_TOML, SocatRelay, require, station_cmd, wait_for  # noqa: E402

S = 1_000_000_000
MS = 1_000_000


# ----------------------------------------------------------------------------- stress capture
def stress_capture(socket_path: str, station_id: str, stop: threading.Event | None = None) -> None:
    """Generate the stress profile in real time (station clock = monotonic) and hand it to a
    recorder through the real CaptureClient (reconnects and buffers while the recorder is away)."""
    from station.capture.handover_client import CaptureClient
    from station.eventqueue import EventQueue
    from station.events import Channel, FocusChange, KeyClass, KeyEvent, MouseBin, SpeechFrame
    stop = stop or threading.Event()
    q = EventQueue()
    client = CaptureClient(Path(socket_path), q, station_id=station_id, heartbeat_ms=500, queue_max_batches=6000,
                           sources_status=lambda: {"stress": {"state": "ok"}})
    client.start()
    windows = [("crm-app", "crm"), ("kb-wiki", "knowledge"), ("chat-app", "chat")]
    t = time.monotonic_ns() // (20 * MS) * (20 * MS)
    focus_n = 0
    while not stop.is_set():
        now = time.monotonic_ns()
        evs = []
        while t + 20 * MS <= now:
            cyc = (t // S) % 8
            for ch, talking in ((Channel.AGENT, cyc < 3), (Channel.CUSTOMER, 4 <= cyc < 7)):
                evs.append(SpeechFrame(t, int(ch), 20 * MS, -200 if talking else -650, talking, talking))
            evs.append(MouseBin(t, 10, 25))
            evs.append(MouseBin(t + 10 * MS, 10, 25))
            if (t // (20 * MS)) % 5 < 2:            # 2 of every 5 ticks of 20 ms: 20 keys/s
                evs.append(KeyEvent(t, int(KeyClass.PRINTABLE), True))
                evs.append(KeyEvent(t + 8 * MS, int(KeyClass.PRINTABLE), False))
            if t % S == 0:
                wm, cat = windows[focus_n % 3]
                focus_n += 1
                evs.append(FocusChange(t, 100 + focus_n % 3, wm, f"window {focus_n % 3}", 0, "", cat))
            t += 20 * MS
        q.put_many(evs)
        stop.wait(0.02)
    client.stop()


# ----------------------------------------------------------------------------- helpers
def _start(args, log: Path, env=None, prefix=None):
    cmd = (prefix or []) + (station_cmd("--no-system-config", *args) if prefix is None else list(args))
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _stop(*procs, sig=signal.SIGTERM, timeout=20):
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        if p is not None:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _session(data: Path):
    infos = list_sessions(data)
    return infos[-1] if infos else None


def _messages(path):
    with Journal.open(path) as j:
        return [(m.seq, m.kind, m.t_ns, bytes(m.body)) for m in j.iter_messages(0)]


def _alerts(msgs):
    out = []
    for seq, kind, _, body in msgs:
        if kind == "alert":
            out.append((seq, msgpack.unpackb(body)))
    return out


# ----------------------------------------------------------------------------- SIGKILL
@pytest.mark.timeout(120)
def test_sigkill_recorder_under_stress_profile_then_restart(tmp_path):
    data = tmp_path / "data"
    cfgp = tmp_path / "station.toml"
    cfgp.write_text('[station]\nid = "stress-01"\n[publisher]\nenabled = false\n')
    rec_args = ["--config", str(cfgp), "recorder", "--data-dir", str(data)]
    rec = _start(rec_args, tmp_path / "rec1.log")
    cap = None
    try:
        wait_for(lambda: (data / "capture.sock").exists(), 30, "the hand-over socket")
        cap = subprocess.Popen([sys.executable, __file__, "stress-capture", str(data / "capture.sock"), "stress-01"],
                               stdout=open(tmp_path / "cap.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: (_session(data) or 0) and _session(data).blocks >= 12, 60, "6 s of journal")
        killed_at = time.monotonic_ns()
        rec.send_signal(signal.SIGKILL)
        rec.wait(10)
        info = _session(data)
        with Journal.open(info.path) as j:
            assert j.verify() == []
            batches = list(j.iter_batches())
            seq1 = j.last_seq()
        lost_s = (killed_at - batches[-1].t_ns) / S
        assert lost_s <= 1.0, f"{lost_s:.2f} s of events at risk at the kill"
        time.sleep(1.5)                                  # the capture buffers meanwhile
        rec = _start(rec_args, tmp_path / "rec2.log")
        wait_for(lambda: _session(data).blocks >= len(batches) + 10, 60, "the restarted recorder to journal")
        time.sleep(1.0)
    finally:
        _stop(cap)
        _stop(rec)
    infos = list_sessions(data)
    assert len(infos) == 1, "the restarted recorder continues the same session"
    with Journal.open(infos[0].path) as j:
        assert j.verify() == []
        seqs = [m.seq for m in j.iter_messages()]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > seq1
        bins = np.concatenate([b.streams["mouse"]["t_ns"] for b in j.iter_batches() if "mouse" in b.streams])
        keys = sum(b.count("key") for b in j.iter_batches())
        assert replay(j, exact=True).mismatches == []
    bins = np.unique(bins)
    hole = int(np.diff(bins).max())
    print(f"\nSIGKILL under stress: {lost_s:.2f} s at risk at the kill, largest hole in the 100 Hz mouse "
          f"bins {hole / MS:.0f} ms, {len(bins)} bins, {keys} key events, {len(seqs)} messages (seq 1..{seqs[-1]})")
    # the stress source writes a bin every 10 ms; what the killed recorder had not committed is lost
    assert hole <= 1 * S, hole / S
    span_s = (bins[-1] - bins[0]) / S
    assert len(bins) >= 0.9 * span_s * 100


# ----------------------------------------------------------------------------- streaming rigs
def _rig_station(tmp_path, extra: str):
    from tests.streaming_station import Rig
    rig = Rig(tmp_path)
    over = tmp_path / "override.toml"
    over.write_text(extra)
    return rig, over


def _console(rig, name="console-a", pub_port=None, req_port=None):
    from station.console.follower import Console
    cfg = config.load([rig.console_cfg(name, pub_port=pub_port, req_port=req_port, extra="resync_ms = 1000")],
                      system=False)
    c = Console(cfg)
    c.start()
    return c, cfg


class Collector:
    """Polls a console library object in a thread; keeps every live message."""

    def __init__(self, console):
        self.console = console
        self.msgs = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for m in self.console.poll(100):
                self.msgs.append((time.monotonic_ns(), m))

    def stop(self):
        self._stop.set()
        self._t.join(5)
        self.console.stop()


def _body(m):
    return msgpack.unpackb(m.body) if isinstance(m.body, (bytes, bytearray)) else m.body


def _alert(col, typ, source, after=0):
    for t, m in list(col.msgs):
        if m.kind == "alert" and t >= after:
            b = _body(m)
            if b.get("type") == typ and b.get("source") == source:
                return t, m
    return None


def _need_root_mount():
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if IN_CI:
            pytest.fail("the disk-full test needs root and mount(8) (tmpfs) under CI")
        pytest.skip("needs root and mount(8) for a small tmpfs")


@pytest.mark.timeout(150)
def test_disk_full_keeps_streaming_alerts_and_journals_everything_later(tmp_path):
    _need_root_mount()
    fs = tmp_path / "fs"
    fs.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(fs)], capture_output=True, text=True)
    if r.returncode != 0:
        (pytest.fail if IN_CI else pytest.skip)(f"cannot mount a tmpfs: {r.stderr.strip()}")
    station = cons = None
    try:
        data = fs / "data"
        # the filler is created before the station writes anything: on a busy machine the journal
        # could otherwise take the last free block first and make opening the filler fail
        filler = fs / "filler"
        f = open(filler, "wb", buffering=0)   # unbuffered: nothing left to flush (and fail) at close
        rig, over = _rig_station(tmp_path, f'[station]\ndata_dir = "{data}"\n')
        station = _start(["--config", str(rig.station_cfg), "--config", str(over), "run", "--sources", "scenario",
                          "--speed", "4"], tmp_path / "station.log")
        console, _ = _console(rig)
        cons = Collector(console)
        wait_for(lambda: len(cons.msgs) >= 20, 60, "the console to follow the station")
        with f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        full_at = time.monotonic_ns()
        t_lost, _ = wait_for(lambda: _alert(cons, "source_lost", "journal"), 20, "the disk-full alert at the console")
        committed_then = _messages(_session(data).path)[-1][0]
        time.sleep(4)
        live_seqs = [m.seq for _, m in cons.msgs]
        committed_during = _messages(_session(data).path)[-1][0]
        assert committed_during == committed_then, "nothing can be journaled on a full disk"
        assert max(live_seqs) > committed_during + 5, "the console kept receiving live messages"
        os.unlink(filler)
        back_at = time.monotonic_ns()
        wait_for(lambda: _alert(cons, "source_back", "journal", after=back_at), 20, "the journal-back alert")
        time.sleep(1.5)
        _stop(station)
        assert station.returncode == 0, (tmp_path / "station.log").read_text()[-2000:]
        time.sleep(1.0)
        cons.stop()
        info = _session(data)
        with Journal.open(info.path) as j:
            assert j.verify() == []
            assert replay(j, exact=True).mismatches == []
        msgs = _messages(info.path)
        seqs = [m[0] for m in msgs]
        assert seqs == list(range(1, len(seqs) + 1))
        # every message the console saw live (during the full disk too) is in the journal, unchanged
        journal_by_seq = {m[0]: (m[1], m[3]) for m in msgs}
        for _, m in cons.msgs:
            if m.session == info.session_id:
                assert journal_by_seq[m.seq] == (m.kind, bytes(m.body) if isinstance(m.body, (bytes, bytearray)) else msgpack.packb(m.body))
        print(f"\ndisk full: alert at the console {(t_lost - full_at) / MS:.0f} ms after the disk filled; "
              f"{committed_during} messages journaled before, {max(live_seqs)} published meanwhile, "
              f"{len(seqs)} journaled in the end (seq 1..{seqs[-1]} without a gap)")
    finally:
        if cons is not None and not cons._stop.is_set():
            cons.stop()
        _stop(station)
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)


@pytest.mark.timeout(60)
def test_disk_full_backlog_is_bounded_then_drained(tmp_path, monkeypatch):
    """In-process recorder on a real full tmpfs: past MAX_BACKLOG_CYCLES un-journaled cycles it stops
    ingesting (events wait in the queue) and only retries; when space returns everything is
    journaled in order."""
    _need_root_mount()
    from station.events import MouseBin
    from station.recorder import loop as recmod
    fs = tmp_path / "fs"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(fs)]).returncode != 0:
        (pytest.fail if IN_CI else pytest.skip)("cannot mount a tmpfs")
    try:
        monkeypatch.setattr(recmod, "MAX_BACKLOG_CYCLES", 3)
        cfg = config.load(system=False).replace(station={"id": "bound-01"}, publisher={"enabled": False})
        clock = [10 * S]
        rec = recmod.Recorder(cfg, clock=lambda: clock[0], data_dir=fs / "data")
        rec.open_session()

        def cycle(n_events=5):
            clock[0] += S // 2
            rec.queue.put_many(MouseBin(clock[0] - S // 2 + i * 10 * MS, 1, 1) for i in range(n_events))
            return rec.step()
        cycle()
        with open(fs / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        published = [len(cycle()) for _ in range(3)]
        assert rec.backlog_cycles == 3 and all(published), "still publishing while the disk is full"
        assert cycle() == [] and len(rec.queue) == 5, "at the bound: nothing ingested, events wait"
        os.unlink(fs / "filler")
        assert cycle() != [] and rec.backlog_cycles == 0 and rec.journal_error is None
        rec.close()
        (info,) = list_sessions(fs / "data")
        with Journal.open(info.path) as j:
            assert j.verify() == []
            seqs = [m.seq for m in j.iter_messages()]
            assert seqs == list(range(1, len(seqs) + 1))
            assert sum(b.count("mouse") for b in j.iter_batches()) == 30
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)


# ----------------------------------------------------------------------------- console cut off
OUTAGE_S = 30.0


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_console_unreachable_then_everything_arrives(tmp_path):
    """The issue asks for 10 minutes. What a long outage stresses is the amount missed compared
    with what the station keeps in memory (publisher.recent_messages, the PUB queue): beyond it the
    catch-up must come from the journal. With recent_messages = 16 and send_hwm = 100 (the smallest allowed), a 30 s cut at
    scenario speed 10 (5 minutes of exam, ~7 times more messages than the memory holds) exercises
    exactly that path, in a test budget."""
    require("socat")
    station = cons = None
    rig, over = _rig_station(tmp_path, "[publisher]\nrecent_messages = 16\nsend_hwm = 100\n")
    relay = SocatRelay([rig.pub_port, rig.req_port])
    try:
        station = _start(["--config", str(rig.station_cfg), "--config", str(over), "run", "--sources", "scenario",
                          "--speed", "10"], tmp_path / "station.log")
        relay.start()
        console, ccfg = _console(rig, pub_port=relay.ports[0], req_port=relay.ports[1])
        cons = Collector(console)
        wait_for(lambda: len(cons.msgs) >= 20, 60, "the console to follow the station")
        relay.cut()
        cut_seq = max(m.seq for _, m in cons.msgs)
        time.sleep(OUTAGE_S)
        data = tmp_path / "data"
        missed = _messages(_session(data).path)[-1][0] - cut_seq
        relay.start()
        back = time.monotonic()

        def caught_up():
            last = _messages(_session(data).path)[-1][0]
            seen = {m.seq for _, m in cons.msgs}
            return last if set(range(1, last + 1)) <= seen else None
        last = wait_for(caught_up, 60, "the console to catch up", interval=0.5)
        catch_up_s = time.monotonic() - back
        _stop(station)
        time.sleep(1.0)
    finally:
        if cons is not None:
            cons.stop()
        relay.cut()
        _stop(station)
    info = _session(tmp_path / "data")
    journal = _messages(info.path)
    got = {}
    for _, m in cons.msgs:
        if m.session == info.session_id:
            got.setdefault(m.seq, m)
    assert set(got) == {m[0] for m in journal}, "every journaled message reached the console"
    print(f"\nconsole cut off {OUTAGE_S:.0f} s: {missed} messages missed (station memory holds 16), "
          f"caught up {catch_up_s:.1f} s after the link returned; {len(journal)} messages, 0 missing")
    assert missed > 16 * 3
    assert last >= cut_seq + missed


# ----------------------------------------------------------------------------- wall clock step
WALL_HOOK = r"""
import os, sys, time
_f = os.environ["STATION_TEST_WALL_OFFSET_FILE"]
_real_ns, _real = time.time_ns, time.time
_st = [0, -1.0]
def _off():
    now = time.monotonic()
    if now - _st[1] > 0.05:
        _st[1] = now
        try:
            _st[0] = int(open(_f).read().strip() or 0)
        except (OSError, ValueError):
            pass
    return _st[0]
time.time_ns = lambda: _real_ns() + _off()
time.time = lambda: _real() + _off() / 1e9
from station.cli import main
sys.argv[0] = "station"
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(200)
@pytest.mark.slow
def test_wall_clock_stepped_by_an_hour_does_not_move_metrics(tmp_path):
    """The agent process's wall clock (time.time / time.time_ns) jumps +1 h mid-exam through an
    env hook (libfaketime 0.9.10 breaks Python's sleep, so the offset is applied in-process);
    monotonic time is untouched, as with a real clock step. The contacts the station measures must
    match the scenario's ground truth, and station times must not jump."""
    from station.scenario import Scenario
    offset = tmp_path / "offset"
    offset.write_text("0")
    data = tmp_path / "data"
    cfgp = tmp_path / "station.toml"
    cfgp.write_text('[station]\nid = "clock-01"\n[publisher]\nenabled = false\n')
    env = dict(os.environ, STATION_TEST_WALL_OFFSET_FILE=str(offset))
    speed = 30
    p = subprocess.Popen([sys.executable, "-c", WALL_HOOK, "--no-system-config", "--config", str(cfgp), "run",
                          "--sources", "scenario", "--speed", str(speed), "--data-dir", str(data)],
                         stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        wait_for(lambda: _session(data) is not None and _session(data).blocks >= 4, 60, "the agent to start")
        closed = lambda: sum(1 for _, k, _, _ in _messages(_session(data).path) if k == "contact")
        wait_for(lambda: closed() >= 1, 60, "a first contact before the clock step")
        before = closed()
        offset.write_text(str(3600 * S))
        # contacts that close after the step (however slowly a busy machine runs the scenario)
        wait_for(lambda: closed() >= before + 2, 90, "two contacts after the clock step")
    finally:
        _stop(p)
    info = _session(data)
    msgs = _messages(info.path)
    health = [(t, msgpack.unpackb(b)) for _, k, t, b in msgs if k == "health"]
    gaps = np.diff([t for t, _ in health])
    assert gaps.max() < 3 * S * speed, "station time jumped with the wall clock"
    contacts = [msgpack.unpackb(b) for _, k, _, b in msgs if k == "contact"]
    with Journal.open(info.path) as j:
        header = j.header
        assert replay(j, exact=True).mismatches == []
    cfg = config.load([cfgp], system=False)
    truth = Scenario(cfg, seed=1, duration_s=6 * 3600, start_ns=0).truth()["contacts"]
    assert len(contacts) >= 2, f"only {len(contacts)} contacts closed; the run is too short"
    for got, want in zip(contacts, truth):
        assert got["kind"] == want["kind"]
        want_ms = (want["end_ns"] - want["start_ns"]) / MS
        assert abs(got["duration_ms"] - want_ms) <= max(0.02 * want_ms, 500), (got, want)
        if got["kind"] == "phone":
            assert abs(got["agent_talk_ms"] - want["agent_talk_ms"]) <= max(0.02 * want["agent_talk_ms"], 200)
    print(f"\nwall clock +1 h mid-run: {len(contacts)} contacts "
          f"match the ground truth; largest step between health beats {gaps.max() / S / speed:.2f} s (real)")


# ----------------------------------------------------------------------------- X and PulseAudio restarts
@pytest.mark.timeout(180)
@pytest.mark.slow
def test_capture_restarts_x_server_and_pulseaudio_and_reconnects(tmp_path):
    """The real capture process (``station capture --sources real``: focus, input, audio) against
    Xvfb + openbox and a private PulseAudio, feeding a recorder process. Xvfb is killed and started
    again on the same display; then the agent sink's PulseAudio server is SIGKILLed and started
    again. Each time the journal gets the source's ``lost`` alert, then ``back``, and events from
    that source after the restart."""
    require("Xvfb", "openbox", "xdotool", "pulseaudio", "pactl", "parec")
    import shutil as _sh

    from tests.pulse_harness import PulseServer
    from tests.x11_harness import X11Session
    data = tmp_path / "data"
    cfgp = tmp_path / "station.toml"
    cfgp.write_text('[station]\nid = "restart-01"\n[publisher]\nenabled = false\n'
                    '[audio]\nagent_device = "agent_monitor"\ncustomer_device = "customer_monitor"\n'
                    + XTEST_INPUT_TOML)   # xdotool's keys count as a candidate's
    procs = []

    def alerts():
        info = _session(data)
        return _alerts(_messages(info.path)) if info else []

    def has(typ, source, after_seq=0):
        return any(s > after_seq and b.get("type") == typ and b.get("source") == source for s, b in alerts())

    def last_seq():
        info = _session(data)
        return _messages(info.path)[-1][0] if info else 0

    def count(stream, since_ns):
        with Journal.open(_session(data).path) as j:
            return sum(int((np.asarray(b.streams[stream]["t_ns"]) >= since_ns).sum())
                       for b in j.iter_batches() if stream in b.streams)

    with X11Session() as x, PulseServer(separate=True) as pa:
        env = {**pa.child_env(), "DISPLAY": x.display}
        try:
            rec = _start(["--config", str(cfgp), "recorder", "--data-dir", str(data)], tmp_path / "rec.log")
            procs.append(rec)
            wait_for(lambda: (data / "capture.sock").exists(), 30, "the socket")
            cap = _start(["--config", str(cfgp), "capture", "--sources", "real", "--data-dir", str(data)],
                         tmp_path / "cap.log", env=env)
            procs.append(cap)
            win = x.open_window("crm-app", "Customer 1")
            x.activate(win)
            t0 = time.monotonic_ns()
            wait_for(lambda: _session(data) and count("speech", t0) > 50, 40, "audio frames")

            # X server killed and restarted on the same display
            seq0 = last_seq()
            x.kill_server()
            wait_for(lambda: has("source_lost", "focus", seq0) and has("source_lost", "input", seq0), 20,
                      "focus and input lost alerts")
            x.restart_server()
            wait_for(lambda: has("source_back", "focus", seq0) and has("source_back", "input", seq0), 30,
                      "focus and input back")
            t1 = time.monotonic_ns()
            win = x.open_window("chat-app", "Chat 2")
            x.activate(win)
            x.xdotool("type", "--delay", "30", "abc")
            wait_for(lambda: count("key", t1) >= 6 and count("focus", t1) >= 1, 20, "keys and focus after the restart")

            # PulseAudio (the agent microphone's server) killed and restarted
            seq1 = last_seq()
            daemon = pa._daemons["agent"]
            pa._stop_keepalive("agent")
            daemon.proc.kill()
            daemon.proc.wait(5)
            wait_for(lambda: has("source_lost", "audio", seq1), 20, "the audio lost alert")
            for sub in ("home", "runtime", "state"):
                _sh.rmtree(daemon.dir / sub, ignore_errors=True)
            daemon.start(pa.client_conf, 10)
            pa.load_sink("agent")
            back = time.monotonic_ns()
            wait_for(lambda: has("source_back", "audio", seq1), 30, "audio back")
            wait_for(lambda: count("speech", back) > 50, 30, "audio frames after the restart")
            print(f"\nX restart: focus/input lost and back; PulseAudio restart: audio back "
                  f"{(time.monotonic_ns() - back) / S:.1f} s after the server returned")
        finally:
            _stop(*reversed(procs))
    with Journal.open(_session(data).path) as j:
        assert j.verify() == []


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "stress-capture":
    _stop_ev = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: _stop_ev.set())
    stress_capture(sys.argv[2], sys.argv[3], _stop_ev)
