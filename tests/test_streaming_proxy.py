"""`station proxy`: CURVE on both sides; an authorised console gets the complete session through
it, an unauthorised key gets nothing from it. Station and proxy in their own processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import zmq

from station import config, keys
from station.console.follower import Console
from tests.streaming_station import Rig, free_port, journal_messages, store_messages
from tests.support import station_cmd

pytestmark = pytest.mark.timeout(120)


def test_proxy_fans_out_securely(tmp_path):
    rig = Rig(tmp_path)
    front = free_port()
    proxy_cfg = rig.console_cfg("proxy-host", key="proxy", extra="")
    proxy_cfg.write_text(proxy_cfg.read_text() + f"""
[proxy]
frontend_bind = "tcp://127.0.0.1:{front}"
secret_key_file = "{rig.kdir / 'proxy.key_secret'}"
authorized_keys_dir = "{rig.allow}"
""")
    extra = (f'proxy_endpoint = "tcp://127.0.0.1:{front}"\n'
             f'proxy_public_key = "{rig.kdir / "proxy.key"}"\nresync_ms = 1000')
    station, ready = rig.start_station(rate=20)
    proxy = subprocess.Popen(station_cmd("--config", str(proxy_cfg), "--no-system-config", "proxy"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    c = None
    try:
        assert "station proxy: 1 station(s)" in proxy.stdout.readline()
        c = Console(config.load([rig.console_cfg("console-a", extra=extra)], system=False))
        c.start()
        raw = ctx.socket(zmq.SUB)  # an unauthorised key at the proxy
        raw.linger = 0
        raw.curve_serverkey = keys.load_public(rig.kdir / "proxy.key")
        raw.curve_publickey, raw.curve_secretkey = keys.load_secret(rig.kdir / "intruder.key_secret")
        raw.subscribe(b"")
        raw.connect(f"tcp://127.0.0.1:{front}")
        got = []
        end = time.monotonic() + 5
        while time.monotonic() < end:
            got += c.poll(100)
        live_via_proxy = c.state("st-1")["counts"].get("live", 0)
        assert raw.poll(200) == 0, "an unauthorised key received data from the proxy"
        station.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        expected = journal_messages(ready["journal"])
        end = time.monotonic() + 20
        while time.monotonic() < end and len(got) < len(expected):
            got += c.poll(100)
        stored = store_messages(tmp_path / "console-a.sqlite", "st-1", ready["session"])
        assert stored == expected
        assert [m.seq for m in got] == [e[0] for e in expected]
        assert live_via_proxy > 50, "live messages did not come through the proxy"
        assert proxy.poll() is None and station.poll() is None
    finally:
        if c:
            c.stop()
        ctx.destroy(linger=0)
        for p in (proxy, station):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
