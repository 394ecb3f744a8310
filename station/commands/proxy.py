"""``station proxy``: fan-out of station PUB streams to many consoles (zmq.proxy, XSUB/XPUB).

Security: both sides are CURVE. Upstream, the proxy is a CURVE *client* of every station in
[[console.station]] (their public keys pinned), with its own key pair (proxy.secret_key_file);
each station must authorize the proxy's public key. Downstream, the proxy is a CURVE *server*
(frontend_bind) with a ZAP allow-list of console keys (proxy.authorized_keys_dir), authenticator
on the same context, started before bind. The proxy sees the plaintext of every message (it
decrypts and re-encrypts), so it must run on a machine of the exam centre as trusted as the
consoles. Only live messages pass: requests (snapshot, replay, commands) go from each console to
each station directly, so authorisation of commands stays on the station.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import zmq

from station import keys
from station.cli import load_config
from station.config import ConfigError
from station.console.follower import station_specs
from station.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("proxy", help="fan out station streams to many consoles",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(func=run)


class Proxy:
    """XSUB (to stations) -> XPUB (to consoles) in a thread. ``start()``, ``stop()``."""

    def __init__(self, cfg):
        self.cfg = cfg
        pc = cfg.proxy
        self.specs = station_specs(cfg)
        if not self.specs:
            raise UserError("no stations: the proxy forwards the [[console.station]] entries", 2)
        self.plain = pc.allow_plaintext_loopback
        if self.plain and not keys.is_loopback(pc.frontend_bind):
            raise ConfigError(f"proxy.frontend_bind = {pc.frontend_bind!r}: plaintext is allowed "
                              "only on loopback")
        kfile = Path(pc.secret_key_file or keys.keys_dir(cfg) / "proxy.key_secret").expanduser()
        self.pub, self.sec = (None, None) if self.plain and not kfile.exists() else keys.load_secret(kfile)
        self.allow_dir = Path(pc.authorized_keys_dir or keys.allow_dir(cfg)).expanduser()

    def start(self) -> None:
        self.ctx = zmq.Context()
        self.auth = None
        if not self.plain:
            from zmq.auth.thread import ThreadAuthenticator
            self.allow = keys.AllowList(self.allow_dir)
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve_callback("proxy", credentials_provider=self.allow)
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.xpub.linger = 0
        self.xpub.setsockopt(zmq.MAXMSGSIZE, 65536)  # consoles only send subscriptions
        self.xpub.sndhwm = 10000
        if not self.plain:
            self.xpub.curve_server = True
            self.xpub.curve_publickey, self.xpub.curve_secretkey = self.pub, self.sec
            self.xpub.zap_domain = b"proxy"
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xsub.linger = 0
        self.xsub.rcvhwm = 100000
        self.xsub.setsockopt(zmq.MAXMSGSIZE, self.cfg.console.max_message_bytes)
        for s in self.specs:
            if s.public_key:
                if self.pub is None:
                    raise UserError("the proxy needs its own key pair (proxy.secret_key_file) to "
                                    f"reach station {s.id}")
                self.xsub.curve_serverkey = s.public_key
                self.xsub.curve_publickey, self.xsub.curve_secretkey = self.pub, self.sec
            self.xsub.connect(s.pub_endpoint)
        try:
            self.xpub.bind(self.cfg.proxy.frontend_bind)
        except zmq.ZMQError as e:
            raise UserError(f"cannot bind {self.cfg.proxy.frontend_bind}: {e}") from None
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctrl = self.ctx.socket(zmq.PAIR)
        self.ctrl.bind(f"inproc://proxy-ctrl-{id(self)}")
        ctrl_peer = self.ctx.socket(zmq.PAIR)
        ctrl_peer.connect(f"inproc://proxy-ctrl-{id(self)}")

        def run():
            try:
                zmq.proxy_steerable(self.xsub, self.xpub, None, ctrl_peer)
            except zmq.ContextTerminated:
                pass
            finally:
                ctrl_peer.close(linger=0)
        self.thread = threading.Thread(target=run, name="proxy", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        try:
            self.ctrl.send(b"TERMINATE")
        except zmq.ZMQError:
            pass
        self.thread.join(timeout=5)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=0)


def run(args) -> int:
    proxy = Proxy(load_config(args))
    proxy.start()
    print(f"station proxy: {len(proxy.specs)} station(s) -> {proxy.endpoint}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0
