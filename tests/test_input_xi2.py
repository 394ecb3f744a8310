"""XI2 input backend: XTEST flagging against a real X server (Xvfb + openbox + xdotool), and the
parts that need no X server (sourceid -> injected mapping, keysym classes, keymap levels,
event-time stamps, backend choice).

Non-XTEST input cannot be produced here: Xvfb's own slave devices ("Xvfb mouse"/"Xvfb keyboard")
have no input behind them, there is no /dev/uinput (and Xvfb reads no evdev devices), and
``xinput create-master`` only adds another XTEST pair. So "real input is not flagged" is checked
on the mapping itself: ``xtest_device_ids`` over the device list the real server reports, and
``is_injected`` for the non-XTEST slave ids of that list.
"""

import time

import pytest

from station.capture import platform
from station.capture.input._xi2 import Keymap, _Reader, classify_keysym, is_injected, keysym_char, xtest_device_ids
from station.clock import monotonic_ns
from station.config import load
from station.errors import UserError
from station.events import KeyClass, KeyEvent, MouseBin, MouseClick, MouseScroll
from tests.support import wait_for
from tests.x11_harness import Capture, x11_test_session


@pytest.fixture(scope="module")
def xs():
    with x11_test_session() as x:
        x.crm = x.open_window("crm-app", "Customer file")
        yield x


@pytest.fixture
def cap(xs):
    c = Capture(load(system=False)).start()
    assert c.input.backend == "xi2"   # the default on a server with XInput 2.2
    yield c
    c.stop()


def server_devices(display):
    import Xlib.display
    d = Xlib.display.Display(display)
    try:
        return [(int(x.deviceid), str(x.name), int(x.use)) for x in d.xinput_query_device(0).devices]
    finally:
        d.close()


@pytest.fixture
def cap_exam(xs):
    """The capture as on an exam PC: XTEST off the allow-list."""
    c = Capture(load(system=False), allow_xtest=False).start()
    yield c
    c.stop()


@pytest.mark.real
def test_xdotool_keys_moves_clicks_scrolls_are_flagged_injected(xs, cap_exam):
    cap = cap_exam
    xs.activate(xs.crm)
    xs.xdotool("mousemove", "200", "200")
    time.sleep(0.15)
    since = monotonic_ns()
    xs.xdotool("type", "--delay", "10", "ab")
    args = []
    for _ in range(20):
        args += ["mousemove_relative", "5", "5", "sleep", "0.004"]
    xs.xdotool(*args, "click", "2", "click", "4")
    # the reader waits READ_BATCH_S between reads while the mouse moves, and emits bins once the
    # pointer position read with them has come back: wait for them
    deadline = time.monotonic() + 3
    while (sum(b.count for b in cap.of(MouseBin, since - since % 10_000_000)) < 20
           and time.monotonic() < deadline):
        time.sleep(0.05)
    time.sleep(0.1)
    keys = cap.of(KeyEvent, since)
    assert len(keys) == 4 and all(k.injected for k in keys)
    bins = cap.of(MouseBin, since - since % 10_000_000)
    assert sum(b.count for b in bins) == 20
    assert all(b.injected == b.count for b in bins)
    assert abs(sum(b.distance_px for b in bins) - 19 * 5 * 2 ** 0.5) <= 10
    clicks, scrolls = cap.of(MouseClick, since), cap.of(MouseScroll, since)
    assert [(c.button, c.down, c.injected) for c in clicks] == [(2, True, True), (2, False, True)]
    assert [(s.dx, s.dy, s.injected) for s in scrolls] == [(0, 1, True)]
    st = cap.input.status()
    assert st["backend"] == "xi2" and st["keys"] >= 2 and st["moves"] >= 20


@pytest.mark.real
def test_real_server_device_list_maps_only_xtest_slaves_to_injected(xs):
    devices = server_devices(xs.display)
    names = {name for _, name, _ in devices}
    assert {"Virtual core XTEST pointer", "Virtual core XTEST keyboard"} <= names
    xtest = xtest_device_ids(devices)
    assert {name for dev, name, _ in devices if dev in xtest} == {"Virtual core XTEST pointer",
                                                                 "Virtual core XTEST keyboard"}
    others = [dev for dev, name, use in devices if dev not in xtest]
    assert others and not any(is_injected(dev, xtest) for dev in others)   # "Xvfb mouse", masters


@pytest.mark.real
def test_shifted_and_altgr_free_characters_in_typing_task(xs, cap):
    typing = xs.open_window("typing-test", "Typing test")
    try:
        xs.activate(typing)
        assert cap.wait_event(lambda e: getattr(e, "category", None) == "typing_task")
        time.sleep(0.07)
        since = monotonic_ns()
        text = "Hello, World! 42 #x"
        xs.xdotool("type", "--delay", "12", text)
        time.sleep(0.3)
        assert "".join(e.char for e in cap.of(KeyEvent, since)) == text
    finally:
        xs.activate(xs.crm)
        typing.close()


def test_xtest_ids_from_a_device_list():
    devices = [(2, "Virtual core pointer", 1), (3, "Virtual core keyboard", 2),
               (4, "Virtual core XTEST pointer", 3), (5, "Virtual core XTEST keyboard", 4),
               (6, "Logitech USB Optical Mouse", 3), (7, "AT Translated Set 2 keyboard", 4),
               (8, "second XTEST pointer", 3), (9, "floating XTEST keyboard", 5)]
    ids = xtest_device_ids(devices)
    assert ids == {4, 5, 8, 9}
    assert is_injected(4, ids) and is_injected(9, ids)
    assert not is_injected(6, ids) and not is_injected(7, ids) and not is_injected(2, ids)


def test_classify_keysym_matches_the_pynput_table():
    assert classify_keysym(0xff08) == (KeyClass.BACKSPACE, "")     # BackSpace
    assert classify_keysym(0xffff) == (KeyClass.DELETE, "")        # Delete
    assert classify_keysym(0xff0d) == (KeyClass.ENTER, "\n")       # Return
    assert classify_keysym(0x20) == (KeyClass.PRINTABLE, " ")
    assert classify_keysym(0xff09) == (KeyClass.NAVIGATION, "\t")  # Tab
    assert classify_keysym(0xff56) == (KeyClass.NAVIGATION, "")    # Page_Down (Next)
    assert classify_keysym(0xfe03) == (KeyClass.MODIFIER, "")      # ISO_Level3_Shift = AltGr
    assert classify_keysym(0xffe1) == (KeyClass.MODIFIER, "")      # Shift_L
    assert classify_keysym(0x00e9) == (KeyClass.PRINTABLE, "é")
    assert classify_keysym(0xfe52) == (KeyClass.PRINTABLE, "")     # dead_circumflex
    assert classify_keysym(0) == (KeyClass.OTHER, "")              # NoSymbol
    assert classify_keysym(0xffc9) == (KeyClass.OTHER, "")         # F12
    assert classify_keysym(0xff1b) == (KeyClass.OTHER, "")         # Escape
    assert classify_keysym(0x10020ac) == (KeyClass.PRINTABLE, "€")  # Unicode keysym
    assert classify_keysym(0xffb7) == (KeyClass.PRINTABLE, "7")    # KP_7
    assert keysym_char(0x13bd) == "œ"                              # legacy Latin-9 keysym


def test_keymap_levels_shift_caps_altgr_numlock():
    km = Keymap({38: (0x61, 0x41, 0x61, 0x41, 0xe6, 0xc6),          # a A a A æ Æ
                 10: (0x31, 0x21, 0x31, 0x21, 0xb9, 0xa1),          # 1 ! 1 ! ¹ ¡
                 79: (0xff95, 0xffb7),                              # KP_Home KP_7
                 26: (0x65,)})                                      # e, one column
    assert km.keysym(38) == 0x61 and km.keysym(38, shift=True) == 0x41
    assert km.keysym(38, caps=True) == 0x41 and km.keysym(38, shift=True, caps=True) == 0x61
    assert km.keysym(10, caps=True) == 0x31                         # caps affects letters only
    assert km.keysym(38, level3=True) == 0xe6 and km.keysym(38, level3=True, shift=True) == 0xc6
    assert km.keysym(79) == 0xff95 and km.keysym(79, num=True) == 0xffb7
    assert km.keysym(79, num=True, shift=True) == 0xff95
    assert km.keysym(26, shift=True) == 0x45                        # implicit upper case
    assert km.keysym(99) == 0                                       # unmapped keycode


class _StampOnly:
    """Just what _Reader._stamp needs (counts)."""

    def __init__(self):
        import collections
        self.counts = collections.Counter()


def test_event_time_stamps_from_the_server_clock():
    r = _StampOnly()
    stamp = _Reader._stamp.__get__(r)
    now = 5_000_123_456_789                       # ns, station clock
    ms = (now // 1_000_000 - 3) & 0xFFFFFFFF      # an event 3 ms before the read
    t = stamp(ms, now)
    assert now - 3_000_000 <= t <= now and t >= (now // 1_000_000 - 3) * 1_000_000
    assert stamp((now // 1_000_000) & 0xFFFFFFFF, now) == now      # never after the read time
    # 32-bit wrap: the server time wrapped just after its ms counter passed 2**32
    now2 = (2 ** 32 + 5) * 1_000_000 + 10
    assert stamp(2, now2) == (2 ** 32 + 4) * 1_000_000 - 1
    assert stamp(2 ** 32 - 2, now2) == (2 ** 32) * 1_000_000 - 1   # just before the wrap
    # a server on another clock: read time, counted
    assert stamp(((now // 1_000_000) + 900_000) & 0xFFFFFFFF, now) == now
    assert stamp(((now // 1_000_000) - 60_000) & 0xFFFFFFFF, now) == now
    assert r.counts["clock_fallbacks"] == 2


def test_input_backend_choice_and_override():
    x11 = platform.Backend("x11", ":5", "X11 display :5")
    assert platform.input_backend(x11, {}, evdev=lambda: (False, ""), probe=lambda d: (2, 4))[0] == "xi2"
    assert platform.input_backend(x11, {}, evdev=lambda: (False, ""), probe=lambda d: (2, 1))[0] == "xi2"
    name, reason = platform.input_backend(x11, {}, evdev=lambda: (False, ""), probe=lambda d: (2, 0))
    assert name == "pynput" and "2.0" in reason
    name, reason = platform.input_backend(x11, {}, evdev=lambda: (False, ""), probe=lambda d: (0, 0))
    assert name == "pynput" and "no XInputExtension" in reason
    assert platform.input_backend(x11, {}, evdev=lambda: (False, ""), probe=lambda d: None)[0] == "xi2"   # not reachable yet
    env = {platform.INPUT_ENV_OVERRIDE: "pynput"}
    assert platform.input_backend(x11, env, probe=lambda d: (2, 4))[0] == "pynput"
    env = {platform.INPUT_ENV_OVERRIDE: " XI2 "}
    assert platform.input_backend(x11, env, probe=lambda d: (0, 0))[0] == "xi2"
    with pytest.raises(UserError, match="allowed: evdev, xi2, pynput"):
        platform.input_backend(x11, {platform.INPUT_ENV_OVERRIDE: "uinput"})


def test_evdev_where_dev_input_is_readable_else_xinput2_and_why():
    """evdev is chosen wherever the capture account can read /dev/input (X11 or Wayland);
    otherwise XInput 2 under X11; input.backend and then STATION_INPUT_BACKEND override."""
    x11 = platform.Backend("x11", ":5", "X11 display :5")
    wayland = platform.Backend("wayland", "", platform.WAYLAND_GNOME_MESSAGE)
    yes = lambda: (True, "2 readable evdev node(s) in /dev/input")
    no = lambda: (False, "no evdev nodes in /dev/input")
    name, why = platform.input_backend(x11, {}, probe=lambda d: (2, 4), evdev=yes)
    assert name == "evdev" and "readable" in why
    assert platform.input_backend(wayland, {}, evdev=yes)[0] == "evdev"
    name, why = platform.input_backend(x11, {}, probe=lambda d: (2, 4), evdev=no)
    assert name == "xi2" and "no evdev nodes" in why and "XInputExtension 2.4" in why
    name, why = platform.input_backend(x11, {}, probe=lambda d: (2, 4), configured="xi2", evdev=yes)
    assert name == "xi2" and "input.backend" in why
    env = {platform.INPUT_ENV_OVERRIDE: "evdev"}
    assert platform.input_backend(x11, env, configured="xi2", evdev=no)[0] == "evdev"


def test_evdev_probe_on_fixture_device_dirs(tmp_path):
    assert platform.evdev_probe(str(tmp_path / "missing")) == (False, f"no evdev nodes in {tmp_path / 'missing'}")
    d = tmp_path / "input"
    d.mkdir()
    (d / "event0").write_bytes(b"")
    (d / "mouse0").write_bytes(b"")
    ok, why = platform.evdev_probe(str(d))
    assert ok and why.startswith("1 readable evdev node(s)")


@pytest.mark.real
def test_xinput_version_probe_on_a_real_server(xs):
    v = platform.xinput_version(xs.display)
    assert v is not None and v >= (2, 2)
    assert platform.xinput_version(":9999") is None


def _through_engine(events):
    """The captured events in one batch through a live engine: (engine, alerts)."""
    from station.engine import Engine
    from station.events import Batch
    evs = sorted(events, key=lambda e: e.t_ns)
    end = evs[-1].t_ns + 5_000_000_000
    eng = Engine(load(system=False))
    out = eng.ingest(Batch.from_events(end, evs, watermark_ns=end - 1))
    out += eng.finish(end)
    return eng, [b for k, _, b in out if k == "alert"]


def _type_hello(xs, cap):
    xs.activate(xs.crm)
    since = monotonic_ns()
    xs.xdotool("type", "--delay", "10", "hello")
    wait_for(lambda: sum(1 for k in cap.of(KeyEvent, since) if not k.down) >= 5, 5, "5 key releases")
    return since


@pytest.mark.real
def test_xtest_off_the_allow_list_gives_no_evidence_and_an_alert(xs, cap_exam):
    """As on an exam PC: the XTEST devices are announced without evidence, ``xdotool type``'s
    keys are flagged injected, and through the engine they give 0 keys in the evidence and the
    injected_input alert."""
    from station.events import DeviceEvent
    since = _type_hello(xs, cap_exam)
    devs = {d.name: d for d in cap_exam.of(DeviceEvent)}
    assert devs["Virtual core XTEST keyboard"].evidence is False and devs["Virtual core XTEST keyboard"].virtual
    assert devs["Virtual core XTEST pointer"].evidence is False
    assert all(d.evidence and not d.virtual for n, d in devs.items() if "XTEST" not in n)   # "Xvfb keyboard", ...
    assert all(d.device.startswith("xi2:") and d.state == "present" for d in devs.values())
    # the role comes from the server's own mark ("XTEST Device" property), not from the name
    assert {n: d.role for n, d in devs.items() if d.role == "xtest"} == {
        "Virtual core XTEST keyboard": "xtest", "Virtual core XTEST pointer": "xtest"}
    assert devs["Xvfb keyboard"].role == "keyboard" and devs["Xvfb mouse"].role == "pointer"
    keys = cap_exam.of(KeyEvent, since)
    assert len(keys) >= 10 and all(k.injected for k in keys)
    eng, alerts = _through_engine(cap_exam.collect())
    assert eng.presses.n == 0 and eng.typing.closed.all.tolist() == []
    assert eng.injected["keys"] >= 5
    assert any(a["type"] == "injected_input" and a["keys"] >= 5 for a in alerts)
    # the X server's own XTEST devices exist in every X session: listed, not alerted on appearing
    # (an alert at every exam start would teach assessors to ignore it); their use is alerted
    assert not [a for a in alerts if a["type"] == "device_no_evidence" and "XTEST" in a["name"]]


@pytest.mark.real
def test_xtest_on_the_allow_list_counts_as_today(xs, cap):
    """The tests' own config (``tests.support.xtest_input``): XTEST gives evidence, the keys
    count in the evidence, nothing is injected."""
    from station.events import DeviceEvent
    since = _type_hello(xs, cap)
    devs = {d.name: d for d in cap.of(DeviceEvent)}
    assert devs["Virtual core XTEST keyboard"].evidence is True
    assert "allow-list" in devs["Virtual core XTEST keyboard"].detail
    keys = cap.of(KeyEvent, since)
    assert len(keys) >= 10 and not any(k.injected for k in keys)
    eng, alerts = _through_engine(cap.collect())
    assert eng.presses.n == sum(1 for k in keys if k.down) and eng.injected["keys"] == 0
    assert not any(a["type"] == "injected_input" for a in alerts)
