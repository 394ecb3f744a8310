"""The record is anchored where the candidate is not (station/anchors.py, docs/journal.md).

A real demo station (CURVE) and a real web console: the console receives the journal's chain
heads in every health beat, and at exam end a signed anchor it countersigns. Then, on copies of
the station's data directory, an attacker who knows the journal format cuts a journal to a
prefix and resets its heads, rewrites a row and re-chains everything after it, or deletes a
session: each journal still verifies on its own (that is the weakness), and each is caught by
``station sessions verify --against`` the console store (or an exported anchor file), and
``station report --against`` says so. An untouched session verifies.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from station import anchors
from station.recorder import journal as jmod
from station.recorder.journal import Journal, list_sessions
from tests.support import require
from tests.web_harness import CHROMIUM, REPO, DemoStation, WebConsole, assessor_key, station_cmd, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(300)]


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(station_cmd(*argv), capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    require(CHROMIUM)
    root = tmp_path_factory.mktemp("anchors")
    st = DemoStation(root, "st-1", seed=5, speed=10.0, assessors=[("anna", "Anna A.")])
    con = WebConsole(root, "anna", [st], "Anna A.", secret_key_file=assessor_key(root, "anna"))
    try:
        st.start()
        con.start()
        wait_for(lambda: con.get("/api/room")["stations"][0]["state"] == "connected", 30, "connected")
        first = con.get("/api/room")["stations"][0]["session"]
        assert con.post("/api/station/st-1/exam", {"action": "assign", "candidate_id": "C-1", "candidate_name": "N"})[0] == 200
        assert con.post("/api/station/st-1/exam", {"action": "start"})[0] == 200
        assert con.post("/api/station/st-1/mark", {"competence": "C7", "kind": "observed", "text": "original note"})[0] == 200
        wait_for(lambda: any(m["text"] == "original note" for m in con.get("/api/station/st-1")["marks"]), 15, "mark")
        assert con.post("/api/station/st-1/exam", {"action": "end"})[0] == 200
        # the station ends the session and publishes its signed anchor; the console countersigns it
        rep = wait_for(lambda: (lambda r: r if (r["anchor"] or {}).get("final") and r["anchor"]["final"]["countersigned_by"]
                                else None)(con.get(f"/report/st-1.json?session={first}")), 30, "countersigned anchor")
        wait_for(lambda: con.get("/api/room")["stations"][0]["session"] not in (None, first), 15, "second session")
        second = con.get("/api/room")["stations"][0]["session"]
        wait_for(lambda: (con.get(f"/report/st-1.json?session={second}")["anchor"]["latest"] or {}).get("blocks", 0) > 5,
                 30, "heads of the second session at the console")
        html = con.get(f"/report/st-1.html?session={first}")
    finally:
        st.stop()
        con.stop()
    exported = root / "anchors.json"
    p = run("--config", str(con.cfg), "console", "anchors", "--out", str(exported))
    assert p.returncode == 0, p.stderr
    yield {"root": root, "data": st.root / "data", "store": con.root / "console.sqlite", "first": first,
           "second": second, "report": rep, "html": html, "exported": exported, "cfg": st.cfg}


def copy_data(exam, name: str) -> Path:
    d = exam["root"] / name
    shutil.copytree(exam["data"], d)
    return d


def journal_of(data: Path, session: str) -> Path:
    return next(s.path for s in list_sessions(data) if s.session_id == session)


def set_heads(db: sqlite3.Connection) -> None:
    """What an attacker does after editing: write heads that match the (new) ends of the tables."""
    nb, cb = db.execute("SELECT idx + 1, chain FROM blocks ORDER BY idx DESC LIMIT 1").fetchone()
    sm, cm = db.execute("SELECT seq, chain FROM messages ORDER BY seq DESC LIMIT 1").fetchone()
    db.execute("UPDATE meta SET value = ? WHERE key = 'journal.head.blocks'", (f"{nb}:{bytes(cb).hex()}",))
    db.execute("UPDATE meta SET value = ? WHERE key = 'journal.head.messages'", (f"{sm}:{bytes(cm).hex()}",))


def verify(data: Path, *extra) -> subprocess.CompletedProcess:
    return run("sessions", "verify", "--data-dir", str(data), *extra)


def test_the_console_holds_heads_and_a_countersigned_signed_anchor(exam):
    a = exam["report"]["anchor"]
    assert a["heads_received"] >= 3 and a["final"]["station_signature_ok"] is True
    assert a["final"]["countersigned_by"] == ["anna"]
    found = anchors.load(exam["store"])[exam["first"]]
    rec = found["final"][-1]
    assert anchors.anchor_signature_ok(rec["anchor"]) and anchors.countersignature_ok(rec)
    forged = dict(rec["anchor"], blocks=rec["anchor"]["blocks"] - 1)
    assert not anchors.anchor_signature_ok(forged)
    assert "countersigned by anna" in exam["html"] and "signature valid" in exam["html"]
    with Journal.open(journal_of(exam["data"], exam["first"])) as j:     # the anchor covers the whole session
        assert rec["anchor"]["last_seq"] == j.last_seq() - 1 and rec["anchor"]["blocks"] == j.block_count()


def test_untouched_sessions_verify_against_the_store_and_the_exported_file(exam):
    for src in (exam["store"], exam["exported"]):
        p = verify(exam["data"], "--against", str(src))
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.count("intact") == 2 and "agrees with" in p.stdout


def test_a_journal_cut_to_a_prefix_with_its_heads_reset(exam):
    data = copy_data(exam, "cut")
    path = journal_of(data, exam["first"])
    db = sqlite3.connect(path)
    nb = db.execute("SELECT count(*) FROM blocks").fetchone()[0]
    assert nb >= 4, nb
    db.execute("DELETE FROM blocks WHERE idx >= ?", (nb - nb // 3,))          # the last third
    db.execute("DELETE FROM messages WHERE seq > (SELECT max(seq) - 6 FROM messages)")
    set_heads(db)
    db.commit()
    db.close()
    with Journal.open(path) as j:
        assert j.verify() == []                     # on its own the cut journal looks intact
    p = verify(data, exam["first"])
    assert p.returncode == 0 and "intact" in p.stdout
    p = verify(data, exam["first"], "--against", str(exam["store"]))
    assert p.returncode == 3 and "truncated" in p.stdout, p.stdout
    out = exam["root"] / "cut-report"
    p = run("--config", str(exam["cfg"]), "report", exam["first"], "--data-dir", str(data), "--against",
            str(exam["store"]), "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["integrity"]["ok"] is False and any("truncated" in x for x in rep["integrity"]["anchor_problems"])
    html = (out / "report.html").read_text()
    assert "DIFFERS from" in html and "truncated" in html
    p = verify(data, "--against", str(exam["store"]))    # the other session is still fine
    assert p.returncode == 3 and f"{exam['second']}: intact" in p.stdout


def test_a_row_rewritten_and_rechained_consistently(exam):
    data = copy_data(exam, "rewrite")
    path = journal_of(data, exam["first"])
    db = sqlite3.connect(path)
    (root_json,) = db.execute("SELECT value FROM meta WHERE key = 'journal.header'").fetchone()
    rows = db.execute("SELECT seq, kind, t_ns, body FROM messages ORDER BY seq").fetchall()
    target = next(r[0] for r in rows if r[1] == "mark" and b"original note" in bytes(r[3]))
    prev = jmod._root(root_json)
    for seq, kind, t_ns, body in rows:
        body = bytes(body)
        if seq == target:
            body = body.replace(b"original note", b"forged note!!")
            db.execute("UPDATE messages SET body = ? WHERE seq = ?", (body, seq))
        prev = jmod._message_chain(prev, seq, kind, t_ns, body)
        if seq >= target:
            db.execute("UPDATE messages SET chain = ? WHERE seq = ?", (prev, seq))
    set_heads(db)
    db.commit()
    db.close()
    with Journal.open(path) as j:
        assert j.verify() == []
        assert any(b"forged note!!" in m.body for m in j.iter_messages(kinds=["mark"]))
    p = verify(data, exam["first"], "--against", str(exam["exported"]))
    assert p.returncode == 3 and "rewritten" in p.stdout, p.stdout
    out = exam["root"] / "rewrite-report"
    p = run("--config", str(exam["cfg"]), "report", exam["first"], "--data-dir", str(data), "--against",
            str(exam["exported"]), "--out", str(out))
    assert p.returncode == 1 and "rewritten" in p.stdout, p.stdout + p.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["integrity"]["ok"] is False and "rewritten" in (out / "report.html").read_text()


def test_a_deleted_session_is_missed(exam):
    data = copy_data(exam, "deleted")
    path = journal_of(data, exam["first"])
    for f in [path, *jmod.side_files(path)]:
        f.unlink(missing_ok=True)
    p = verify(data, "--against", str(exam["store"]))
    assert p.returncode == 3, p.stdout
    assert f"{exam['first']}: MISSING" in p.stdout and f"{exam['second']}: intact" in p.stdout
    p = verify(data)                                 # no session and no anchors: a usage error, not a traceback
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = verify(data, "--against", str(exam["root"] / "no-such-file"))
    assert p.returncode != 0 and "Traceback" not in p.stderr and "no-such-file" in p.stderr
