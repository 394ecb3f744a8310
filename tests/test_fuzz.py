"""Property-based fuzzing (hypothesis) of what reads untrusted or damaged input (issue 7):

- the configuration loader: random TOML documents shaped like the schema (known and unknown
  sections/keys, values of every type and range) and random text/bytes -> a ``Config`` or
  ``ConfigError``, nothing else;
- the message decoder (``station.protocol``): random frames and mutated valid messages ->
  ``ProtocolError`` (``SchemaError`` included) or a checked message;
- the batch codec and the journal reader: ``decode_batch`` on random and mutated bytes ->
  ``FormatError``; random files and byte-mutated real journals opened, verified and read ->
  ``JournalError`` or data, and ``verify()`` reports any change it cannot prove harmless.

Example counts are set to keep the file under ~30 s on 2 cores; raise them with
``HYPOTHESIS_PROFILE=deep`` (registered below) for a longer campaign.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from station import config, protocol
from station.config import ConfigError
from station.config_schema import SCHEMA, Field
from station.errors import JournalError
from station.events import Batch, FormatError, KeyEvent, MouseBin, SpeechFrame, decode_batch, encode_batch
from station.recorder.journal import Journal, SessionHeader, new_session_id

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ----------------------------------------------------------------------------- config
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)                      # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


scalars = st.one_of(st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["tcp://*:5556", "crm|chat", "([", "", "keep", "hash"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def config_docs(draw) -> str:
    sections = list(SCHEMA) + ["nosuch"]
    lines = []
    for section in draw(st.lists(st.sampled_from(sections), max_size=4, unique=True)):
        fields = SCHEMA.get(section, {})
        keys = [k for k, f in fields.items() if isinstance(f, Field)] + ["mystery"]
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
            lines.append(f"{json.dumps(key)} = {_toml_value(draw(values))}")
    if draw(st.booleans()):
        cat = draw(st.sampled_from(["crm", "chat", "sales", 5]))
        lines.append("[[categories.rule]]")
        lines.append(f"category = {_toml_value(cat)}")
        for k in draw(st.lists(st.sampled_from(["class", "title", "process", "extra"]), max_size=4, unique=True)):
            lines.append(f"{k} = {_toml_value(draw(st.sampled_from(['', 'crm', '([', 'a|b'])))}")
    return "\n".join(lines) + "\n"


def _load(tmp_path: Path, data: bytes):
    p = tmp_path / "fuzz.toml"
    p.write_bytes(data)
    try:
        return config.load([p], system=False)
    except ConfigError as e:
        msg = str(e)
        assert str(p) in msg and "\n" not in msg.strip(), msg     # one line naming the file
        return None


@given(doc=config_docs())
def test_config_loader_on_schema_shaped_documents(tmp_path, doc):
    cfg = _load(tmp_path, doc.encode())
    if cfg is not None:
        assert cfg.station.id and cfg.journal.commit_interval_ms <= 1000


@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_config_loader_on_random_bytes(tmp_path, data):
    _load(tmp_path, data)


# ----------------------------------------------------------------------------- protocol
frames_st = st.lists(st.binary(max_size=200), max_size=4)


@given(frames=frames_st)
def test_protocol_decoders_on_random_frames(frames):
    for fn in (protocol.decode_live, protocol.decode_request, protocol.decode_reply):
        try:
            fn(frames)
        except protocol.ProtocolError:
            pass
    for b in frames:
        try:
            protocol.decode_body(b)
        except protocol.ProtocolError:
            pass
        try:
            protocol.decode_replay_payload("st-1", "s-1", b)
        except protocol.ProtocolError:
            pass


header_values = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.text(max_size=20),
                          st.binary(max_size=10), st.lists(st.integers(-3, 3), max_size=3), st.floats())


@given(field=st.sampled_from(["schema", "station", "session", "seq", "kind", "t_ns", "wall_ns", "op", "id",
                              "from_seq", "to_seq", "cmd", "ok", "error"]),
       value=header_values, drop=st.booleans())
def test_protocol_decoders_on_mutated_valid_messages(field, value, drop):
    live = protocol.encode_live("st-1", "st-1-s", 7, "summary", 5, 6, msgpack.packb({"a": 1}))
    reqs = [protocol.encode_request("replay", 3, session="st-1-s", from_seq=1, to_seq=9),
            protocol.encode_request("command", 4, cmd={"type": "mark", "cmd_id": "c1", "assessor_id": "a"}),
            protocol.encode_request("snapshot", 5)]
    for frames, fn, idx in [(live, protocol.decode_live, 1)] + [(r, protocol.decode_request, 0) for r in reqs]:
        h = msgpack.unpackb(frames[idx], raw=False)
        if drop:
            h.pop(field, None)
        else:
            h[field] = value
        mutated = list(frames)
        mutated[idx] = msgpack.packb(h, use_bin_type=True)
        try:
            out = fn(mutated)
        except protocol.ProtocolError:
            continue
        if fn is protocol.decode_live:      # what passes is what the checks promise
            assert isinstance(out.seq, int) and 0 <= out.seq and isinstance(out.data, dict)


# ----------------------------------------------------------------------------- batches
def _sample_batch() -> Batch:
    evs = [SpeechFrame(1_000_000_000 + i * 20_000_000, i % 2, 20_000_000, -300, True, bool(i % 3)) for i in range(40)]
    evs += [MouseBin(1_000_000_000 + i * 10_000_000, 3, 12) for i in range(30)]
    evs += [KeyEvent(1_005_000_000 + i * 50_000_000, 1, i % 2 == 0) for i in range(10)]
    return Batch.from_events(2_000_000_000, evs, watermark_ns=1_900_000_000)


SAMPLE = encode_batch(_sample_batch())


@given(data=st.binary(max_size=600))
def test_decode_batch_on_random_bytes(data):
    try:
        decode_batch(data)
    except FormatError:
        pass


@given(pos=st.integers(0, len(SAMPLE) - 1), byte=st.integers(0, 255), cut=st.booleans())
def test_decode_batch_on_mutated_batches(pos, byte, cut):
    data = SAMPLE[:pos] if cut else SAMPLE[:pos] + bytes([byte]) + SAMPLE[pos + 1:]
    try:
        b = decode_batch(data)
    except FormatError:
        return
    assert isinstance(b, Batch)


@given(obj=values)
def test_decode_batch_on_wellformed_containers_with_wrong_content(obj):
    import zlib
    try:
        decode_batch(zlib.compress(msgpack.packb({"v": 1, "t": 5, "w": 4, "s": obj}, use_bin_type=True)))
    except FormatError:
        pass


# ----------------------------------------------------------------------------- journal
@pytest.fixture(scope="module")
def journal_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("journal")
    cfg = config.load(system=False)
    h = SessionHeader(station_id="fz-1", session_id=new_session_id("fz-1", 1_700_000_000_000_000_000),
                      created_mono_ns=1, created_wall_ns=1_700_000_000_000_000_000, boot_id="b",
                      software_version="0", config_hash=cfg.hash, config=cfg.as_dict())
    j = Journal.create(d, h)
    for i in range(12):
        j.append_batch(_sample_batch())
        j.append_message("summary", i, msgpack.packb({"i": i}))
        j.commit()
    j.close()
    return j.path


def _read_all(path: Path) -> list[str]:
    """Everything a reader does with a journal; JournalError is the documented failure."""
    try:
        with Journal.open(path) as j:
            problems = j.verify()
            for _ in j.iter_batches():
                pass
            n = sum(1 for _ in j.iter_messages())
            j.chain_heads()
            j.last_message("summary")
            assert n >= 0
            return problems
    except JournalError as e:
        return [str(e)]


@settings(max_examples=60)
@given(data=st.binary(max_size=5000))
def test_journal_reader_on_random_files(tmp_path, data):
    p = tmp_path / "random.journal"
    p.write_bytes(data)
    for side in ("-wal", "-shm"):
        Path(str(p) + side).unlink(missing_ok=True)
    assert _read_all(p)                       # never a valid journal, always a clear problem


@settings(max_examples=80)
@given(frac=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255), truncate=st.booleans())
def test_journal_reader_on_mutated_journals(tmp_path, journal_file, frac, byte, truncate):
    raw = journal_file.read_bytes()
    pos = int(frac * len(raw))
    mutated = raw[:pos] if truncate else raw[:pos] + bytes([byte]) + raw[pos + 1:]
    assume(mutated != raw)
    p = tmp_path / "mutated.journal"
    p.write_bytes(mutated)
    for side in ("-wal", "-shm"):
        Path(str(p) + side).unlink(missing_ok=True)
    problems = _read_all(p)
    if not problems:
        # an undetected change may only touch bytes no reader uses (free space, unused header
        # fields): the content must be exactly the original's
        with Journal.open(journal_file) as a, Journal.open(p) as b:
            assert [m.body for m in a.iter_messages()] == [m.body for m in b.iter_messages()]
            assert [encode_batch(x) for x in a.iter_batches()] == [encode_batch(x) for x in b.iter_batches()]


SQL_EDITS = st.sampled_from([("messages", "body"), ("messages", "t_ns"), ("messages", "chain"),
                             ("blocks", "payload"), ("blocks", "t_ns"), ("blocks", "chain")])


@settings(max_examples=40)
@given(edit=SQL_EDITS, value=st.one_of(st.binary(max_size=40), st.none()))
def test_journal_reader_on_sql_level_edits(tmp_path, journal_file, edit, value):
    _sql_edit(tmp_path, journal_file, *edit, value)


@pytest.mark.parametrize("edit,value", [(("messages", "body"), -1), (("messages", "body"), "x")])
def test_journal_reader_on_sql_level_type_confusion(tmp_path, journal_file, edit, value):
    """Found by the fuzzer above when integers/text were allowed as values."""
    _sql_edit(tmp_path, journal_file, *edit, value)


@pytest.mark.parametrize("edit,value", [(("messages", "body"), 5), (("blocks", "payload"), 7),
                                        (("blocks", "payload"), "x"), (("messages", "t_ns"), "x")])
def test_journal_reader_on_sql_level_type_changes_that_are_reported(tmp_path, journal_file, edit, value):
    _sql_edit(tmp_path, journal_file, *edit, value)


def _sql_edit(tmp_path, journal_file, table, col, value):
    p = tmp_path / "edited.journal"
    shutil.copy(journal_file, p)
    con = sqlite3.connect(p)
    key = "seq" if table == "messages" else "idx"
    before = con.execute(f"SELECT {col} FROM {table} WHERE {key} = 5").fetchone()[0]
    try:
        con.execute(f"UPDATE {table} SET {col} = ? WHERE {key} = 5", (value,))
        con.commit()
    except sqlite3.IntegrityError:          # NOT NULL
        con.close()
        return
    con.close()
    if value == before:
        return
    assert _read_all(p), "an edited row must be reported"
