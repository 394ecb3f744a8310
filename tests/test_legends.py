"""Results people can read (issue 18): every timeline has a legend (lanes, the focus lane's window
categories in their colours, contact kinds), and figures are words with units on the board and
in both reports, while JSON and CSV keep the raw values. Checked in Debian's chromium on a real
demo station, a real web console and real report files."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from station.figure_words import describe
from station.rendering import CAT_COLORS, KIND_COLORS, LANE_ORDER, UNOBSERVED
from tests.support import require
from tests.web_harness import (CHROMIUM, DemoStation, WebConsole, assessor_key, browser, page_errors, station_cmd,
                               wait_for)


def test_figures_in_words_with_units():
    assert describe("S1", {"per_contact_share": {"#1 phone": 0.6424}, "best_share": 0.6424, "lookups": 1}) == [
        "contact #1 phone: 64 % of conversation time with on-screen information work",
        "best contact: 64 % of conversation time with on-screen information work",
        "1 lookup in information windows during calls"]
    assert describe("D5", {"accuracy": 0.9724, "estimate": False}) == [
        "97.2 % typing accuracy", "measured against the reference text"]
    assert describe("C6", {"dead_air_count": 2, "dead_air_ms": 9660, "longest_ms": 5100,
                           "share_of_conversation": 0.0414}) == [
        "2 silences of 3 s or more in calls", "9.7 s of dead air in total", "longest 5.1 s", "4.1 % of conversation time"]
    assert describe("S2", {"per_contact": {"#2 chat": {"switches_per_min": 2.97, "info_share": 1.0}}}) == [
        "contact #2 chat: 3.0 switches a minute between the chat/e-mail window and information windows",
        "contact #2 chat: 100 % of chat time with information consulted within 30 s"]
    assert describe("D3", {"after_contact_ms": {"#1 phone": 151020}}) == ["contact #1 phone: 2 min 31 s of after-contact work"]
    assert describe("C2", {"counters": {}}) == ["no clarifying questions counted yet"]
    assert describe("C1", {"counters": {"#1 phone": {"anna": 2, "bert": 1}, "outside contacts": {"anna": 1}}}) == [
        "contact #1 phone: anna: 2 reformulations; bert: 1 reformulation", "outside contacts: anna: 1 reformulation"]
    assert describe("S1", {"per_contact_share": {"#1 phone": {"odd": 1}}}) == ["contact #1 phone: per_contact_share: {'odd': 1}"]
    # a figure this module does not know is still shown, never hidden; odd values do not raise
    assert describe("S1", {"new_figure": 3, "lookups": None, "idle_ms": 2500}) == [
        "new_figure: 3", "lookups: None", "idle: 2.5 s"]


def _legend_colors(page, scope: str) -> dict[str, str]:
    return page.evaluate("""(scope) => Object.fromEntries([...document.querySelectorAll(scope + ' [data-legend]')]
        .map(e => [e.dataset.legend, getComputedStyle(e.querySelector('.sw')).backgroundColor]))""", scope)


def _rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _check_legends(page, where: str) -> None:
    """Every timeline svg has a legend right after it, with every focus category and contact kind
    in the colour the timeline draws it in."""
    n_svg = page.locator("svg").count()
    assert n_svg >= 1, where
    pairs = page.evaluate("""() => [...document.querySelectorAll('svg')].map(s => {
        const n = s.nextElementSibling || (s.parentElement && s.parentElement.nextElementSibling);
        return n ? n.className : null; })""")
    assert pairs == ["legend"] * n_svg, (where, pairs)
    colors = _legend_colors(page, ".legend")
    for cat, hexc in CAT_COLORS.items():
        assert colors[f"focus:{cat}"] == _rgb(hexc), (where, cat)
    for kind, hexc in KIND_COLORS.items():
        assert colors[f"contact:{kind}"] == _rgb(hexc), (where, kind)
    drawn = set(page.evaluate("() => [...document.querySelectorAll('svg rect')].map(r => r.getAttribute('fill'))"))
    legend = {*CAT_COLORS.values(), *KIND_COLORS.values(), *(c for _, _, c in LANE_ORDER if c), UNOBSERVED}
    assert drawn - legend - {"#f4f4f4"} == set(), (where, drawn - legend)
    texts = page.inner_text("body")
    assert all(label in texts for label in ("Knowledge base", "Typing task", "Other window", "phone call")), where


@pytest.fixture(scope="module")
def station_and_console(tmp_path_factory):
    require(CHROMIUM)
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("legends")
    st = DemoStation(root, "st-leg", seed=3, speed=30.0, assessors=[("anna", "Anna A.")])
    con = WebConsole(root, "anna", [st], "Anna A.", secret_key_file=assessor_key(root, "anna"))
    try:
        st.start()
        con.start()
        wait_for(lambda: any("per_contact_share" in json.dumps(c["figures"]) and c["figures"]["per_contact_share"]
                             for c in con.get("/api/station/st-leg/board")["competences"] if c["id"] == "S1"),
                 120, "S1 figures of a finished phone contact on the board")
        yield st, con, root
    finally:
        con.stop()
        st.stop()


@pytest.mark.real
@pytest.mark.slow
def test_board_has_legends_and_figures_in_words(station_and_console):
    st, con, _ = station_and_console
    with browser() as br:
        page = br.new_page(viewport={"width": 1400, "height": 1000})
        errs = page_errors(page)
        page.goto(con.url + "/#/station/st-leg")
        page.wait_for_selector("#tl-session svg rect[data-lane=focus]", timeout=20000)
        page.wait_for_selector("#tl-last5 svg")
        assert page.locator(".legend").count() == 2
        colors = _legend_colors(page, ".legend")
        for cat, hexc in CAT_COLORS.items():    # the board's colours are the reports' colours
            assert colors[f"focus:{cat}"] == _rgb(hexc), cat
        drawn = set(page.evaluate("() => [...document.querySelectorAll('svg rect[data-lane=focus]')].map(r => r.getAttribute('fill'))"))
        assert drawn and drawn <= {*CAT_COLORS.values(), UNOBSERVED}, drawn
        s1 = page.inner_text('#board tr[data-competence="S1"] [data-field=figures]')
        assert re.search(r"\d+ % of conversation time with on-screen information work", s1), s1
        assert "per_contact_share" not in page.inner_text("#board")
        assert not errs, errs
        # the candidate report of the console: legends and words; CSV and JSON keep raw values
        page.goto(con.url + "/report/st-leg.html")
        _check_legends(page, "console report")
        assert re.search(r"\d+ % of conversation time with on-screen information work", page.inner_text("body"))
    rep = con.get("/report/st-leg.json")
    s1 = next(c for c in rep["competences"] if c["id"] == "S1")
    assert all(isinstance(v, float) for v in s1["figures"]["per_contact_share"].values())
    assert "per_contact_share" in con.get("/report/st-leg.csv")


@pytest.mark.real
@pytest.mark.slow
def test_station_report_has_legends_and_figures_in_words(station_and_console, tmp_path):
    st, _, _ = station_and_console
    journals = sorted((st.root / "data" / "sessions").glob("*.journal"))
    r = subprocess.run(station_cmd("report", str(journals[-1]), "--out", str(tmp_path)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr   # 1 = the open session's integrity note; still written
    with browser() as br:
        page = br.new_page(viewport={"width": 1200, "height": 900})
        page.goto((tmp_path / "report.html").as_uri())
        _check_legends(page, "station report")
        body = page.inner_text("body")
        assert re.search(r"\d+ % of conversation time with on-screen information work", body)
        assert "per_contact_share" not in body
    raw = json.loads((tmp_path / "report.json").read_text())
    assert isinstance(raw["competences"]["S1"]["figures"]["best_share"], float)
