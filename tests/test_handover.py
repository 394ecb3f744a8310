"""Capture -> recorder hand-over on real Unix sockets: delivery, bounds, versions, bad input."""

import socket
import time

import msgpack

from station.capture.handover_client import CaptureClient
from station.eventqueue import EventQueue
from station.events import Batch, KeyEvent, SourceHealth
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
        cli.start()
        for i in range(200):
            cq.put(KeyEvent(1_000 + i, 1, True))
        assert wait(lambda: (got.extend(drained(rq)) or True) and sum(isinstance(e, KeyEvent) for e in got) == 200)
    finally:
        cli.stop()
        srv.stop()
    keys = [e.t_ns for e in got if isinstance(e, KeyEvent)]
    assert keys == [1_000 + i for i in range(200)]
    health = [e for e in got if isinstance(e, SourceHealth)]
    assert health[0].source == "capture" and health[0].state == "ok"


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
    assert states == ["ok", "lost"]


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
