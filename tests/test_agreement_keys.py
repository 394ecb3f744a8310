"""Cohen's kappa, the centre's agreement (`station console stats`), password hashes, key bindings
(`station keys authorize --assessor-id`), and old journals without the key column."""

from __future__ import annotations

import json
import subprocess
import zlib

import msgpack
import pytest

from station import keys, protocol
from station.competences import cohen_kappa, exam_agreement, proven
from station.console import passwords
from station.console.store import ConsoleStore
from station.errors import UserError
from station.events import AssessorMark, Batch, ContactMarker, ExamControl, decode_batch, encode_batch
from tests.support import REPO, station_cmd

S = 1_000_000_000
O, N = "observed", "not_observed"


def test_cohen_kappa_known_values():
    assert cohen_kappa([(O, O), (O, N), (N, N), (N, N)])["kappa"] == 0.5
    assert cohen_kappa([(O, O), (N, N)])["kappa"] == 1.0
    assert cohen_kappa([(O, N), (N, O)])["kappa"] == -1.0
    undefined = cohen_kappa([(O, O)] * 19)     # one verdict throughout: agreement 1, kappa undefined
    assert undefined["observed_agreement"] == 1.0 and undefined["kappa"] is None
    assert cohen_kappa([])["n"] == 0 and cohen_kappa([])["kappa"] is None
    ag = exam_agreement({"C1": {"a": {"verdict": O}, "b": {"verdict": O}}, "C2": {"a": {"verdict": O}, "b": {"verdict": N}},
                         "C3": {"a": {"verdict": N}}})
    assert ag["raters"] == ["a", "b"] and ag["n"] == 2 and ag["disagreements"] == ["C2"]


def test_proven_rule_keys():
    two = {"a": {"verdict": O, "key_fp": "k1"}, "b": {"verdict": O, "key_fp": "k2"}}
    assert proven(two)
    assert not proven({"a": {"verdict": O, "key_fp": "k1"}, "b": {"verdict": O, "key_fp": "k1"}})
    assert not proven({"a": {"verdict": O, "key_fp": ""}, "b": {"verdict": O, "key_fp": ""}})
    assert not proven({"a": O, "b": O})
    split = {"a": {"verdict": O, "key_fp": "k1"}, "b": {"verdict": N, "key_fp": "k2"}}
    assert not proven(split)
    assert not proven(split, {"a": {"verdict": O, "key_fp": "k1"}})
    assert not proven(split, {"a": {"verdict": O, "key_fp": "k1"}, "c": {"verdict": O, "key_fp": "k3"}})  # b's key missing
    assert proven(split, {"a": {"verdict": O, "key_fp": "k1"}, "b": {"verdict": O, "key_fp": "k2"}})
    assert not proven(two, {"a": {"verdict": N, "key_fp": "k1"}, "b": {"verdict": N, "key_fp": "k2"}})


def test_password_hashes():
    h = passwords.hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct" not in h
    assert passwords.verify("correct horse", h) and not passwords.verify("wrong", h)
    assert passwords.hash_password("correct horse") != h            # salted
    assert not passwords.verify("x", "plain-text") and not passwords.verify("x", "scrypt$1$2$3$!!$!!")
    with pytest.raises(ValueError):
        passwords.check_format("md5$abc")


def test_key_binding_and_its_refusals(tmp_path):
    for n in ("anna", "anna2", "bert"):
        keys.generate(tmp_path / "k", n)
    allow = tmp_path / "allow"
    keys.authorize(tmp_path / "k" / "anna.key", allow, assessor_id="anna", assessor_name="Anna A.")
    keys.authorize(tmp_path / "k" / "bert.key", allow)                       # may follow only
    with pytest.raises(UserError, match="already bound"):
        keys.authorize(tmp_path / "k" / "anna2.key", allow, assessor_id="anna")
    al = keys.AllowList(allow)
    pa = keys.load_public(tmp_path / "k" / "anna.key")
    pb = keys.load_public(tmp_path / "k" / "bert.key")
    assert al.assessor_of(pa) == ("anna", "Anna A.") and al.assessor_of(pb) is None
    assert len(keys.fingerprint(pa)) == 32 and keys.fingerprint(pa) != keys.fingerprint(pb)
    # a binding file copied next to another key binds nothing
    (allow / "bert.assessor").write_text((allow / "anna.assessor").read_text())
    assert keys.AllowList(allow).assessor_of(pb) is None
    # the command line: binding printed with the fingerprint; --assessor-name alone is a usage error
    p = subprocess.run(station_cmd("keys", "authorize", str(tmp_path / "k" / "anna2.key"), "--dir", str(tmp_path / "a2"),
                                   "--assessor-id", "carla"), capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "for assessor carla" in p.stdout and "fingerprint" in p.stdout
    p = subprocess.run(station_cmd("keys", "authorize", str(tmp_path / "k" / "anna2.key"), "--dir", str(tmp_path / "a3"),
                                   "--assessor-name", "X"), capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_batches_written_before_the_key_column_decode_with_an_empty_key():
    evs = [AssessorMark(1, "a", "A", "C7", O, "t", "m1", "fp"), ContactMarker(2, "start", "phone", "r", "a", "fp"),
           ExamControl(3, "start", "", "", "a", "fp")]
    packed = msgpack.unpackb(zlib.decompress(encode_batch(Batch.from_events(5, evs))), raw=False)
    for cols in packed["s"].values():
        del cols["key_fp"]                                           # the format as journaled before
    old = decode_batch(zlib.compress(msgpack.packb(packed, use_bin_type=True)))
    got = list(old.events())
    assert [e.key_fp for e in got] == ["", "", ""] and got[0].text == "t" and got[1].assessor_id == "a"


def test_console_stats_gives_each_exam_and_the_centre_kappa(tmp_path):
    store = ConsoleStore(tmp_path / "console.sqlite")
    verdicts = {"sess-1": [("C1", O, O), ("C2", O, N), ("C3", N, N), ("C4", N, N)],
                "sess-2": [("C1", O, O), ("C2", N, N)]}
    msgs = []
    for session, rows in verdicts.items():
        seq = 0
        for cid, va, vb in rows:
            for who, v in (("anna", va), ("bert", vb)):
                seq += 1
                body = {"type": "mark", "mark_id": f"{who}-{cid}", "assessor_id": who, "assessor_name": who,
                        "competence": cid, "kind": v, "text": "", "t_ns": seq * S, "key_fp": f"fp-{who}"}
                raw = protocol.packb(body)
                msgs.append(protocol.Message("st-1", session, seq, "mark", seq * S, seq * S, raw, data=body))
        store.save_session("st-1", session, seq + 1, seq)
    store.add(msgs, 0)
    store.commit()
    store.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[console]\nstore = "{tmp_path / "console.sqlite"}"\n')
    p = subprocess.run(station_cmd("--config", str(cfg), "console", "stats", "--json"), capture_output=True, text=True,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert [e["kappa"] for e in res["exams"]] == [0.5, 1.0]
    assert res["centre"]["n"] == 6 and res["centre"]["agree"] == 5
    assert res["centre"]["kappa"] == cohen_kappa([(O, O), (O, N), (N, N), (N, N), (O, O), (N, N)])["kappa"]
    p = subprocess.run(station_cmd("--config", str(cfg), "console", "stats"), capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "centre: 2 exams" in p.stdout
    missing = tmp_path / "m.toml"
    missing.write_text(f'[console]\nstore = "{tmp_path / "none.sqlite"}"\n')
    p = subprocess.run(station_cmd("--config", str(missing), "console", "stats"), capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "no console store" in p.stderr and "Traceback" not in p.stderr
