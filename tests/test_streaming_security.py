"""Closed by default: unauthorised keys, NULL clients, garbage, oversized and foreign-version
input reach nothing, are counted, and every process keeps running. Real sockets over loopback,
the station in its own process (tests/streaming_station.py: real Journal + Publisher)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time

import msgpack
import pytest
import zmq

from station import config, keys, protocol
from station.console.follower import Console
from station.errors import UserError
from tests.streaming_station import Rig
from tests.support import free_port, wait_for
from tests.support import station_cmd

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    proc, ready = r.start_station(rate=10)
    r.proc, r.ready = proc, ready
    yield r
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def console(rig, name, key=None):
    cfg = config.load([rig.console_cfg(name, key)], system=False)
    c = Console(cfg)
    c.start()
    return c


def curve_socket(ctx, kind, rig, key_name):
    s = ctx.socket(kind)
    s.linger = 0
    pub, sec = keys.load_secret(rig.kdir / f"{key_name}.key_secret")
    s.curve_serverkey = keys.load_public(rig.kdir / "station.key")
    s.curve_publickey, s.curve_secretkey = pub, sec
    return s


def test_authorised_console_receives_and_unauthorised_gets_nothing(rig):
    good = console(rig, "console-a")
    bad = console(rig, "intruder")
    ctx = zmq.Context()
    try:
        raw = curve_socket(ctx, zmq.SUB, rig, "intruder")
        raw.subscribe(b"")
        raw.connect(f"tcp://127.0.0.1:{rig.pub_port}")
        assert wait_for(lambda: good.poll(100), 10), "authorised console received nothing"
        assert wait_for(lambda: bad.state("st-1")["state"] == "unauthorised", 10)
        assert "allow-list" in bad.state("st-1")["detail"]
        assert bad.poll(1500) == []
        assert raw.poll(500) == 0, "an unauthorised SUB received a message"
        assert bad.reader.sessions() == [] and bad.reader.seqs("st-1", rig.ready["session"]) == []
        assert wait_for(lambda: rig.station_stats().get("unauthorised", 0) >= 2, 5), rig.station_stats()
        assert rig.proc.poll() is None
    finally:
        good.stop(), bad.stop()
        ctx.destroy(linger=0)


def test_null_mechanism_and_garbage_bytes_are_dropped(rig):
    ctx = zmq.Context()
    try:
        before = rig.station_stats().get("handshake_failed", 0)
        sub = ctx.socket(zmq.SUB)  # NULL mechanism
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{rig.pub_port}")
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{rig.req_port}")
        dealer.send(protocol.encode_request("snapshot", 1)[0])
        for port in (rig.pub_port, rig.req_port):
            for junk in (os.urandom(4096), b"\xff" + b"\x00" * 8 + b"\x7f" + os.urandom(200),
                         b"GET / HTTP/1.0\r\n\r\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    try:
                        s.sendall(junk)
                        s.settimeout(0.5)
                        s.recv(100)
                    except OSError:
                        pass
        assert sub.poll(1500) == 0 and dealer.poll(100) == 0, "a NULL client received data"
        assert wait_for(lambda: rig.station_stats().get("handshake_failed", 0) >= before + 4, 5), \
            rig.station_stats()
        assert rig.proc.poll() is None
        good = console(rig, "console-a")  # the station still serves authorised consoles
        try:
            assert wait_for(lambda: good.poll(100), 10)
        finally:
            good.stop()
    finally:
        ctx.destroy(linger=0)


def test_bad_requests_from_an_authorised_console_are_counted_and_answered(rig):
    ctx = zmq.Context()
    try:
        d = curve_socket(ctx, zmq.DEALER, rig, "console-b")
        d.connect(f"tcp://127.0.0.1:{rig.req_port}")

        def ask(frames):
            d.send_multipart(frames)
            assert d.poll(5000), "no reply"
            return protocol.decode_reply(d.recv_multipart())[0]

        h = ask([msgpack.packb({"schema": [2, 0], "op": "snapshot", "id": 1})])
        assert h["ok"] is False and h["code"] == "schema"
        assert "2.0 is not supported" in h["error"]
        h = ask([b"\xc1\xc1garbage"])
        assert h["code"] == "malformed"
        h = ask([protocol.packb({"schema": [1, 0], "op": "command", "id": 2,
                                 "cmd": {"type": "mark", "competence": "Z9"}})])
        assert h["code"] == "malformed"
        h = ask([b"x" * 40_000, b"y" * 40_000])  # each frame fits MAXMSGSIZE, together too big
        assert h["code"] == "oversized"
        d.send(b"z" * 2_000_000)  # beyond MAXMSGSIZE: the transport drops the connection
        time.sleep(0.5)
        st = wait_for(lambda: (lambda s: s if s.get("disconnects", 0) >= 1 else None)(rig.station_stats()), 5)
        assert st and st["schema_refused"] >= 1 and st["malformed"] >= 2 and st["oversized"] >= 1, st
        h = ask(protocol.encode_request("snapshot", 3))  # the same socket reconnects and is served
        assert h["ok"] and h["session"] == rig.ready["session"]
        assert rig.proc.poll() is None
    finally:
        ctx.destroy(linger=0)


def test_console_refuses_foreign_version_and_garbage_from_a_station(tmp_path):
    """A fake station (this process, real CURVE sockets) sends only bad data."""
    rig = Rig(tmp_path)
    from zmq.auth.thread import ThreadAuthenticator
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=keys.AllowList(rig.allow))
    pub, sec = keys.load_secret(rig.kdir / "station.key_secret")
    socks = []
    for kind, port in ((zmq.PUB, rig.pub_port), (zmq.ROUTER, rig.req_port)):
        s = ctx.socket(kind)
        s.linger = 0
        s.curve_server, s.curve_publickey, s.curve_secretkey = True, pub, sec
        s.bind(f"tcp://127.0.0.1:{port}")
        socks.append(s)
    pub_s, router = socks
    c = console(rig, "console-a")
    try:
        body = msgpack.packb({"x": 1})
        for i in range(30):
            frames = protocol.encode_live("st-1", "st-1-s", i + 1, "summary", 1, 2, body)
            h = msgpack.unpackb(frames[1])
            h["schema"] = [2, 0]
            pub_s.send_multipart([frames[0], msgpack.packb(h), frames[2]])
            pub_s.send_multipart([b"st-1/summary", b"\x00\x01garbage", b"\xc1"])
            pub_s.send_multipart([b"st-1/summary", frames[1]])  # 2 frames
            if router.poll(0):
                ident, *_ = router.recv_multipart()
                router.send_multipart([ident, b"\xc1not a reply"])
            time.sleep(0.05)
        st = wait_for(lambda: c.state("st-1")["state"] == "refused" and c.state("st-1"), 5)
        assert st, c.state("st-1")
        assert "protocol version 2.0 is not supported" in st["detail"]
        assert c.poll(200) == []
        assert c.stats().get("malformed", 0) >= 20 and c.stats().get("schema_refused", 0) >= 20
        assert c.reader.sessions() == []
        assert c._thread.is_alive()
    finally:
        c.stop()
        auth.stop()
        ctx.destroy(linger=0)


def test_key_files_modes_and_refusals(tmp_path):
    pub, sec = keys.generate(tmp_path / "k", "st")
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert keys.load_public(pub) == keys.load_secret(sec)[0]
    with pytest.raises(UserError, match="already exists"):
        keys.generate(tmp_path / "k", "st")
    os.chmod(sec, 0o644)
    with pytest.raises(UserError, match="readable by others"):
        keys.load_secret(sec)
    with pytest.raises(UserError, match="SECRET"):
        keys.authorize(sec, tmp_path / "allow")
    with pytest.raises(UserError, match="no key file"):
        keys.load_secret(tmp_path / "missing.key_secret")
    # command line: one clear line, non-zero exit, no traceback
    r = subprocess.run(station_cmd("--no-system-config", "keys", "authorize", str(sec), "--dir",
                                   str(tmp_path / "allow")), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "SECRET" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(station_cmd("--no-system-config", "keys", "generate", "--dir", str(tmp_path / "c"),
                                   "--name", "console-x"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "c" / "console-x.key_secret").stat().st_mode) == 0o600


def test_plaintext_needs_loopback_and_configuration(tmp_path, cfg_file):
    from station.config import ConfigError
    from station.recorder.publisher import Publisher
    cfg = config.load([cfg_file(f"""
[station]
data_dir = "{tmp_path}"
[publisher]
allow_plaintext_loopback = true
pub_bind = "tcp://0.0.0.0:{free_port()}"
""")], system=False)

    class H:
        station_id, session_id = "st-1", "s"
    p = Publisher(cfg, H(), tmp_path / "x.journal", lambda c: {})
    with pytest.raises(ConfigError, match="only loopback"):
        p.start()
    cfg2 = config.load([cfg_file(f"""
[station]
data_dir = "{tmp_path}"
[[console.station]]
id = "st-1"
pub_endpoint = "tcp://127.0.0.1:1"
req_endpoint = "tcp://127.0.0.1:2"
public_key = ""
""", "c.toml")], system=False)
    with pytest.raises(ConfigError, match="allow_plaintext_loopback"):
        Console(cfg2)
    p2 = Publisher(config.load(system=False).replace(station={"data_dir": str(tmp_path)}), H(),
                   tmp_path / "x.journal", lambda c: {})
    with pytest.raises(UserError, match="station keys generate"):
        p2.start()  # CURVE is the default and there is no key yet


def test_wrong_pinned_station_key_shows_unauthorised(rig):
    cfg = config.load([rig.console_cfg("console-a", station_key="intruder")], system=False)
    c = Console(cfg)
    c.start()
    try:
        st = wait_for(lambda: c.state("st-1")["state"] == "unauthorised" and c.state("st-1"), 12)
        assert st and "handshake keeps failing" in st["detail"], c.state("st-1")
        assert c.poll(100) == [] and c.reader.sessions() == []
        assert rig.proc.poll() is None and rig.station_stats()["handshake_failed"] >= 1
    finally:
        c.stop()
