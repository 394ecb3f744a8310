"""Capture -> recorder hand-over on real Unix sockets: delivery, bounds, versions, bad input."""

import socket
import time

import msgpack

from station.capture.handover_client import CaptureClient
from station.eventqueue import EventQueue
from station.clock import monotonic_ns
from station.events import Batch, IntegrityEvent, KeyEvent, SourceHealth
from station.handover import BATCH, HELLO, PROTO, FrameReader, frame
from station.recorder.handover_server import HandoverServer


def server(tmp_path, **kw):
    q = EventQueue()
    s = HandoverServer(tmp_path / "h.sock", q, station_id="st-1", max_frame_bytes=kw.get("max_frame_bytes", 1 << 20),
                       gap_alert_ms=kw.get("gap_alert_ms", 1500))
    s.start()
    return s, q


def client(tmp_path, q=None, **kw):
    q = q or EventQueue()
    c = CaptureClient(tmp_path / "h.sock", q, station_id=kw.get("station_id", "st-1"), heartbeat_ms=200,
                      queue_max_batches=kw.get("queue_max_batches", 100), interval_ms=50)
    return c, q


def drained(q):
    """The events a queue holds, with the batches the hand-over server queued taken apart."""
    out = []
    for item in q.drain():
        out.extend(item.events() if isinstance(item, Batch) else [item])
    return out


def wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_events_arrive_in_order_with_link_health(tmp_path):
    srv, rq = server(tmp_path)
    cli, cq = client(tmp_path)
    got = []
    try:
        t0 = monotonic_ns() - 500_000_000        # key events of the last half second, 5 ms apart
        stamps = [t0 + i * 5_000_000 for i in range(60)]
        for t in stamps:
            cq.put(KeyEvent(t, 1, True))
        cli.start()
        assert wait(lambda: (got.extend(drained(rq)) or True) and sum(isinstance(e, KeyEvent) for e in got) == 60)
    finally:
        cli.stop()
        srv.stop()
    keys = [e.t_ns for e in got if isinstance(e, KeyEvent)]
    assert keys == stamps
    health = [(e.source, e.state) for e in got if isinstance(e, SourceHealth)]
    assert health[:2] == [("capture", "lost"), ("capture", "ok")], "not connected until the HELLO, then ok"
    assert not any(isinstance(e, IntegrityEvent) for e in got), "a well-behaved capture raises nothing"


def test_silent_capture_becomes_a_lost_source(tmp_path):
    srv, rq = server(tmp_path, gap_alert_ms=400)
    cli, cq = client(tmp_path)
    try:
        cli.start()
        assert wait(lambda: srv.link_state == "ok")
        cli.stop()                     # no more beats
        t0 = time.monotonic()
        assert wait(lambda: srv.link_state == "lost", 3)
        assert time.monotonic() - t0 < 1.5
    finally:
        srv.stop()
    states = [e.state for e in drained(rq) if isinstance(e, SourceHealth)]
    assert states == ["lost", "ok", "lost"]


def test_outbox_is_bounded_while_the_recorder_is_away(tmp_path):
    cli, cq = client(tmp_path, queue_max_batches=5)
    cli.start()
    try:
        for i in range(20):
            cq.put(KeyEvent(i, 1, True))
            time.sleep(0.06)
        assert wait(lambda: cli.stats["dropped_batches"] > 0)
        assert len(cli.outbox) <= 5
    finally:
        cli.stop()
    srv, rq = server(tmp_path)      # the recorder comes up: the kept batches arrive
    cli2, _ = client(tmp_path)
    cli2.outbox.extend(cli.outbox)
    try:
        cli2.start()
        assert wait(lambda: srv.stats["batches"] >= 1)
    finally:
        cli2.stop()
        srv.stop()


def raw(tmp_path, data: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(str(tmp_path / "h.sock"))
    s.sendall(data)
    try:
        return s.recv(4096)
    except OSError:
        return b""
    finally:
        s.close()


def test_wrong_station_and_wrong_version_are_refused(tmp_path):
    srv, rq = server(tmp_path)
    try:
        r = FrameReader(1 << 16).feed(raw(tmp_path, frame(HELLO, msgpack.packb({"proto": PROTO, "station_id": "other"}))))
        assert r and r[0][0] == b"A" and msgpack.unpackb(r[0][1])["ok"] is False
        r = FrameReader(1 << 16).feed(raw(tmp_path, frame(HELLO, msgpack.packb({"proto": PROTO + 1, "station_id": "st-1"}))))
        assert "not supported" in msgpack.unpackb(r[0][1])["error"]
        assert wait(lambda: srv.stats["refused"] == 2)
    finally:
        srv.stop()
    assert not any(isinstance(e, KeyEvent) for e in drained(rq))


def test_garbage_oversized_and_batches_before_hello_are_dropped(tmp_path):
    srv, rq = server(tmp_path, max_frame_bytes=1024)
    try:
        raw(tmp_path, b"\x00\x00\x00\x05Bxxxx")                    # batch before hello
        raw(tmp_path, b"\xff\xff\xff\xff" + b"x" * 100)             # announces 4 GB
        raw(tmp_path, frame(HELLO, b"\xc1\xc1"))                     # undecodable hello
        raw(tmp_path, frame(HELLO, msgpack.packb({"proto": PROTO, "station_id": "st-1"})) + frame(BATCH, b"junk"))
        assert wait(lambda: srv.stats["malformed"] >= 3 and srv.stats["oversized"] >= 1)
        # the server still serves a proper capture afterwards
        cli, cq = client(tmp_path)
        cq.put(KeyEvent(5, 1, True))
        cli.start()
        got = []
        assert wait(lambda: (got.extend(drained(rq)) or True) and any(isinstance(e, KeyEvent) for e in got))
        cli.stop()
    finally:
        srv.stop()


class _Src:
    name = "slow"

    def __init__(self, until):
        self.until = until

    def delivered_until(self):
        if isinstance(self.until, Exception):
            raise self.until
        return self.until


def test_sources_watermark_waits_for_the_slowest_source():
    from station.capture.base import sources_watermark

    S = 1_000_000_000
    now = 100 * S
    lag = 1 * S
    assert sources_watermark([object()], now) == now - lag, "no bound reported: the fixed lag"
    assert sources_watermark([_Src(None), _Src(now)], now) == now - lag, "never ahead of the lag"
    assert sources_watermark([_Src(now - 2 * S), _Src(now - S // 2)], now) == now - 2 * S
    assert sources_watermark([_Src(now - 60 * S)], now) == now - 60 * S, "without a guard nothing is skipped"
    assert sources_watermark([_Src(RuntimeError("bug")), _Src(now - 2 * S)], now) == now - 2 * S


def test_a_stalled_source_is_journaled_lost_before_the_watermark_passes_it():
    """The watermark passes a stalled source only in the drain that also carries its loss; it
    waits for it again (and says so) once it is back within half the stall limit."""
    from station.capture.base import SourcesWatermark
    from station.eventqueue import EventQueue
    from station.events import SourceHealth
    from station.watermark import STALL_NS

    S = 1_000_000_000
    q = EventQueue()
    src = _Src(0)
    wm = SourcesWatermark([src], q)
    now = 10 * S
    src.until = now - STALL_NS + 1
    assert wm(now) == now - STALL_NS + 1 and len(q) == 0, "within the limit it holds the watermark"
    now += 2
    b = q.drain_batch(now, wm)
    assert b.watermark_ns == now - S, "stalled: the watermark goes on"
    (lost,) = list(b.events("health"))
    assert (lost.source, lost.state, lost.t_ns) == ("slow", "lost", src.until), "... with the loss in the same batch"
    now += 5 * S
    src.until = now - STALL_NS // 2 - 1
    assert q.drain_batch(now, wm).count() == 0 and wm(now) == now - S, "still too far behind"
    src.until = now - STALL_NS // 2
    b = q.drain_batch(now, wm)
    assert b.watermark_ns == src.until
    assert [(e.source, e.state) for e in b.events("health")] == [("slow", "ok")]
    assert isinstance(lost, SourceHealth)


def test_a_capture_that_holds_its_watermark_back_is_journaled_lost_and_passed(tmp_path):
    """A capture (perhaps the candidate's own) that reports a watermark far behind would keep every
    figure from ever becoming final: past STALL_NS the recorder declares it lost, in the batch
    whose watermark passes it, and its older events then count as late."""
    from station.clock import monotonic_ns
    from station.watermark import STALL_NS
    S = 1_000_000_000
    srv, rq = server(tmp_path)
    cq = EventQueue()
    cli = CaptureClient(tmp_path / "h.sock", cq, station_id="st-1", heartbeat_ms=200, queue_max_batches=100,
                        interval_ms=50, watermark=lambda now: now - 60 * S)
    try:
        cli.start()
        cq.put(KeyEvent(monotonic_ns(), 1, True))
        assert wait(lambda: srv.capture_watermark is not None)
        now = monotonic_ns()
        b = rq.drain_batch(now, srv.watermark)
        assert b.watermark_ns == now - S, "the lying capture does not hold the watermark back"
        lost = [e for e in b.events("health") if e.source == "capture-watermark"]
        assert [e.state for e in lost] == ["lost"] and lost[0].t_ns <= now - STALL_NS
    finally:
        cli.stop()
        srv.stop()


# ------------------------------------------------------------------ who may speak, and what
import os  # noqa: E402
import zlib  # noqa: E402

from station import software  # noqa: E402
from station.events import AssessorMark, ContactMarker, ExamControl, SpeechFrame, encode_batch  # noqa: E402
from station.recorder.handover_server import LinkPolicy  # noqa: E402
from station.recorder.plausibility import LinkChecks  # noqa: E402

MS = 1_000_000


def policy(**kw):
    base = dict(allowed_uids=frozenset({os.getuid()}), software=software.identity())
    base.update(kw)
    return LinkPolicy(**base)


def integrity(events, kind=None):
    return [e for e in events if isinstance(e, IntegrityEvent) and (kind is None or e.kind == kind)]


def hello(**kw):
    body = {"proto": PROTO, "station_id": "st-1", "pid": os.getpid(), "sources": ["audio", "input", "focus"],
            "software": software.identity()}
    body.update(kw)
    return frame(HELLO, msgpack.packb(body))


class Link:
    """A raw client socket speaking the hand-over protocol by hand."""

    def __init__(self, tmp_path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(2)
        self.s.connect(str(tmp_path / "h.sock"))

    def send(self, data: bytes) -> None:
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass            # the recorder closed the link first: what closed_without_a_byte checks

    def ack(self) -> dict:
        frames = FrameReader(1 << 16).feed(self.s.recv(4096))
        return msgpack.unpackb(frames[0][1])

    def closed_without_a_byte(self) -> bool:
        try:
            return self.s.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def started(tmp_path, pol, **kw):
    q = EventQueue()
    s = HandoverServer(tmp_path / "h.sock", q, station_id="st-1", max_frame_bytes=kw.get("max_frame_bytes", 1 << 22),
                       gap_alert_ms=1500, policy=pol)
    s.start()
    return s, q


def test_a_peer_of_another_account_gets_nothing_and_is_journaled(tmp_path):
    """The peer's uid comes from the kernel (SO_PEERCRED); this process's uid is made the
    'wrong' one by allowing only another uid."""
    srv, q = started(tmp_path, policy(allowed_uids=frozenset({os.getuid() + 4242})))
    try:
        link = Link(tmp_path)
        link.send(hello())
        assert link.closed_without_a_byte(), "a refused peer learns nothing, not even the station id"
        assert wait(lambda: srv.stats["peer_refused"] == 1)
    finally:
        srv.stop()
    (ev,) = integrity(drained(q), "peer_refused")
    assert f"uid {os.getuid()}" in ev.detail and f"pid {os.getpid()}" in ev.detail
    assert os.path.realpath(software.exe_of(os.getpid())) in ev.detail or software.exe_of(os.getpid()) in ev.detail
    assert srv.link_state != "ok"


def test_a_peer_running_another_executable_is_refused(tmp_path):
    srv, q = started(tmp_path, policy(allowed_exes=frozenset({"/usr/bin/false"})))
    try:
        link = Link(tmp_path)
        link.send(hello())
        assert link.closed_without_a_byte()
        assert wait(lambda: srv.stats["peer_refused"] == 1)
    finally:
        srv.stop()
    assert "not the station's interpreter" in integrity(drained(q), "peer_refused")[0].detail


def test_one_link_at_a_time_and_a_dead_link_makes_room(tmp_path):
    srv, q = started(tmp_path, policy())
    try:
        first = Link(tmp_path)
        first.send(hello())
        assert first.ack()["ok"]
        second = Link(tmp_path)
        second.send(hello())
        assert second.closed_without_a_byte(), "a second connection while one is live is refused"
        assert wait(lambda: srv.stats["second_link"] == 1)
        first.close()                                  # the capture exits: its successor is welcome
        third = Link(tmp_path)
        third.send(hello())
        assert third.ack()["ok"]
        assert srv.stats["second_link"] == 1
        third.close()
        assert wait(lambda: srv.link_state == "lost")
    finally:
        srv.stop()
    got = drained(q)
    assert [e.kind for e in integrity(got)] == ["second_link"]
    states = [e.state for e in got if isinstance(e, SourceHealth) and e.source == "capture"]
    assert states == ["lost", "ok", "lost", "ok", "lost"], "each drop is a gap, each link journaled"
    oks = [e.detail for e in got if isinstance(e, SourceHealth) and e.state == "ok"]
    assert all(f"pid {os.getpid()}" in d and "sha256" in d for d in oks), oks


def test_only_capture_streams_cross_the_link(tmp_path):
    now = monotonic_ns()
    forged = [ExamControl(now - 100 * MS, "start", "", "", "assessor-1"),
              AssessorMark(now - 90 * MS, "assessor-1", "A", "S1", "observed"),
              AssessorMark(now - 80 * MS, "assessor-2", "B", "S1", "observed"),
              ContactMarker(now - 70 * MS, "start", "phone"),
              SourceHealth(now - 60 * MS, "journal", "ok", "all fine"),
              SourceHealth(now - 60 * MS, "capture", "ok", "all fine")]
    real = [KeyEvent(now - 50 * MS, 1, True), SourceHealth(now - 40 * MS, "input", "ok", "reading")]
    srv, q = started(tmp_path, policy())
    try:
        link = Link(tmp_path)
        link.send(hello())
        assert link.ack()["ok"]
        link.send(frame(BATCH, encode_batch(Batch.from_events(now, forged + real, watermark_ns=now - 200 * MS))))
        assert wait(lambda: srv.stats["stream_refused"] >= 6)
        link.close()
    finally:
        srv.stop()
    got = drained(q)
    assert not any(isinstance(e, (ExamControl, AssessorMark, ContactMarker)) for e in got)
    assert [e.source for e in got if isinstance(e, SourceHealth) and e.detail == "all fine"] == []
    assert any(isinstance(e, KeyEvent) for e in got) and any(
        isinstance(e, SourceHealth) and e.source == "input" for e in got), "the capture's own streams pass"
    (ev,) = integrity(got, "stream_refused")
    assert ev.count == 6 and "exam" in ev.detail and "mark" in ev.detail and "journal" in ev.detail


def test_future_backfilled_and_impossible_rates_are_dropped():
    checks = LinkChecks(frame_ms=20, max_future_ns=250 * MS)
    now = 100_000 * MS
    b1 = Batch.from_events(now, [KeyEvent(now - 100 * MS, 1, True), KeyEvent(now + 5_000 * MS, 1, True)],
                           watermark_ns=now - 50 * MS)
    out, problems = checks.check(b1, now)
    assert out.count("key") == 1 and [p.kind for p in problems] == ["future_events"]
    # behind the watermark the capture declared: passed on within the bound (the engine counts it
    # late), a backfill beyond
    b2 = Batch.from_events(now + 250 * MS, [KeyEvent(now - 20_000 * MS, 1, True), KeyEvent(now - 60 * MS, 1, True),
                                            KeyEvent(now + 100 * MS, 1, True)], watermark_ns=now)
    out, problems = checks.check(b2, now + 250 * MS)
    assert list(out.streams["key"]["t_ns"]) == [now - 60 * MS, now + 100 * MS]
    assert [(p.kind, p.count) for p in problems] == [("past_events", 1)]
    # speech frames: exactly the frame rate per channel passes; twice as many frames do not
    t0 = now + 1_000 * MS
    honest = [SpeechFrame(t0 + i * 20 * MS, ch, 20, -30, True, True, 0) for i in range(100) for ch in (0, 1)]
    out, problems = checks.check(Batch.from_events(t0 + 2_000 * MS, honest, watermark_ns=t0), t0 + 2_000 * MS)
    assert out.count("speech") == 200 and problems == []
    t1 = t0 + 2_000 * MS
    doubled = [SpeechFrame(t1 + i * 10 * MS, 0, 20, -30, True, True, 0) for i in range(200)]
    out, problems = checks.check(Batch.from_events(t1 + 2_000 * MS, doubled, watermark_ns=t1), t1 + 2_000 * MS)
    assert 100 <= out.count("speech") <= 104 and [p.kind for p in problems] == ["rate_exceeded"]
    # a key flood: 1000 key events in 100 ms
    t2 = t1 + 2_000 * MS
    flood = [KeyEvent(t2 + i * 100_000, 1, i % 2 == 0) for i in range(1000)]
    out, problems = checks.check(Batch.from_events(t2 + 200 * MS, flood, watermark_ns=t2), t2 + 200 * MS)
    assert out.count("key") <= 61 and problems[0].kind == "rate_exceeded" and problems[0].count >= 939


def test_sound_card_clock_drift_never_drops_real_frames():
    """A device clock 0.5 % fast puts 50.25 frames per second of monotonic time: all kept."""
    checks = LinkChecks(frame_ms=20)
    t = 0
    kept = 0
    for block in range(300):                     # 10 minutes in 2 s batches
        frames = [SpeechFrame(t + int(i * 20 * MS / 1.005), 0, 20, -30, True, True, 0) for i in range(100)]
        t = frames[-1].t_ns + int(20 * MS / 1.005)
        out, problems = checks.check(Batch.from_events(t, frames, watermark_ns=frames[0].t_ns), t)
        kept += out.count("speech")
        assert problems == []
    assert kept == 30_000


def test_a_decompression_bomb_is_dropped_without_the_memory(tmp_path):
    import resource
    body = msgpack.packb({"v": 1, "t": monotonic_ns(), "w": 0,
                          "s": {"key": {c: b"\x00" * 80_000_000 for c in ("t_ns", "key_class", "down", "repeat", "injected")}
                                | {"char": []}}}, use_bin_type=True)
    bomb = zlib.compress(body, 9)
    assert len(bomb) < 2_000_000
    srv, q = started(tmp_path, policy())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        link = Link(tmp_path)
        link.send(hello())
        assert link.ack()["ok"]
        link.send(frame(BATCH, bomb))
        assert wait(lambda: srv.stats["oversized_frame"] == 1, 10)
        now = monotonic_ns()
        link.send(frame(BATCH, encode_batch(Batch.from_events(now, [KeyEvent(now - 10 * MS, 1, True)],
                                                              watermark_ns=now - 500 * MS))))
        assert wait(lambda: srv.stats["batches"] == 1), "the link survives the dropped frame"
        link.close()
    finally:
        srv.stop()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"\nbomb: {len(bomb)} bytes on the wire, 400 MB expanded; peak RSS grew {grown_mb:.1f} MB")
    assert grown_mb < 50
    (ev,) = integrity(drained(q), "oversized_frame")
    assert "decompresses to more than" in ev.detail


def test_simulated_sources_refused_in_exam_mode_flagged_otherwise(tmp_path):
    srv, q = started(tmp_path, policy(exam_mode=True))
    try:
        link = Link(tmp_path)
        link.send(hello(sources=["scenario"]))
        ack = link.ack()
        assert ack["ok"] is False and "exam mode" in ack["error"]
        assert wait(lambda: srv.stats["scenario_refused"] == 1)
    finally:
        srv.stop()
    assert integrity(drained(q), "scenario_refused")
    srv, q = started(tmp_path, policy(exam_mode=False))
    try:
        link = Link(tmp_path)
        link.send(hello(sources=["scenario"]))
        assert link.ack()["ok"]
        assert wait(lambda: srv.stats["simulated"] == 1)
        link.close()
    finally:
        srv.stop()
    assert integrity(drained(q), "simulated")


def test_other_software_is_an_integrity_alert(tmp_path):
    srv, q = started(tmp_path, policy())
    try:
        link = Link(tmp_path)
        link.send(hello(software={"version": "0.0.9", "sha256": "ab" * 32, "writable_by_others": ["/home/x/station"]}))
        assert link.ack()["ok"], "the link is kept (the record goes on), the mismatch is alerted"
        assert wait(lambda: srv.stats["software_mismatch"] == 1 and srv.stats["software_writable"] == 1)
        link.close()
    finally:
        srv.stop()
    (ev,) = integrity(drained(q), "software_mismatch")
    assert "0.0.9" in ev.detail and software.package_sha256()[:12] in ev.detail


def test_a_connection_flood_is_journaled_in_aggregate(tmp_path):
    """A loop of refused connects must not flood the journal: the first is journaled at once, the
    rest counted and journaled together a second later, every one counted."""
    srv, q = started(tmp_path, policy(allowed_uids=frozenset({os.getuid() + 4242})))
    try:
        done = 0
        while done < 200:
            try:
                Link(tmp_path).close()
                done += 1
            except BlockingIOError:          # the listen backlog is full: the server is busy refusing
                time.sleep(0.001)
        assert wait(lambda: srv.stats["peer_refused"] == 200)
        events = []
        assert wait(lambda: (events.extend(integrity(drained(q), "peer_refused")) or True)
                    and sum(e.count for e in events) == 200, 5)
    finally:
        srv.stop()
    assert len(events) <= 3, [e.count for e in events]
    assert events[0].count == 1


def test_after_a_reconnect_the_capture_announces_its_input_devices_again(tmp_path):
    """A restarted recorder (maybe a new session) gets the input device set again: ``on_link``'s
    events follow every link but the first (at the first, the sources announce it themselves)."""
    from station.events import DeviceEvent
    calls = []

    def device_set():
        calls.append(1)
        return [DeviceEvent(monotonic_ns(), "input", "/dev/input/event3", "present", name="Logitech USB Keyboard")]
    srv, rq = server(tmp_path)
    cq = EventQueue()
    cli = CaptureClient(tmp_path / "h.sock", cq, station_id="st-1", heartbeat_ms=200, queue_max_batches=100,
                        interval_ms=50, on_link=device_set)
    try:
        cli.start()
        assert wait(lambda: srv.link_state == "ok")
        time.sleep(0.2)
        assert calls == [] and not any(isinstance(e, DeviceEvent) for e in drained(rq))
        srv.stop()
        srv, rq = server(tmp_path)
        got = []
        assert wait(lambda: (got.extend(drained(rq)) or True) and any(isinstance(e, DeviceEvent) for e in got))
        assert calls == [1] and [e.name for e in got if isinstance(e, DeviceEvent)] == ["Logitech USB Keyboard"]
    finally:
        cli.stop()
        srv.stop()
