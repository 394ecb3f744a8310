"""Assessor commands sent with the logged-in assessor's own CURVE key (a shared console).

A console shared by two assessors follows the stations with its own key (``console.secret_key_file``,
authorised on the stations without an assessor: it may read, not mark). Each assessor of
``[[console.assessor]]`` has a key of their own, bound to them on every station by ``station keys
authorize --assessor-id``; ``Commander.send(assessor, station, cmd)`` sends the command over a
DEALER that presents that assessor's key, so the station journals it as that assessor (the
station takes the assessor from the key, never from the message).

One DEALER per (assessor, station), created on first use and reused; each is used under its own
lock by one caller at a time (``send`` blocks: call it from a worker thread). A request without
a reply within ``console.request_timeout_ms`` is sent again with the same ``cmd_id`` (the station
journals a command once per id). Failure modes: an unreadable key file raises ``UserError`` from
the constructor; a refusal or no answer within ``timeout`` raises ``CommandError``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from pathlib import Path

import zmq

from station import keys, protocol
from station.competences import CommandError


class Commander:
    def __init__(self, cfg, specs):
        self.c = cfg.console
        self.specs = {s.id: s for s in specs}
        self.keys: dict[str, tuple[bytes, bytes]] = {}
        self.names: dict[str, str] = {}
        for a in self.c.assessor:
            self.keys[a["id"]] = keys.load_secret(Path(a["secret_key_file"]).expanduser())
            self.names[a["id"]] = a["name"]
        self.ctx = zmq.Context()
        self._socks: dict[tuple[str, str], zmq.Socket] = {}
        self._locks: collections.defaultdict = collections.defaultdict(threading.Lock)
        self._ids = int.from_bytes(os.urandom(3), "big")

    def _socket(self, assessor: str, station: str) -> zmq.Socket:
        s = self._socks.get((assessor, station))
        if s is None:
            spec = self.specs[station]
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.setsockopt(zmq.MAXMSGSIZE, self.c.max_message_bytes)
            if spec.public_key:
                pub, sec = self.keys[assessor]
                s.curve_serverkey = spec.public_key
                s.curve_publickey = pub
                s.curve_secretkey = sec
            s.connect(spec.req_endpoint)
            self._socks[(assessor, station)] = s
        return s

    def send(self, assessor: str, station: str, cmd: dict, timeout: float = 5.0) -> dict:
        """Send ``cmd`` as ``assessor`` and return the station's ack body. KeyError for an
        unknown assessor or station; protocol.ProtocolError for an invalid command."""
        if assessor not in self.keys:
            raise KeyError(f"unknown assessor {assessor!r}")
        if station not in self.specs:
            raise KeyError(f"unknown station {station!r}")
        full = {"cmd_id": uuid.uuid4().hex, "assessor_id": assessor, **cmd}
        if full.get("type") == "mark":
            full.setdefault("assessor_name", self.names[assessor])
            full.setdefault("mark_id", full["cmd_id"])
        full = protocol.validate_command(full)
        deadline = time.monotonic() + timeout
        retry_s = self.c.request_timeout_ms / 1000
        with self._locks[(assessor, station)]:
            sock = self._socket(assessor, station)
            while True:
                self._ids = (self._ids + 1) % protocol.MAX_SEQ
                rid = self._ids
                try:
                    sock.send_multipart(protocol.encode_request("command", rid, cmd=full), flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass        # not connected yet: the wait below, then again
                resend_at = min(deadline, time.monotonic() + retry_s)
                while (left := resend_at - time.monotonic()) > 0:
                    if not sock.poll(int(left * 1000) + 1):
                        continue
                    try:
                        hdr, _ = protocol.decode_reply(sock.recv_multipart())
                    except protocol.ProtocolError:
                        continue
                    if hdr.get("op") != "command" or hdr.get("id") != rid:
                        continue    # a late reply to an earlier attempt
                    if hdr["ok"]:
                        ack = hdr.get("ack")
                        return ack if isinstance(ack, dict) else {}
                    raise CommandError(f"station {station} refused the command: {hdr.get('error', '')}")
                if time.monotonic() >= deadline:
                    raise CommandError(f"station {station} did not acknowledge the command in time")

    def close(self) -> None:
        self.ctx.destroy(linger=0)
