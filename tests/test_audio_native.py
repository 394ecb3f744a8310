"""The native audio path against a real PulseAudio server: sources by the sound server's own names
(``agent.monitor``, ``customer.monitor`` of null sinks), no ALSA configuration, no PortAudio; the
source identity journaled as DeviceEvents; the server's events (a stream moved with
``pactl move-source-output``, a sink unloaded, a new default source) journaled and alerted within
2 s; a source that is not the calibrated headset gives no evidence.

One server holds both sinks (as on a desktop): unloading a sink makes PulseAudio move the stream
recording its monitor to another source, which is exactly what the capture must notice.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from station import config
from station.events import Batch, Channel
from tests.pulse_harness import PulseServer, latest_journal, monitor_config, start_station_run, voices  # noqa: F401  (voices: a fixture)
from tests.support import require, station_cmd, wait_for
from tests.test_audio_capture import run_dialog

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]
MS = 1_000_000


@pytest.fixture(scope="module")
def pulse():
    require("pulseaudio", "pactl", "pacat", "parec", "espeak-ng", "sox")
    with PulseServer() as pa, pytest.MonkeyPatch.context() as mp:
        mp.delenv("ALSA_CONFIG_PATH", raising=False)     # no ALSA routing: the native path needs none
        mp.setenv("PULSE_SERVER", pa.server())
        mp.setenv("PULSE_CLIENTCONFIG", str(pa.client_conf))
        yield pa


@pytest.fixture(scope="module")
def cfg():
    return monitor_config("agent.monitor", "customer.monitor")   # the sound server's own names


def test_station_devices_lists_the_sound_servers_sources_by_name(pulse, tmp_path):
    conf = tmp_path / "station.toml"
    conf.write_text('[audio]\nagent_device = "agent.monitor"\ncustomer_device = "customer.monitor"\n')
    env = {**os.environ, "PULSE_SERVER": pulse.server()}
    r = subprocess.run(station_cmd("--config", str(conf), "devices", "--json", system_config=False),
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    sources = {s["name"]: s for s in out["sound_server"]["sources"]}
    assert sources["agent.monitor"]["selected"] == ["agent:ch0"]
    assert sources["customer.monitor"]["selected"] == ["customer:ch0"]
    assert sources["agent.monitor"]["monitor_of"] == "agent" and sources["agent.monitor"]["virtual"]
    assert {k["name"]: k["monitor"] for k in out["sound_server"]["sinks"]} == {
        "agent": "agent.monitor", "customer": "customer.monitor"}
    assert out["config_problem"] == ""
    table = subprocess.run(station_cmd("--config", str(conf), "devices", system_config=False),
                           env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "agent.monitor" in table.stdout and "Monitor of customer" in table.stdout
    gone = subprocess.run(station_cmd("--config", str(conf), "devices", system_config=False),
                          env={**env, "PULSE_SERVER": f"unix:{tmp_path}/none"}, capture_output=True, text=True,
                          timeout=60)
    lines = [x for x in gone.stdout.splitlines() if x.startswith("sound server:")]
    assert len(lines) == 1 and "no sound server answers" in lines[0], gone.stdout
    assert "Traceback" not in gone.stderr


def test_native_capture_by_name_matches_the_played_speech(pulse, cfg, voices):
    """Same measurement as test_audio_capture's quiet dialog, the sources configured by the sound
    server's names: recorded natively (no ALSA file, no PortAudio device). One server renders both
    sinks, each up to its 10 ms latency ahead of its clock: the marker may be stamped up to that
    much before its hand-over (measured side by side, native and PortAudio stamps of one monitor
    agree within 1 ms)."""
    assert "ALSA_CONFIG_PATH" not in os.environ
    results, status = run_dialog(pulse, cfg, voices, slack_ns=15 * MS)
    assert status["paths"] == {"agent": "pulse:agent.monitor", "customer": "pulse:customer.monitor"}
    assert status["adc_clock"] == "pulse"
    for sink, r in results.items():
        assert r["median_ms"] <= 60, (sink, r)
        assert r["p95_ms"] <= 150, (sink, r)
        assert r["f1"] >= 0.9, (sink, r)


class _Run:
    """An AudioSource on the queue, collecting what it emits (with arrival times)."""

    def __init__(self, cfg, profile=None):
        from station.capture.audio import AudioSource
        from station.eventqueue import EventQueue
        self.q = EventQueue()
        self.src = AudioSource(cfg, profile)
        self.events: list = []
        self.src.start(self.q)

    def collect(self):
        self.events += self.q.drain_events()
        return self.events

    def mark(self) -> int:
        """A position in the events: ``first`` looks only at what arrives after it."""
        return len(self.collect())

    def first(self, pred, after: int, timeout: float, what: str):
        return wait_for(lambda: next((e for e in self.collect()[after:] if pred(e)), None), timeout, what)


def _our_output(pulse, source_name: str) -> str:
    """The index of the capture's source output on ``source_name`` (media.name "station ...")."""
    text = pulse.pactl("list", "source-outputs")
    blocks = text.split("Source Output #")[1:]
    sources = {line.split("\t")[1]: line.split("\t")[0] for line in pulse.pactl("list", "short", "sources").splitlines()}
    for b in blocks:
        idx = b.split("\n", 1)[0].strip()
        if 'media.name = "station ' in b and f"Source: {sources[source_name]}\n" in b:
            return idx
    raise AssertionError(f"no station stream on {source_name}: {text}")


def _alerts(events) -> list:
    from station.engine.core import Engine
    eng = Engine(config.load(system=False))
    devs = [e for e in events if e.STREAM == "device"]
    return [b for k, _, b in eng.ingest(Batch.from_events(max(e.t_ns for e in devs) + 1, devs)) if k == "alert"]


def test_moved_stream_unloaded_sink_and_new_default_are_journaled_and_alerted(pulse, cfg):
    run = _Run(cfg)
    try:
        run.first(lambda e: e.STREAM == "health" and e.state == "ok", 0, 25, "audio ok")
        run.first(lambda e: e.STREAM == "speech", 0, 10, "frames")
        present = {e.device: e for e in run.collect() if e.STREAM == "device" and e.state == "present"}
        assert present["agent.monitor"].detail.startswith("agent:") and present["agent.monitor"].virtual
        assert present["customer.monitor"].evidence

        # 1. the candidate moves the recorded microphone stream to another source
        t, m = time.monotonic_ns(), run.mark()
        pulse.pactl("move-source-output", _our_output(pulse, "agent.monitor"), "customer.monitor")
        moved = run.first(lambda e: e.STREAM == "device" and e.state == "changed", m, 10, "a DeviceEvent for the move")
        assert moved.device == "customer.monitor" and not moved.evidence and "moved here from 'agent.monitor'" in moved.detail
        assert moved.t_ns - t < 2_000 * MS
        lost = run.first(lambda e: e.STREAM == "health" and e.state == "lost", m, 10, "audio lost after the move")
        assert "moved" in lost.detail
        # no frame of the agent channel comes from the other source: a gap until the capture reopened
        back = run.first(lambda e: e.STREAM == "health" and e.state == "ok", m, 15, "audio back on agent.monitor")
        assert not [e for e in run.collect() if e.STREAM == "speech" and e.channel == Channel.AGENT
                    and lost.t_ns <= e.t_ns < back.t_ns]
        wait_for(lambda: _our_output(pulse, "agent.monitor"), 10, "the stream reopened on the configured source")

        # 2. a new default source
        pulse.load_module("module-null-sink", "sink_name=player", "rate=16000", "channels=1")
        t, m = time.monotonic_ns(), run.mark()
        pulse.pactl("set-default-source", "player.monitor")
        default = run.first(lambda e: e.STREAM == "device" and "default source changed" in e.detail, m, 10,
                            "a DeviceEvent for the new default source")
        assert default.device == "player.monitor" and not default.evidence and default.t_ns - t < 2_000 * MS
        # PulseAudio moves the capture's streams to the new default: noticed, reopened on agent.monitor
        run.first(lambda e: e.STREAM == "health" and e.state == "ok", m, 15, "audio back")

        # 3. the headset is unplugged (its sink unloaded: the server moves our stream elsewhere)
        t, m = time.monotonic_ns(), run.mark()
        pulse.unload_sink("agent")
        removed = run.first(lambda e: e.STREAM == "device" and e.state == "removed", m, 10, "a DeviceEvent for the removal")
        assert removed.device == "agent.monitor" and not removed.evidence and removed.t_ns - t < 2_000 * MS
        run.first(lambda e: e.STREAM == "health" and e.state == "lost", m, 10, "audio lost after the unload")
        alerts = _alerts(run.collect())
        kinds = {(a["device"], a["state"]) for a in alerts if a["type"] == "device_changed"}
        assert {("customer.monitor", "changed"), ("player.monitor", "changed"), ("agent.monitor", "removed")} <= kinds
    finally:
        run.src.stop()
        if "agent" not in pulse.modules:
            pulse.load_sink("agent")
        pulse.pactl("set-default-source", "agent.monitor")


def test_a_frozen_sound_server_is_a_loss_and_the_capture_comes_back(pulse, cfg):
    """The candidate owns the sound server and can freeze it (SIGSTOP): the native reader never
    blocks in it, so the audio is lost within the stall rule, and back when it thaws."""
    import signal
    run = _Run(cfg)
    pid = pulse.server_pid()
    try:
        run.first(lambda e: e.STREAM == "health" and e.state == "ok", 0, 25, "audio ok")
        m = run.mark()
        os.kill(pid, signal.SIGSTOP)
        t = time.monotonic_ns()
        lost = run.first(lambda e: e.STREAM == "health" and e.state == "lost", m, 15, "audio lost while frozen")
        assert "no audio from" in lost.detail and time.monotonic_ns() - t < 2_500 * MS
        os.kill(pid, signal.SIGCONT)
        run.first(lambda e: e.STREAM == "health" and e.state == "ok", m, 25, "audio back after the thaw")
    finally:
        os.kill(pid, signal.SIGCONT)
        run.src.stop()


def test_a_source_that_is_not_the_calibrated_headset_gives_no_evidence(pulse, cfg):
    import dataclasses

    from station.headset import HeadsetProfile, SourceIdentity
    base = HeadsetProfile("h1", "st-1", "tech", "2026-12-01T00:00:00Z", -60.0, -54.0, 2, 0.0, 0.0, 20.0, -26.0,
                          True)
    customer = SourceIdentity(name="customer.monitor", monitor=True)
    wrong = dataclasses.replace(base, agent_source=SourceIdentity(name="headset.monitor", monitor=True),
                                customer_source=customer)
    run = _Run(cfg, wrong)
    try:
        lost = run.first(lambda e: e.STREAM == "health" and e.state == "lost", 0, 15, "audio lost")
        assert "not the calibrated headset" in lost.detail
        dev = run.first(lambda e: e.STREAM == "device" and e.device == "agent.monitor", 0, 10, "a DeviceEvent")
        assert not dev.evidence and "headset.monitor" in dev.detail
        time.sleep(1.0)   # what matters: nothing at all arrives while it does not match
        assert not [e for e in run.collect() if e.STREAM == "speech"]
        assert any(a["type"] == "device_changed" and not a["evidence"] for a in _alerts(run.collect()))
    finally:
        run.src.stop()
    right = dataclasses.replace(base, agent_source=SourceIdentity(name="agent.monitor", monitor=True),
                                customer_source=customer)
    run = _Run(cfg, right)
    try:
        run.first(lambda e: e.STREAM == "health" and e.state == "ok", 0, 25, "audio ok with the calibrated sources")
        dev = [e for e in run.collect() if e.STREAM == "device" and e.device == "agent.monitor"]
        assert dev and dev[-1].evidence and "the calibrated headset" in dev[-1].detail
    finally:
        run.src.stop()


def test_a_moved_stream_is_journaled_alerted_within_2_s_and_in_the_report(pulse, tmp_path):
    """End to end: ``station run`` records the monitors by name; the candidate moves the recorded
    microphone stream; the device alert is in the journal (published) within 2 s, and the
    report's devices row lists the change."""
    import msgpack

    from station.recorder.report import build_report
    from station.rendering import render_html
    data = tmp_path / "data"
    proc = start_station_run(tmp_path, data, tmp_path / "run.log", station_id="native-01",
                             agent_device="agent.monitor", customer_device="customer.monitor")

    def journal():
        return latest_journal(data)

    def speech_frames() -> int:
        j = journal()
        if j is None:
            return 0
        with j:
            return sum(b.count("speech") for b in j.iter_batches())

    def alert(typ: str, **match):
        with journal() as j:
            for m in j.iter_messages(kinds=("alert",)):
                body = msgpack.unpackb(m.body)
                if body.get("type") == typ and all(body.get(k) == v for k, v in match.items()):
                    return body
        return None

    try:
        wait_for(lambda: speech_frames() > 100, 30, "speech frames in the journal")
        moved_at = time.monotonic_ns()
        pulse.pactl("move-source-output", _our_output(pulse, "agent.monitor"), "customer.monitor")
        body = wait_for(lambda: alert("device_changed", device="customer.monitor"), 10, "the device alert in the journal")
        assert time.monotonic_ns() - moved_at <= 2_200 * MS
        assert body["state"] == "changed" and not body["evidence"] and "moved here from 'agent.monitor'" in body["detail"]
        wait_for(lambda: alert("source_lost", source="audio"), 5, "the audio loss in the journal")
    finally:
        proc.send_signal(15)
        proc.wait(20)
    with journal() as j:
        rep = build_report(j)
    devices = rep["devices"]
    assert not devices["ok"] and [c["device"] for c in devices["changes"]] == ["customer.monitor"]
    assert {d["device"] for d in devices["last"]} == {"agent.monitor", "customer.monitor"}
    assert "customer.monitor" in render_html(rep) and any(g["source"] == "audio" for g in rep["data_gaps"])


def test_a_recorder_is_read_by_its_owner_once_per_block_with_contiguous_stamps(pulse):
    """``PulseRecorder.read`` (the audio worker's call, no thread per stream): each read returns
    what was recorded since the previous one, stamped so that reads follow on without a gap or
    an overlap of more than a frame; no recorder thread runs; a closed recorder raises."""
    import threading

    from station.capture.pulse_record import PulseRecorder, PulseRecordError
    rate, block = 16000, 6400
    before = {t.ident for t in threading.enumerate()}
    rec = PulseRecorder("agent.monitor", 1, rate, block, "station test-read 1")
    try:
        assert {t.ident for t in threading.enumerate()} == before
        reads = []
        deadline = time.monotonic() + 10
        while len(reads) < 5 and time.monotonic() < deadline:
            time.sleep(block / rate)
            got = rec.read()
            if got is not None:
                reads.append(got)
        assert len(reads) == 5, "the monitor delivered no audio"
        for (data, first, arrival), (data2, first2, _) in zip(reads, reads[1:]):
            assert data.dtype == "<i2" and data.ndim == 1 and first < arrival
            end = first + len(data) * 1_000_000_000 // rate
            assert abs(first2 - end) <= 20 * MS, (first2 - end) / MS
        assert sum(len(d) for d, _, _ in reads[1:]) >= 3 * block   # about a block per read
    finally:
        rec.close()
    with pytest.raises(PulseRecordError):
        rec.read()


def test_a_change_made_while_the_watch_checks_is_noticed(pulse, cfg, monkeypatch):
    """The watch queries the server in its own check; an event that comes in meanwhile (here: the
    recorded stream moved during the first check) must lead to another check, not wait for the
    next event (none comes: the stream just records from the other source)."""
    from station.capture import audio_watch
    real, moved = audio_watch.SourceWatch._check, []

    def check_then_move(self, pulse_client):
        real(self, pulse_client)
        if not moved:
            moved.append(1)
            pulse.pactl("move-source-output", _our_output(pulse, "agent.monitor"), "customer.monitor")
            pulse_client.server_info()      # a query: the move's events come in during it
    monkeypatch.setattr(audio_watch.SourceWatch, "_check", check_then_move)
    run = _Run(cfg)
    try:
        wait_for(lambda: moved, 25, "the first check")
        ev = run.first(lambda e: e.STREAM == "device" and e.state == "changed", 0, 10,
                       "a DeviceEvent for the stream moved during the check")
        assert ev.device == "customer.monitor" and not ev.evidence
    finally:
        run.src.stop()
        wait_for(lambda: 'media.name = "station ' not in pulse.pactl("list", "source-outputs"), 10,
                 "the capture's streams closed")
