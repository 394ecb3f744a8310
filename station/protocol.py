"""Wire protocol between a station (publisher) and assessor consoles. Versioned: ``SCHEMA``.

Full description with rationale: ``docs/protocol.md``. In short:

Live messages (station PUB -> console SUB), three frames::

    topic   b"<station_id>/<kind>"        (prefix subscription per station: "<station_id>/")
    header  msgpack map {schema: [major, minor], station, session, seq, kind, t_ns, wall_ns}
    body    msgpack bytes exactly as journaled (a map)

``seq`` is the per-session sequence number the journal gave the message (contiguous, >= 0);
``t_ns`` is station monotonic time in ns, ``wall_ns`` the session's wall-clock anchor applied to it.

Requests (console DEALER -> station ROUTER), one frame: a msgpack map
``{schema, op, id, ...}`` with ``op`` one of ``snapshot``, ``replay``, ``command``, ``clock``.
Replies (ROUTER -> DEALER): a header map ``{schema, op, id, ok, ...}`` and, for ``replay``, a
payload frame: a msgpack list of ``[seq, kind, t_ns, wall_ns, body]`` entries.

Encoding: msgpack (compact binary, schema-less like JSON, fast C implementation, widely used and
maintained; the journal already stores msgpack bodies, so they travel without re-encoding).

Decoding is strict: every frame count, type and range is checked, and anything else raises
``ProtocolError`` (``SchemaError`` for an unknown major version) with a message naming the
problem. Callers count and drop; nothing here raises anything else on bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from station.competences import (
    COMMAND_TYPES,
    COMPETENCE_IDS,
    CONTACT_ACTIONS,
    CONTACT_KINDS,
    EXAM_ACTIONS,
    MARK_KINDS,
    MAX_SHORT,
    MAX_TEXT,
)

SCHEMA: tuple[int, int] = (1, 0)
KINDS = ("summary", "contact", "alert", "health", "mark", "exam", "evidence")  # kinds a station publishes today
OPS = ("snapshot", "replay", "command", "clock")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_SEQ = 2**63 - 1


class ProtocolError(ValueError):
    """A frame or message that does not follow this protocol (malformed, wrong types, ...)."""


class SchemaError(ProtocolError):
    """A message of a protocol major version this software does not speak."""


def packb(obj: Any) -> bytes:
    """The one encoding of message bodies, on the wire and in the journal: msgpack, deterministic
    for equal dicts (so that a replay reproduces a journaled body byte for byte)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_map(data: bytes, what: str) -> dict:
    """Decode one msgpack map strictly (no trailing bytes, str keys, bounded sizes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: not bytes")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # ExtraData, FormatError, StackError, UnicodeDecodeError, ValueError...
        raise ProtocolError(f"{what}: not valid msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: not a map")
    return obj


def check_schema(header: dict, what: str) -> tuple[int, int]:
    """Return (major, minor) or raise: SchemaError for another major, ProtocolError if malformed.
    A higher minor of the same major is accepted (unknown fields are ignored)."""
    s = header.get("schema")
    if (not isinstance(s, (list, tuple)) or len(s) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 65536 for x in s)):
        raise ProtocolError(f"{what}: schema version missing or malformed")
    if s[0] != SCHEMA[0]:
        raise SchemaError(f"{what}: protocol version {s[0]}.{s[1]} is not supported; "
                          f"this software speaks {SCHEMA[0]}.{SCHEMA[1]}")
    return s[0], s[1]


def _str(d: dict, key: str, what: str, *, pattern: re.Pattern | None = None,
         max_len: int = MAX_SHORT, choices: tuple[str, ...] | None = None,
         default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(f"{what}: {key} must be a string of at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(v):
        raise ProtocolError(f"{what}: {key} {v[:40]!r} is not a valid identifier")
    if choices is not None and v not in choices:
        raise ProtocolError(f"{what}: {key} {v[:40]!r} is not one of {', '.join(choices)}")
    return v


def _int(d: dict, key: str, what: str, lo: int = 0, hi: int = MAX_SEQ,
         default: int | None = None) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be an integer from {lo} to {hi}")
    return v


# ----------------------------------------------------------------------------- live messages

@dataclass(frozen=True, slots=True)
class Message:
    """One station message as a console receives it (live or replayed).

    seq: per-session sequence number; t_ns: station monotonic ns; wall_ns: station wall ns (UTC
    epoch); body: the journaled msgpack bytes; data: the decoded body (a dict).
    """

    station: str
    session: str
    seq: int
    kind: str
    t_ns: int
    wall_ns: int
    body: bytes
    data: dict = field(compare=False, repr=False)


def encode_live(station: str, session: str, seq: int, kind: str, t_ns: int, wall_ns: int,
                body: bytes) -> list[bytes]:
    """The three frames of a live message."""
    header = packb({"schema": list(SCHEMA), "station": station, "session": session, "seq": seq,
                    "kind": kind, "t_ns": t_ns, "wall_ns": wall_ns})
    return [f"{station}/{kind}".encode(), header, bytes(body)]


def decode_body(body: bytes, what: str = "body") -> dict:
    return unpack_map(body, what)


_LIVE_CHECKED: dict[tuple[str, str, str], bytes] = {}   # (station, session, kind) seen valid -> topic
_LIVE_CHECKED_MAX = 4096


def decode_live(frames: list[bytes]) -> Message:
    """Decode and check a live message. Raises ProtocolError / SchemaError.

    The identifiers of a (station, session, kind) checked once are remembered (at most
    ``_LIVE_CHECKED_MAX``), so the next messages of a stream skip the pattern checks."""
    if len(frames) != 3:
        raise ProtocolError(f"live message: {len(frames)} frames, expected 3")
    topic, hdr, body = (f if type(f) is bytes else bytes(f) for f in frames)
    h = unpack_map(hdr, "live header")
    check_schema(h, "live message")
    station, session, kind = h.get("station"), h.get("session"), h.get("kind")
    want = (_LIVE_CHECKED.get((station, session, kind))
            if type(station) is str and type(session) is str and type(kind) is str else None)
    if want is None:
        station = _str(h, "station", "live header", pattern=_ID_RE)
        session = _str(h, "session", "live header", pattern=_ID_RE)
        kind = _str(h, "kind", "live header", pattern=_KIND_RE)
        want = f"{station}/{kind}".encode()
        if len(_LIVE_CHECKED) >= _LIVE_CHECKED_MAX:
            _LIVE_CHECKED.clear()
        _LIVE_CHECKED[(station, session, kind)] = want
    seq = _int(h, "seq", "live header")
    t_ns = _int(h, "t_ns", "live header", -MAX_SEQ)
    wall_ns = _int(h, "wall_ns", "live header", -MAX_SEQ)
    if topic != want:
        raise ProtocolError("live message: topic does not match the header")
    data = decode_body(body, "live body")
    return Message(station, session, seq, kind, t_ns, wall_ns, body, data)


# ----------------------------------------------------------------------------- requests

def encode_request(op: str, req_id: int, **fields: Any) -> list[bytes]:
    return [packb({"schema": list(SCHEMA), "op": op, "id": req_id, **fields})]


def decode_request(frames: list[bytes]) -> dict:
    """Decode a request (frames after the ROUTER identity). Returns the checked map:
    snapshot {}, replay {session, from_seq, to_seq}, command {cmd}, clock {}.
    Raises SchemaError (unknown major) or ProtocolError."""
    if len(frames) != 1:
        raise ProtocolError(f"request: {len(frames)} frames, expected 1")
    r = unpack_map(bytes(frames[0]), "request")
    check_schema(r, "request")
    op = _str(r, "op", "request", choices=OPS)
    req_id = _int(r, "id", "request")
    out: dict[str, Any] = {"op": op, "id": req_id}
    if op == "replay":
        out["session"] = _str(r, "session", "replay request", pattern=_ID_RE)
        out["from_seq"] = _int(r, "from_seq", "replay request")
        out["to_seq"] = _int(r, "to_seq", "replay request")
        if out["to_seq"] < out["from_seq"]:
            raise ProtocolError("replay request: to_seq < from_seq")
    elif op == "command":
        cmd = r.get("cmd")
        if not isinstance(cmd, dict):
            raise ProtocolError("command request: cmd must be a map")
        out["cmd"] = validate_command(cmd)
    return out


def validate_command(cmd: dict) -> dict:
    """Check an assessor command and return it normalised (all fields present).

    Common fields: type ("mark" | "contact" | "exam"), cmd_id (unique per command, used to make
    retries idempotent), assessor_id, and optionally t_ns (the station-clock time the assessor
    acted, estimated by the console from its clock offset; 0 = use the time of arrival).
    mark: competence, kind, text, mark_id, assessor_name.
    contact: action, kind, contact_ref.  exam: action, candidate_id, candidate_name.
    """
    w = "command"
    typ = _str(cmd, "type", w, choices=COMMAND_TYPES)
    out: dict[str, Any] = {
        "type": typ,
        "cmd_id": _str(cmd, "cmd_id", w, pattern=_ID_RE),
        "assessor_id": _str(cmd, "assessor_id", w, pattern=_ID_RE),
        "t_ns": _int(cmd, "t_ns", w, 0, MAX_SEQ, default=0),
    }
    if typ == "mark":
        out["competence"] = _str(cmd, "competence", w, choices=tuple(COMPETENCE_IDS))
        out["kind"] = _str(cmd, "kind", w, choices=MARK_KINDS)
        out["text"] = _str(cmd, "text", w, max_len=MAX_TEXT, default="")
        out["mark_id"] = _str(cmd, "mark_id", w, default=out["cmd_id"], pattern=_ID_RE)
        out["assessor_name"] = _str(cmd, "assessor_name", w, default="")
    elif typ == "contact":
        out["action"] = _str(cmd, "action", w, choices=CONTACT_ACTIONS)
        out["kind"] = _str(cmd, "kind", w, choices=CONTACT_KINDS)
        out["contact_ref"] = _str(cmd, "contact_ref", w, default="")
    else:
        out["action"] = _str(cmd, "action", w, choices=EXAM_ACTIONS)
        out["candidate_id"] = _str(cmd, "candidate_id", w, default="")
        out["candidate_name"] = _str(cmd, "candidate_name", w, default="")
    return out


# ----------------------------------------------------------------------------- replies

def encode_reply(op: str, req_id: int, ok: bool = True, payload: bytes | None = None,
                 **fields: Any) -> list[bytes]:
    frames = [packb({"schema": list(SCHEMA), "op": op, "id": req_id, "ok": ok, **fields})]
    if payload is not None:
        frames.append(payload)
    return frames


def encode_error(op: str, req_id: int, code: str, message: str) -> list[bytes]:
    return encode_reply(op, req_id, ok=False, code=code, error=message)


def encode_replay_payload(entries: list[tuple[int, str, int, int, bytes]]) -> bytes:
    return packb([list(e) for e in entries])


def decode_reply(frames: list[bytes]) -> tuple[dict, bytes | None]:
    """(header, payload or None). Raises SchemaError / ProtocolError."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"reply: {len(frames)} frames, expected 1 or 2")
    h = unpack_map(bytes(frames[0]), "reply")
    check_schema(h, "reply")
    _str(h, "op", "reply", choices=OPS)
    _int(h, "id", "reply")
    if not isinstance(h.get("ok"), bool):
        raise ProtocolError("reply: ok must be true or false")
    if not h["ok"]:
        _str(h, "error", "reply", max_len=1000)
    return h, (bytes(frames[1]) if len(frames) == 2 else None)


def decode_replay_payload(station: str, session: str, payload: bytes | None) -> list[Message]:
    """Entries of a replay chunk as Messages, checked like live ones."""
    if payload is None:
        raise ProtocolError("replay reply: no payload")
    try:
        entries = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as e:
        raise ProtocolError(f"replay payload: not valid msgpack ({type(e).__name__})") from None
    if not isinstance(entries, list):
        raise ProtocolError("replay payload: not a list")
    out = []
    for e in entries:
        if (not isinstance(e, list) or len(e) != 5 or not isinstance(e[0], int)
                or not isinstance(e[1], str) or not _KIND_RE.fullmatch(e[1])
                or not isinstance(e[2], int) or not isinstance(e[3], int)
                or not isinstance(e[4], bytes) or isinstance(e[0], bool) or e[0] < 0):
            raise ProtocolError("replay payload: malformed entry")
        out.append(Message(station, session, e[0], e[1], e[2], e[3], e[4],
                           decode_body(e[4], "replay body")))
    return out
