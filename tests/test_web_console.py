"""The assessor web console end to end: real stations, real sockets, real consoles, real chromium.

Three demo stations (``station run --sources scenario``, the whole agent) and one CURVE station
that has not authorised the consoles' key; two web consoles (assessors anna and bert) following
all four. Screenshots and the report PDF go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.support import require
from tests.web_harness import (
    ARTIFACTS,
    CHROMIUM,
    CurveStation,
    DemoStation,
    WebConsole,
    assessor_key,
    browser,
    page_errors,
    wait_for,
)

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(300)]
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"><b>bold</b>'


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    require(CHROMIUM)  # Debian's chromium (apt-get install -y chromium)
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("webroom")
    ARTIFACTS.mkdir(exist_ok=True)
    assessors = [("anna", "Anna A."), ("bert", "Bert B.")]
    demos = [DemoStation(root, f"st-{n}", seed=n, speed=10.0, assessors=assessors) for n in (1, 2, 3)]
    bad = CurveStation(root)    # has not authorised anna's and bert's keys
    procs = demos + [bad]
    cons = []
    try:
        for s in procs:
            s.start()
        a = WebConsole(root, "anna", procs, "Anna A.", secret_key_file=assessor_key(root, "anna"))
        b = WebConsole(root, "bert", procs, "Bert B.", secret_key_file=assessor_key(root, "bert"))
        cons = [a.start(), b.start()]
        def demos_connected(c):
            """True, or each demo card's (id, state, has a session) for the timeout's message."""
            cards = c.get("/api/room")["stations"][:3]
            ok = all(x["state"] == "connected" and x["session"] for x in cards)
            return True if ok else _NotYet((x["id"], x["state"], bool(x["session"])) for x in cards)

        for c in cons:
            # three demo stations, two consoles and their interpreters start at once: on a busy
            # 2-core machine that takes tens of seconds
            wait_for(lambda: demos_connected(c), 90, f"{c.name}: three demo stations connected", interval=0.5)
        yield {"demos": demos, "bad": bad, "a": a, "b": b, "root": root}
    finally:
        for c in cons:
            c.stop()
        for s in procs:
            s.stop()


class _NotYet(tuple):
    """A falsy value that still shows what was seen (wait_for prints the last value)."""

    def __bool__(self):
        return False


def card(console, sid):
    return next(c for c in console.get("/api/room")["stations"] if c["id"] == sid)


def test_room_view_live_updates_and_unauthorised_card(room):
    a = room["a"]
    with browser() as br:
        page = br.new_page(viewport={"width": 1400, "height": 900})
        errs = page_errors(page)
        page.goto(a.url + "/")
        page.wait_for_selector('.card[data-station="st-1"]')
        assert page.locator(".card").count() == 4
        # the page updates at least twice a second
        t0, n0 = time.monotonic(), int(page.get_attribute("body", "data-ticks"))
        page.wait_for_timeout(3000)
        rate = (int(page.get_attribute("body", "data-ticks")) - n0) / (time.monotonic() - t0)
        assert rate >= 2.0, rate
        # live data: the contact line of some card changes (durations advance, contacts come and go)
        before = [page.inner_text(f'.card[data-station="st-{n}"] [data-field=contact]') for n in (1, 2, 3)]
        page.wait_for_timeout(2500)
        after = [page.inner_text(f'.card[data-station="st-{n}"] [data-field=contact]') for n in (1, 2, 3)]
        assert before != after, before
        for n in (1, 2, 3):
            assert page.get_attribute(f'.card[data-station="st-{n}"]', "data-state") == "connected"
        # the station whose key is wrong shows as unauthorised (red), nothing crashed
        page.wait_for_selector('.card[data-station="st-badkey"][data-state="unauthorised"]', timeout=20000)
        assert "red" in page.get_attribute('.card[data-station="st-badkey"]', "class")
        assert "unauthorised" in page.inner_text('.card[data-station="st-badkey"]')
        page.screenshot(path=str(ARTIFACTS / "web-room.png"), full_page=True)
        assert not errs, errs
    assert a.proc.poll() is None


def test_exam_marks_counters_contact_and_report(room):
    a = room["a"]
    with browser() as br:
        page = br.new_page(viewport={"width": 1400, "height": 1000})
        errs = page_errors(page)
        # exam set-up: assign a candidate (with markup in the name) and start the exam
        page.goto(a.url + "/#/setup")
        row = page.locator('#setup tr[data-station="st-1"]')
        row.locator("input[name=candidate_id]").fill("CAND-0042")
        row.locator("input[name=candidate_name]").fill("Zoë <i>Tester</i>")
        row.get_by_role("button", name="Assign").click()
        page.wait_for_selector("#msg.ok")
        row.get_by_role("button", name="Start exam").click()
        wait_for(lambda: card(a, "st-1")["exam"]["started"] and card(a, "st-1")["candidate"]["id"] == "CAND-0042",
                 15, "exam assigned and started (journaled on the station, back through the stream)")
        wait_for(lambda: card(room["b"], "st-1")["candidate"]["name"] == "Zoë <i>Tester</i>", 15,
                 "the other console sees the candidate too")

        # station view: a mark with HTML/script in the note
        page.goto(a.url + "/#/station/st-1")
        page.wait_for_selector("#board table")
        page.select_option("#mark-form select[name=competence]", "C4")
        page.select_option("#mark-form select[name=kind]", "observed")
        page.fill("#mark-form textarea", XSS)
        page.click("#place-mark")
        # (the page's CSP forbids eval, so waits use locators, not wait_for_function)
        page.locator("#marks", has_text="window.__pwned = 1").wait_for(timeout=15000)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#marks b, #marks img, #board b, #board img").count() == 0
        # counters: one click and one keyboard shortcut
        page.click('button[data-counter="C1"]')
        page.locator("body").click(position={"x": 5, "y": 300})
        page.keyboard.press("2")
        wait_for(lambda: (lambda d: d["counters"]["C1"].get("anna", 0) >= 1 and d["counters"]["C2"].get("anna", 0) >= 1)(
            a.get("/api/station/st-1")), 15, "C1 and C2 counted")
        page.locator("[data-count=C2]", has_text=re.compile(r"^1")).wait_for(timeout=5000)
        marks = a.get("/api/station/st-1")["marks"]
        counters = [m for m in marks if m["kind"] == "counter"]
        assert {m["competence"] for m in counters} >= {"C1", "C2"}
        assert all(m["assessor_id"] == "anna" and m["assessor_name"] == "Anna A." and m["t_ns"] > 0 for m in counters)
        # contacts: start a chat, then end the current contact -> a closed assessor contact appears
        page.click('button[data-contact="start-chat"]')
        wait_for(lambda: "chat" in a.get("/api/station/st-1")["open_markers"], 15, "chat marker open")
        page.wait_for_timeout(1500)
        page.click("#end-contact")
        wait_for(lambda: any(c["source"] == "assessor" and c["kind"] == "chat"
                             for c in a.get("/api/station/st-1")["contact_list"]), 30, "assessor chat contact closed")
        page.wait_for_selector("#tl-session svg rect[data-lane=contacts]", timeout=10000)  # whole-session timeline
        page.wait_for_selector("#tl-last5 svg rect[data-lane=agent]", timeout=10000)
        page.screenshot(path=str(ARTIFACTS / "web-station.png"), full_page=True)

        # the report: HTML (printable, escaped), PDF through chromium's print, JSON, CSV
        with page.context.expect_page() as popup:
            page.click("#report-html")
        rp = popup.value
        rp.wait_for_load_state()
        text = rp.inner_text("body")
        assert "CAND-0042" in text and "Zoë <i>Tester</i>" in text
        assert "window.__pwned = 1" in text and rp.locator("i, img").count() == 0
        assert "Anna A." in text and "headset" in text.lower()
        assert rp.locator("svg").count() >= 2
        pdf = ARTIFACTS / "web-report.pdf"
        rp.pdf(path=str(pdf), format="A4", print_background=True)
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
        rp.screenshot(path=str(ARTIFACTS / "web-report.png"), full_page=True)
        rep = a.get("/report/st-1.json")
        assert rep["candidate"] == {"id": "CAND-0042", "name": "Zoë <i>Tester</i>"}
        assert rep["software_version"]["station"] and rep["headset_calibrated"] is False
        c4 = next(c for c in rep["competences"] if c["id"] == "C4")
        assert c4["verdicts"]["anna"]["verdict"] == "observed" and c4["verdicts"]["anna"]["text"] == XSS
        assert any(c["kind"] == "chat" and c["source"] == "assessor" for c in rep["contacts"])
        csv_text = a.get("/report/st-1.csv")
        assert csv_text.startswith("section,item,field,value") and "CAND-0042" in csv_text and "verdict:anna" in csv_text
        assert not errs, errs


def test_two_assessors_agreement(room):
    a, b = room["a"], room["b"]

    def proven(console, cid):
        return next(c for c in console.get("/api/station/st-2/board")["competences"] if c["id"] == cid)

    assert a.post("/api/station/st-2/mark", {"competence": "C7", "kind": "observed", "text": "anna saw it"})[0] == 200
    # acknowledged by the station as journaled: anna sees her own mark at once, no round trip
    assert proven(a, "C7")["verdicts"]["anna"]["verdict"] == "observed"
    wait_for(lambda: "anna" in proven(b, "C7")["verdicts"], 15, "anna's mark at bert's console")
    assert proven(a, "C7")["proven"] is False and proven(b, "C7")["proven"] is False  # one assessor is not enough
    assert b.post("/api/station/st-2/mark", {"competence": "C7", "kind": "not_observed", "text": "bert did not"})[0] == 200
    assert proven(b, "C7")["verdicts"]["bert"]["verdict"] == "not_observed"   # at once, at his own console
    wait_for(lambda: "bert" in proven(a, "C7")["verdicts"], 15, "bert's mark at anna's console")
    for c in (a, b):
        wait_for(lambda: "bert" in proven(c, "C7")["verdicts"], 15, f"bert's mark at {c.name}'s console")
        row = proven(c, "C7")
        assert row["verdicts"]["anna"]["verdict"] == "observed" and row["verdicts"]["bert"]["verdict"] == "not_observed"
        assert row["proven"] is False
    assert b.post("/api/station/st-2/mark", {"competence": "C7", "kind": "observed", "text": "on reflection"})[0] == 200
    wait_for(lambda: proven(a, "C7")["proven"] and proven(b, "C7")["proven"], 15, "C7 proven at both consoles")
    with browser() as br:
        page = br.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(a.url + "/#/station/st-2")
        page.wait_for_selector('#board tr[data-competence="C7"].proven')
        assert page.inner_text('#board tr[data-competence="C7"] td[data-assessor="anna"]').startswith("observed")
        assert page.inner_text('#board tr[data-competence="C7"] td[data-assessor="bert"]').startswith("observed")
        assert page.inner_text('#board tr[data-competence="C8"] [data-field=proven]') == "not proven"
        page.screenshot(path=str(ARTIFACTS / "web-board-two-assessors.png"), full_page=True)
    rep = b.get("/report/st-2.json")
    c7 = next(c for c in rep["competences"] if c["id"] == "C7")
    assert c7["proven"] and set(c7["verdicts"]) == {"anna", "bert"}


def test_bad_input_is_refused_clearly(room):
    a = room["a"]
    st, body = a.post("/api/station/st-1/mark", {"competence": "Z9", "kind": "observed"})
    assert st == 400 and "unknown competence" in body["error"]
    st, body = a.post("/api/station/no-such/mark", {"competence": "C1", "kind": "observed"})
    assert st == 404 and "no-such" in body["error"]
    st, body = a.post("/api/station/st-1/mark", {"competence": "C1", "kind": "observed", "text": "x" * 5000})
    assert st == 400 and "2000" in body["error"]
    st, body = a.post("/api/station/st-1/mark", b"{not json")
    assert st == 400 and "JSON" in body["error"]
    st, body = a.post("/api/station/st-1/mark", {"competence": "C4", "kind": "counter"})
    assert st == 400
    st, body = a.post("/api/station/st-1/exam", {"action": "assign", "candidate_id": ""})
    assert st == 400
    st, body = a.post("/api/station/st-1/mark", b"x" * 100_000)
    assert st == 400
    st, body = a.request("/report/st-1.pdf")
    assert st == 400
    # the station whose key is wrong: commands fail with a clear error, nothing crashes
    st, body = a.post("/api/station/st-badkey/mark", {"competence": "C1", "kind": "observed"})
    assert st == 502 and "st-badkey" in body["error"]
    with browser() as br:
        page = br.new_page()
        page.goto(a.url + "/#/station/st-1")
        page.wait_for_selector("#board table")
        page.select_option("#mark-form select[name=competence]", "C1")
        page.evaluate("document.querySelector('#mark-form textarea').removeAttribute('maxlength')")
        page.fill("#mark-form textarea", "y" * 2500)
        page.click("#place-mark")
        page.wait_for_selector("#msg.error")
        assert "at most 2000" in page.inner_text("#msg")
    assert a.proc.poll() is None and card(a, "st-1")["state"] == "connected"


def test_stopped_station_turns_red_within_2s_and_gap_in_report(room):
    a = room["a"]
    s3 = room["demos"][2]
    with browser() as br:
        page = br.new_page(viewport={"width": 1400, "height": 900})
        page.goto(a.url + "/")
        sel = '.card[data-station="st-3"]'
        page.wait_for_selector(f'{sel}[data-state="connected"]')
        s3.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            page.wait_for_selector(f"{sel}.red", timeout=4000)
            red_after = time.monotonic() - t0
            page.screenshot(path=str(ARTIFACTS / "web-room-station-stopped.png"), full_page=True)
            rep = a.get("/report/st-3.json")
            assert any(g["kind"] == "station silent (ongoing)" for g in rep["data_gaps"]), rep["data_gaps"]
            time.sleep(1.5)
        finally:
            s3.proc.send_signal(signal.SIGCONT)
        assert red_after <= 2.0, red_after
        page.wait_for_selector(f'{sel}:not(.red)', timeout=15000)
    rep = wait_for(lambda: (lambda r: r if any(g["kind"] == "station silent" for g in r["data_gaps"]) else None)(
        a.get("/report/st-3.json")), 20, "the silence in the report")
    assert "station silent" in a.get("/report/st-3.html")


def test_console_restart_and_browser_reload_keep_state(room):
    a = room["a"]
    st, _ = a.post("/api/station/st-1/mark", {"competence": "D6", "kind": "observed", "text": "before restart"})
    assert st == 200
    wait_for(lambda: any(m.get("text") == "before restart" for m in a.get("/api/station/st-1")["marks"]), 15, "mark")
    before = a.get("/api/station/st-1")
    with browser() as br:
        page = br.new_page()
        page.goto(a.url + "/#/station/st-1")
        page.wait_for_selector("#marks table")
        a.stop()
        page.wait_for_selector("#msg.error", timeout=5000)   # the page says the server is away
        a.start()
        # state from the store right after the restart: candidate, marks, contacts
        after = a.get("/api/station/st-1")
        assert after["candidate"] == before["candidate"] and after["candidate"]["id"] == "CAND-0042"
        assert any(m.get("text") == "before restart" for m in after["marks"])
        assert len(after["contact_list"]) >= len(before["contact_list"])
        page.locator("#marks", has_text="before restart").wait_for(timeout=10000)
        page.reload()
        page.locator("#marks", has_text="before restart").wait_for(
                               timeout=10000)
        assert "CAND-0042" in page.inner_text("#st-info")
