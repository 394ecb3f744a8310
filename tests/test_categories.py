"""Window rules an admin can write and check (issue 18): a rule's ``class`` matches either part of
WM_CLASS, every pattern is optional, the shipped rules classify windows whose instance or title
says what they are, and ``station categories`` shows it live under a real X server (Xvfb +
openbox), with real windows (python-xlib test windows and xmessage)."""

import json
import re
import os
import subprocess
import sys
import threading

import pytest

from station.categories import Categorizer
from station.config import ConfigError, load
from station.events import FocusChange
from tests.support import REPO, require, station_cmd, wait_for
from tests.x11_harness import Capture, x11_test_session

# (instance, class, title, expected category): the instance or the title says what it is
WINDOWS = [
    ("crmapp", "Xmessage", "crmapp", "crm"),                          # xmessage -name crmapp
    ("crm.example.com", "Chromium", "Klant 4471", "crm"),             # chromium --app=https://crm.example.com
    ("kennisbank", "Firefox", "Tarieven", "other"),                   # (instance matches no rule)
    ("wiki.intranet", "Chromium", "Tariffs", "knowledge"),
    ("typing-exam", "Exam", "Exercise 1", "typing_task"),
    ("google-chrome", "Google-chrome", "Case 00123 | Salesforce - Google Chrome", "crm"),
    ("Navigator", "firefox", "Kennisbank - verhuis — Mozilla Firefox", "knowledge"),
    ("Navigator", "firefox", "Microsoft Teams — Mozilla Firefox", "chat"),
    ("chromium", "Chromium", "Outlook – Postvak IN - Chromium", "email"),
    ("gedit", "Gedit", "Salesforce notes.txt", "other"),              # title rules only in browsers
]


def test_class_matches_instance_or_class_and_patterns_are_optional(tmp_path):
    cfg = load(system=False)
    cat = Categorizer(cfg)
    for instance, cls, title, expected in WINDOWS:
        assert cat.classify(cls, title, "", instance) == expected, (instance, cls, title)
    f = tmp_path / "rules.toml"
    f.write_text('[[categories.rule]]\ncategory = "script"\ntitle = "gespreksscript"\n'
                 '[[categories.rule]]\ncategory = "crm"\nprocess = "^soffice"\n')
    cfg = load([f], system=False)
    assert cfg.categories.rule == [{"category": "script", "class": "", "title": "gespreksscript", "process": ""},
                                   {"category": "crm", "class": "", "title": "", "process": "^soffice"}]
    cat = Categorizer(cfg)
    m = cat.match("Xterm", "Gespreksscript v2", "xterm", "xterm")
    assert (m.category, m.rule) == ("script", 0)
    assert m.describe(cfg.categories.rule) == "script (rule 1: title ~ 'gespreksscript')"
    assert cat.match("", "", "soffice.bin").rule == 1
    assert cat.match("Xterm", "x", "xterm").describe(cfg.categories.rule) == "other (no rule matched)"


def test_a_rule_without_patterns_or_with_a_typo_is_one_clear_error(tmp_path):
    for text, message in (('[[categories.rule]]\ncategory = "crm"\n', "sets none of class, title, process"),
                          ('[[categories.rule]]\ncategory = "crm"\ntitel = "x"\n', "unknown key categories.rule[0].titel"),
                          ('[[categories.rule]]\nclass = "x"\n', "lacks category")):
        f = tmp_path / "bad.toml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load([f], system=False)
        r = subprocess.run(station_cmd("--config", str(f), "categories", "--once"), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def xs():
    with x11_test_session() as x:
        yield x


@pytest.mark.real
def test_real_windows_classified_by_the_shipped_rules(xs):
    require("xmessage")
    cap = Capture(load(system=False)).start()
    try:
        wins = [(xs.open_window(cls, title, instance=inst), inst, cls, cat)
                for inst, cls, title, cat in WINDOWS[1:]]
        xm = subprocess.Popen(["xmessage", "-name", "crmapp", "Customer 4471"], env=xs.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wid = wait_for(lambda: _window_named(xs, "crmapp"), 10, "the xmessage window")
            ev = _focus(xs, cap, wid)
            assert (ev.wm_class, ev.category) == ("Xmessage", "crm")   # Xt sets no _NET_WM_PID
            for win, inst, cls, cat in wins:
                ev = _focus(xs, cap, win.wid)
                assert (ev.wm_class, ev.category) == (cls, cat), inst
        finally:
            xm.kill()
            xm.wait(timeout=5)
    finally:
        cap.stop()


def _window_named(xs, instance):
    r = subprocess.run(["xdotool", "search", "--onlyvisible", "--classname", f"^{instance}$"], env=xs.env,
                       capture_output=True, text=True, timeout=10)
    ids = r.stdout.split()
    return int(ids[-1]) if ids else 0


def _focus(xs, cap, wid):
    """Activate ``wid`` and return its FocusChange (a new window is often active as it maps: then
    the change came before the activation)."""
    xs.xdotool("windowactivate", "--sync", str(wid))
    assert xs.active_window() == wid
    ev = cap.wait_event(lambda e: isinstance(e, FocusChange) and e.window_id == wid, timeout=10)
    assert ev is not None, f"no focus change for window {wid}"
    return ev


@pytest.mark.real
def test_station_categories_shows_each_focused_window_live(xs):
    wins = [(xs.open_window(cls, title, instance=inst), inst, cls, title, cat)
            for inst, cls, title, cat in WINDOWS[1:6]]
    env = dict(xs.env, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(station_cmd("categories", "--json", system_config=False), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(x)) for x in proc.stdout], daemon=True)
    reader.start()
    try:
        wait_for(lambda: lines, 20, "the first line of station categories")
        for win, inst, cls, title, cat in wins:
            xs.activate(win)
            got = wait_for(lambda: [x for x in lines if x["window_id"] == win.wid], 10, f"a line for {inst}")[-1]
            assert (got["instance"], got["class"], got["title"], got["category"]) == (inst, cls, title, cat)
            assert got["process"].startswith("python") and got["pid"] == win.pid
            assert (got["rule"] is None) == (cat == "other")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode in (0, -15), proc.stderr.read()
    # the human-readable form names the rule; --once exits by itself
    xs.activate(wins[0][0])
    r = subprocess.run(station_cmd("categories", "--once", system_config=False), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "instance='crm.example.com' class='Chromium'" in r.stdout and "->  crm (rule 2: class ~ 'crm')" in r.stdout


def test_station_categories_without_a_display_says_why():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "station", "--no-system-config", "categories", "--once"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "focus cannot be observed: no graphical display" in r.stderr
    assert "Traceback" not in r.stderr
