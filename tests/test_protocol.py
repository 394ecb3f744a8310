"""The wire protocol codec: round trips, strict decoding, version refusal, command validation."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station import protocol
from station.protocol import ProtocolError, SchemaError


def live(**over):
    args = dict(station="st-1", session="st-1-s1", seq=7, kind="summary", t_ns=123, wall_ns=456,
                body=msgpack.packb({"a": 1}))
    args.update(over)
    return protocol.encode_live(**args)


def test_live_round_trip():
    frames = live()
    assert frames[0] == b"st-1/summary"
    m = protocol.decode_live(frames)
    assert (m.station, m.session, m.seq, m.kind, m.t_ns, m.wall_ns) == ("st-1", "st-1-s1", 7, "summary", 123, 456)
    assert m.data == {"a": 1} and m.body == frames[2]


def test_unknown_major_is_refused_with_a_clear_message():
    frames = live()
    h = msgpack.unpackb(frames[1])
    h["schema"] = [2, 0]
    frames[1] = msgpack.packb(h)
    with pytest.raises(SchemaError, match=r"protocol version 2\.0 is not supported; this software speaks 1\.0"):
        protocol.decode_live(frames)


def test_higher_minor_is_accepted():
    frames = live()
    h = msgpack.unpackb(frames[1])
    h["schema"] = [1, 9]
    h["future_field"] = "x"
    frames[1] = msgpack.packb(h)
    assert protocol.decode_live(frames).seq == 7


@pytest.mark.parametrize("mutate, problem", [
    (lambda f: f[:2], "frames"),
    (lambda f: [b"other/summary", f[1], f[2]], "topic"),
    (lambda f: [f[0], b"\xc1garbage", f[2]], "msgpack"),
    (lambda f: [f[0], f[1], b"\x93\x01\x02\x03"], "not a map"),
    (lambda f: [f[0], f[1] + b"\x00", f[2]], "msgpack"),
    (lambda f: [f[0], msgpack.packb({"schema": [1, 0]}), f[2]], "station"),
])
def test_malformed_live_messages(mutate, problem):
    with pytest.raises(ProtocolError, match=problem):
        protocol.decode_live(mutate(live()))


@pytest.mark.parametrize("field, value", [("seq", -1), ("seq", "7"), ("seq", True), ("station", "a/b"),
                                          ("kind", "Bad Kind"), ("session", "")])
def test_header_fields_are_checked(field, value):
    frames = live()
    h = msgpack.unpackb(frames[1])
    h[field] = value
    frames[1] = msgpack.packb(h)
    with pytest.raises(ProtocolError):
        protocol.decode_live(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_random_frames_only_ever_raise_protocol_error(frames):
    for decode in (protocol.decode_live, protocol.decode_request, protocol.decode_reply):
        try:
            decode(frames)
        except ProtocolError:
            pass


def test_requests():
    r = protocol.decode_request(protocol.encode_request("replay", 5, session="s-1", from_seq=3, to_seq=9))
    assert r == {"op": "replay", "id": 5, "session": "s-1", "from_seq": 3, "to_seq": 9}
    with pytest.raises(ProtocolError, match="to_seq < from_seq"):
        protocol.decode_request(protocol.encode_request("replay", 5, session="s-1", from_seq=9, to_seq=3))
    with pytest.raises(ProtocolError, match="op"):
        protocol.decode_request(protocol.encode_request("shutdown", 1))
    bad = [msgpack.packb({"schema": [3, 1], "op": "clock", "id": 1})]
    with pytest.raises(SchemaError, match="3.1"):
        protocol.decode_request(bad)


def test_command_validation():
    ok = protocol.validate_command({"type": "mark", "cmd_id": "c1", "assessor_id": "a1",
                                    "competence": "C3", "kind": "counter"})
    assert ok["mark_id"] == "c1" and ok["text"] == "" and ok["t_ns"] == 0
    with pytest.raises(ProtocolError, match="competence"):
        protocol.validate_command({**ok, "competence": "X9"})
    with pytest.raises(ProtocolError, match="text"):
        protocol.validate_command({**ok, "text": "x" * 2001})
    with pytest.raises(ProtocolError, match="assessor_id"):
        protocol.validate_command({**ok, "assessor_id": "<script>"})
    c = protocol.validate_command({"type": "contact", "cmd_id": "c2", "assessor_id": "a1",
                                   "action": "start", "kind": "phone"})
    assert c["contact_ref"] == ""
    with pytest.raises(ProtocolError, match="action"):
        protocol.validate_command({"type": "exam", "cmd_id": "c3", "assessor_id": "a1", "action": "pause"})


def test_replay_payload_round_trip_and_checks():
    body = msgpack.packb({"x": 1})
    payload = protocol.encode_replay_payload([(1, "summary", 10, 20, body), (2, "health", 11, 21, body)])
    msgs = protocol.decode_replay_payload("st", "s", payload)
    assert [m.seq for m in msgs] == [1, 2] and msgs[1].kind == "health" and msgs[0].data == {"x": 1}
    with pytest.raises(ProtocolError):
        protocol.decode_replay_payload("st", "s", msgpack.packb([[1, "summary", 10, 20, "notbytes"]]))
    with pytest.raises(ProtocolError):
        protocol.decode_replay_payload("st", "s", msgpack.packb([[1, "summary", 10, 20, b"\x01"]]))


def test_error_reply_carries_message():
    h, payload = protocol.decode_reply(protocol.encode_error("replay", 4, "unknown_session", "gone"))
    assert h["ok"] is False and h["error"] == "gone" and payload is None
