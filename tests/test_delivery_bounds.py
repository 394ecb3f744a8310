"""Every X11 source declares an honest delivery bound (``delivered_until``), against a real X
server (Xvfb + openbox) driven by xdotool: both input backends (XI2, pynput) and the X11 focus
source. Checked while keys (held for the typing-task grace), mouse motion (bins), clicks and
focus changes flow: no event is put into the sink below a bound reported before it
(``tests/delivery_check.py``); when idle, the bound keeps up with now and a StallGuard never
declares the idle source stalled; stopped, the source has no bound. (The Wayland focus sources:
in test_focus_wlr.py and test_focus_gnome.py.)
"""

import time

import pytest

from station.capture import platform
from station.clock import monotonic_ns
from station.config import load
from station.events import KeyEvent, MouseBin
from tests.delivery_check import FOCUS, INPUT, BoundSampler, CheckedQueue, assert_idle_keeps_up, idle_lag_ms
from tests.support import wait_for
from tests.x11_harness import Capture, x11_test_session

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def xs():
    with x11_test_session() as x:
        x.crm = x.open_window("crm-app", "Customer file")
        x.typing = x.open_window("typing-test", "Typing test")
        yield x


@pytest.mark.parametrize("backend", ["xi2", "pynput"])
def test_input_and_focus_bounds_never_pass_an_undelivered_event(xs, backend, monkeypatch):
    monkeypatch.setenv(platform.INPUT_ENV_OVERRIDE, backend)
    cap = Capture(load(system=False))
    cap.queue = CheckedQueue()
    cap.start()
    samplers = [BoundSampler(cap.input, cap.queue, INPUT).start(), BoundSampler(cap.focus, cap.queue, FOCUS).start()]
    try:
        assert cap.input.backend == backend
        for src in (cap.input, cap.focus):   # a fresh connection without input: not held back
            wait_for(lambda: (idle_lag_ms(src) or 1e9) < 250, 5, f"{src.name}'s bound at the start")
        since = monotonic_ns()
        xs.activate(xs.crm)
        xs.activate(xs.typing)
        time.sleep(0.1)                       # the typing task's characters are kept (grace held)
        xs.xdotool("type", "--delay", "15", "hold these keys")
        steps = []
        for _ in range(30):
            steps += ["mousemove_relative", "--", "4", "3", "sleep", "0.005"]
        xs.xdotool(*steps, "click", "1")
        xs.activate(xs.crm)
        wait_for(lambda: len([e for e in cap.of(KeyEvent, since) if e.down]) >= 15
                 and sum(b.count for b in cap.of(MouseBin, since - 10_000_000)) >= 20, 10,
                 "the keys and moves")
        assert any(e.char for e in cap.of(KeyEvent, since)), "no key was held for its character"
        assert_idle_keeps_up([cap.input, cap.focus], 250)
    finally:
        for s in samplers:
            s.stop()
        cap.stop()
    for s in samplers:
        assert len(s.bounds()) > 100
        assert s.violations() == []
    assert cap.input.delivered_until() is None and cap.focus.delivered_until() is None
