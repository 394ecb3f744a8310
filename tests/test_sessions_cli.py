"""``station sessions`` run as a real process against real journals in a temporary data dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from station.recorder.journal import Journal, list_sessions, sessions_dir
from tests.support import REPO, station_cmd
from tests.test_journal import BAD, fingerprint, header_for, key_batch, make_session, tamper


def run(*args: str, data_dir: Path | None = None, stdin: str = "", config: Path | None = None):
    argv = ["--no-system-config"]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["sessions", *args]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if k != "STATION_DATA_DIR"}
    return subprocess.run(station_cmd(*argv), cwd=REPO, input=stdin, capture_output=True,
                          text=True, timeout=60, env=env)


def one_line_error(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("station: "), r.stderr
    return lines[0]


def sid(path: Path) -> str:
    return path.name[: -len(".journal")]


def test_list_table_and_json(tmp_path):
    r = run("list", data_dir=tmp_path)
    assert r.returncode == 0 and "no sessions" in r.stdout
    old = make_session(tmp_path, n_messages=7, age_days=3)
    new = make_session(tmp_path, n_messages=2, ended=False)
    (sessions_dir(tmp_path) / "junk.journal").write_bytes(b"\x00" * 3000)
    r = run("list", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "CREATED", "STATE", "SIZE", "MESSAGES"]
    body = [l for l in lines[1:] if not l.startswith("junk")]
    assert body[0].startswith(sid(old)) and "ended" in body[0] and body[0].split()[-1] == "7"
    assert body[1].startswith(sid(new)) and " open " in body[1] and body[1].split()[-1] == "2"
    assert any(l.startswith("junk") and "unreadable" in l for l in lines)
    # the option also works before the action
    r2 = subprocess.run(station_cmd("--no-system-config", "sessions", "--data-dir", str(tmp_path), "list",
                                    "--json"), cwd=REPO, capture_output=True, text=True, timeout=60)
    data = json.loads(r2.stdout)
    by_id = {d["session_id"]: d for d in data}
    assert by_id[sid(old)]["state"] == "ended" and by_id[sid(old)]["last_seq"] == 7
    assert by_id[sid(new)]["state"] == "open" and by_id[sid(new)]["blocks"] == 5
    assert by_id["junk"]["state"] == "unreadable" and by_id["junk"]["problem"]


def test_export_copy_verified_and_never_overwrites(tmp_path):
    path = make_session(tmp_path, n_blocks=20, n_messages=9)
    out = tmp_path / "copy.journal"
    r = run("export", sid(path)[:12], "--out", str(out), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout
    with Journal.open(out) as c, Journal.open(path) as o:
        assert c.verify() == [] and c.header == o.header
        assert list(c.iter_batches()) == list(o.iter_batches())
        assert list(c.iter_messages()) == list(o.iter_messages())
        assert c.ended
    assert not Path(str(out) + "-wal").exists()  # a single self-contained file
    out.write_bytes(b"precious")
    before = fingerprint(out)
    line = one_line_error(run("export", sid(path), "--out", str(out), data_dir=tmp_path), 1)
    assert "--force" in line and fingerprint(out) == before
    r = run("export", sid(path), "--out", str(out), "--force", data_dir=tmp_path)
    assert r.returncode == 0 and Journal.open(out).verify() == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")] == []


def test_export_jsonl_archive(tmp_path):
    path = make_session(tmp_path, n_blocks=4, n_messages=3)
    out = tmp_path / "a.jsonl"
    r = run("export", str(path), "--out", str(out), "--jsonl", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert recs[0]["type"] == "header" and recs[0]["session_id"] == sid(path) and recs[0]["jsonl_format"] == 1
    events = [r for r in recs if r["type"] == "event"]
    assert len(events) == 8
    assert events[0] == {"type": "event", "block": 0, "stream": "key", "t_ns": key_batch(0).streams["key"]["t_ns"][0],
                         "key_class": 1, "down": True, "repeat": False, "injected": False, "char": ""}
    assert [r["t_ns"] for r in recs if r["type"] == "batch"] == [key_batch(i).t_ns for i in range(4)]
    msgs = [r for r in recs if r["type"] == "message"]
    assert [(m["seq"], m["body_text"]) for m in msgs] == [(i + 1, f'{{"n": {i}}}') for i in range(3)]
    assert {"type": "meta", "key": "ended_ns", "value": str(10**12 + 10**9)} in recs
    assert recs[-1]["type"] == "end" and recs[-1]["blocks"] == 4 and recs[-1]["problems"] == []


def test_delete_confirmation_open_sessions_and_recording(tmp_path):
    ended = make_session(tmp_path)
    still_open = make_session(tmp_path, ended=False)
    # no confirmation -> nothing deleted
    r = run("delete", sid(ended), data_dir=tmp_path, stdin="n\n")
    assert r.returncode == 1 and ended.exists()
    r = run("delete", sid(ended), data_dir=tmp_path, stdin="y\n")
    assert r.returncode == 0 and not ended.exists()
    assert not any(p.name.startswith(sid(ended)) for p in sessions_dir(tmp_path).iterdir())
    # an open session needs --force
    line = one_line_error(run("delete", sid(still_open), "--yes", data_dir=tmp_path), 1)
    assert "still open" in line and still_open.exists()
    # a session being recorded is refused even with --force
    w = Journal.open(still_open, writable=True)
    try:
        line = one_line_error(run("delete", sid(still_open), "--yes", "--force", data_dir=tmp_path), 1)
        assert "being recorded" in line and still_open.exists()
    finally:
        w.close()
    r = run("delete", sid(still_open), "--yes", "--force", data_dir=tmp_path)
    assert r.returncode == 0 and not still_open.exists()
    one_line_error(run("delete", "nothing-like-this", "--yes", data_dir=tmp_path), 3)


def test_prune_respects_retention_and_dry_run(tmp_path):
    cfg = tmp_path / "retention.toml"
    cfg.write_text("[station]\nretention_days = 30\n")
    data = tmp_path / "data"
    old_ended = make_session(data, age_days=45)
    old_open = make_session(data, age_days=45, ended=False)
    new_ended = make_session(data, age_days=5)
    r = run("prune", "--dry-run", data_dir=data, config=cfg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith("would delete")]
    assert sid(old_ended) in r.stdout and sid(old_open) not in r.stdout and sid(new_ended) not in r.stdout
    assert old_ended.exists()
    r = run("prune", data_dir=data, config=cfg)
    assert r.returncode == 0 and f"deleted {sid(old_ended)}" in r.stdout
    assert {s.session_id for s in list_sessions(data)} == {sid(old_open), sid(new_ended)}
    r = run("prune", data_dir=data, config=cfg)
    assert "nothing to prune" in r.stdout


def test_verify_intact_and_tampered(tmp_path):
    path = make_session(tmp_path)
    r = run("verify", sid(path), data_dir=tmp_path)
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr
    tamper(path, "DELETE FROM messages WHERE seq = 3")
    before = fingerprint(path)
    r = run("verify", sid(path), data_dir=tmp_path)
    assert r.returncode == 3 and "message seq gap" in r.stdout
    assert fingerprint(path) == before


@pytest.mark.parametrize("case", ["missing", "random", "truncated", "newer"])
def test_bad_journals_one_line_exit_3_unchanged(tmp_path, case):
    make, pattern = BAD[case]
    path = make(tmp_path)
    before = fingerprint(path) if path.exists() else None
    out = tmp_path / "out.journal"
    for args in (["verify", str(path)], ["export", str(path), "--out", str(out)],
                 ["export", str(path), "--out", str(out), "--jsonl"]):
        line = one_line_error(run(*args, data_dir=tmp_path), 3)
        assert re.search(pattern, line), line
        if before is not None:
            assert fingerprint(path) == before
        assert not out.exists()
    if case == "newer":
        assert "newer version" in line


def test_create_via_api_then_list_shows_recording(tmp_path):
    j = Journal.create(tmp_path, header_for())
    try:
        j.append_message("beat", 1, b"")
        j.commit()
        data = json.loads(run("list", "--json", data_dir=tmp_path).stdout)
        assert data[0]["state"] == "recording" and data[0]["last_seq"] == 1
    finally:
        j.close()
