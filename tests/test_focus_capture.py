"""Window focus capture against a real X server (Xvfb + openbox), switched with xdotool.

What is checked: every focus change with the right class, category, pid and process; latency
from just before ``xdotool windowactivate``; title changes; title privacy; no CPU while idle
(event-driven, not polling); vanished windows; X server killed and restarted (both sources)."""

import time

import pytest

from station.capture import platform
from station.clock import monotonic_ns
from station.config import load
from station.events import FocusChange, KeyEvent, SourceHealth
from tests.support import require
from tests.x11_harness import Capture, X11Session, percentile, x11_test_session

WINDOWS = [("crm-app", "Customer 42", "crm"), ("typing-test", "Typing test", "typing_task"),
           ("kb-wiki", "Knowledge base", "knowledge"), ("call-script", "Script", "script"),
           ("team-chat", "Chat", "chat"), ("thunderbird", "Inbox", "email"),
           ("gimp", "Untitled", "other")]


@pytest.fixture(scope="module")
def xs():
    with x11_test_session() as x:
        x.wins = [(x.open_window(c, t), cat) for c, t, cat in WINDOWS]
        yield x


@pytest.fixture
def cap(xs):
    c = Capture(load(system=False)).start()
    yield c
    c.stop()


def activate_and_wait(xs, cap, win, timeout=5.0, shell=None):
    """Activate ``win`` and wait for its FocusChange: (t0, event or None). A window the window
    manager focused on its own when it was mapped (openbox does) has its FocusChange already;
    activating it again changes nothing, so that event is the answer (t0 = its stamp)."""
    events = cap.collect()
    start = len(events)
    last = next((e for e in reversed(events) if isinstance(e, FocusChange)), None)
    if last is not None and last.window_id == win.wid:
        return last.t_ns, last
    if shell is not None:
        t0 = shell.send(f"windowactivate --sync {win.wid}")
    else:
        t0 = monotonic_ns()
        xs.activate(win)
    ev = cap.wait_event(lambda e: isinstance(e, FocusChange) and e.window_id == win.wid,
                      timeout=timeout, start=start)
    return t0, ev


@pytest.mark.real
def test_every_focus_change_with_category_and_latency(xs, cap):
    lat = []
    since = monotonic_ns()
    order = []
    # one xdotool process per activation (``xdotool -`` delays windowactivate: see the benchmark),
    # so the latency includes xdotool's start; the bound is loose for a loaded CI machine
    for rnd in range(8):
        for win, cat in xs.wins:
            t0, ev = activate_and_wait(xs, cap, win)
            assert ev is not None, f"no focus change for {win.wm_class}"
            assert (ev.wm_class, ev.title, ev.category) == (win.wm_class, win.title, cat)
            assert ev.pid == win.pid and ev.process.startswith("python")
            assert cap.state.category == cat
            lat.append((ev.t_ns - t0) / 1e6)
            order.append(win.wid)
    time.sleep(0.1)
    changes = [e for e in cap.of(FocusChange, since) if e.window_id]
    # exactly one change per activation, in order (openbox's momentary "no window" is not one)
    assert [e.window_id for e in changes] == order
    assert not [e for e in cap.of(FocusChange, since) if e.window_id == 0]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(f"\nfocus latency from xdotool windowactivate: n={len(lat)} p50={p50:.1f} ms "
          f"p99={p99:.1f} ms max={max(lat):.1f} ms")
    assert p99 <= 150.0


@pytest.mark.real
def test_title_change_and_title_privacy(xs):
    cfg = load(system=False).replace(privacy={"titles": "hash"})
    cap = Capture(cfg).start()
    try:
        crm, _ = xs.wins[0]
        activate_and_wait(xs, cap, xs.wins[1][0])
        t0, ev = activate_and_wait(xs, cap, crm)
        assert ev.title.startswith("sha256:") and "Customer" not in ev.title
        start = len(cap.collect())
        crm.set_title("Customer 43 - Jan Peeters")
        ev2 = cap.wait_event(lambda e: isinstance(e, FocusChange) and e.title != ev.title, start=start)
        assert ev2 is not None and ev2.window_id == crm.wid and ev2.category == "crm"
        assert ev2.title.startswith("sha256:") and ev2.title != ev.title
        assert not any("Peeters" in e.title for e in cap.of(FocusChange))
        # titles of other (non-active) windows do not produce changes
        start = len(cap.collect())
        xs.wins[2][0].set_title("Other title")
        time.sleep(0.2)
        assert not [e for e in cap.collect()[start:] if isinstance(e, FocusChange)]
    finally:
        crm.set_title("Customer 42")
        cap.stop()


def _thread_cpu_ticks(thread) -> int:
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (clock ticks)


@pytest.mark.real
def test_idle_focus_source_uses_no_cpu(xs, cap):
    """Event-driven: with nothing happening, the focus thread sleeps in select()."""
    th = cap.focus._thread
    before = _thread_cpu_ticks(th)
    time.sleep(1.5)
    assert _thread_cpu_ticks(th) - before <= 1


@pytest.mark.real
def test_window_vanishing_right_after_activation(xs, cap):
    for i in range(8):
        w = xs.open_window("crm-app", f"Short lived {i}")
        xs.xdotool("windowactivate", str(w.wid))   # no --sync: destroy while the WM reacts
        w.close()
    time.sleep(0.3)
    assert cap.focus._thread.is_alive()
    assert cap.focus.status()["state"] == "ok"
    t0, ev = activate_and_wait(xs, cap, xs.wins[2][0])
    assert ev is not None and ev.category == "knowledge"


@pytest.mark.real
def test_x_server_restart_both_sources_lost_then_recover():
    require("Xvfb", "openbox", "xdotool")
    with pytest.MonkeyPatch.context() as mp, X11Session() as x:
        mp.delenv("WAYLAND_DISPLAY", raising=False)
        mp.delenv(platform.ENV_OVERRIDE, raising=False)
        mp.setenv("DISPLAY", x.display)
        cap = Capture(load(system=False)).start()
        try:
            w = x.open_window("crm-app", "Before")
            activate_and_wait(x, cap, w)
            start = len(cap.collect())
            x.kill_server()
            lost = {}
            deadline = time.monotonic() + 5
            while len(lost) < 2 and time.monotonic() < deadline:
                for e in cap.collect()[start:]:
                    if isinstance(e, SourceHealth) and e.state == "lost":
                        lost.setdefault(e.source, e)
                time.sleep(0.02)
            assert set(lost) == {"focus", "input"}, cap.events[start:]
            assert cap.state.category == "unknown"
            start2 = len(cap.collect())
            x.restart_server()
            assert cap.wait_event(lambda e: isinstance(e, SourceHealth) and e.source == "focus"
                                and e.state == "ok", timeout=8, start=start2), cap.events[start:]
            assert cap.wait_event(lambda e: isinstance(e, SourceHealth) and e.source == "input"
                                and e.state == "ok", timeout=8, start=start2), cap.events[start:]
            assert cap.input.connected.wait(5)
            time.sleep(0.1)
            w2 = x.open_window("kb-wiki", "After")
            t0, ev = activate_and_wait(x, cap, w2)
            assert ev is not None and ev.category == "knowledge"
            since = monotonic_ns()
            x.xdotool("key", "a", "Return")
            time.sleep(0.2)
            assert len([e for e in cap.of(KeyEvent, since) if e.down]) == 2
            assert cap.focus.status()["reconnects"] >= 1 and cap.input.status()["reconnects"] >= 1
        finally:
            cap.stop()
