"""Unit tests of the frame classifier (gate, click, bleed flags) on synthetic frames, and of the
key-press ring the audio source reads."""

import threading

import numpy as np
import pytest

from station.capture.keytimes import RecentKeyPresses
from station.events import Channel, FrameFlag
from station.vad import FrameClassifier, crest_db, energy_share, level_dbfs

RATE = 16000
N = 320  # 20 ms


def voiced(level_dbfs: float, seed: int = 0, n: int = N) -> np.ndarray:
    """A speech-like frame: harmonics of 140 Hz with formant-ish weights, at a given RMS level."""
    t = np.arange(n) / RATE
    x = sum(w * np.sin(2 * np.pi * 140 * k * t + k) for k, w in [(1, 1.0), (2, 0.8), (3, 0.6), (4, 0.5),
                                                                    (5, 0.7), (6, 0.4), (8, 0.3), (11, 0.2)])
    x += np.random.default_rng(seed).normal(0, 0.05, n)
    x *= 32768 * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(x ** 2))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def click(peak: int = 20000) -> np.ndarray:
    """A keyboard-click-like frame: an impulse ringing at 3 kHz, decaying in ~2 ms."""
    t = np.arange(N) / RATE
    x = np.zeros(N)
    x[40:] = peak * np.exp(-t[:N - 40] / 0.002) * np.sin(2 * np.pi * 3000 * t[:N - 40] + 0.5)
    return np.round(x).astype(np.int16)


def raw_speech_frames(clf, frames):
    return [clf.classify(f, i * 20_000_000) for i, f in enumerate(frames)]


def test_level_and_crest():
    assert level_dbfs(np.zeros(N, np.int16)) == -127.0
    full = np.full(N, 32767, np.int16)
    assert abs(level_dbfs(full)) < 0.01
    sine = (10000 * np.sin(2 * np.pi * 500 * np.arange(N) / RATE)).astype(np.int16)
    assert abs(crest_db(sine) - 3.01) < 0.1
    assert crest_db(click()) > 15


def test_loud_voiced_frames_are_speech():
    clf = FrameClassifier(0, mode=2, gate_dbfs=-54)
    out = raw_speech_frames(clf, [voiced(-25, s) for s in range(10)])
    assert sum(f.speech for f in out) >= 8
    assert all(f.flags & FrameFlag.GATED == 0 for f in out)
    assert all(-260 <= f.level_dbfs_x10 <= -240 for f in out)


def test_gate_rejects_quiet_frames_even_when_vad_says_speech():
    clf = FrameClassifier(0, mode=0, gate_dbfs=-40)
    out = raw_speech_frames(clf, [voiced(-50, s) for s in range(10)])
    assert any(f.vad for f in out), "webrtcvad should call a clean voiced frame at -50 dBFS speech"
    assert not any(f.speech for f in out)
    assert all(f.flags & FrameFlag.GATED for f in out)


def test_click_rejected_only_near_a_key_press():
    clf = FrameClassifier(0, mode=3, gate_dbfs=-60, crest_limit_db=15)
    frames = [click(20000 - 500 * i) for i in range(10)]
    free = [clf.classify(f, i * 20_000_000) for i, f in enumerate(frames)]
    impulsive = [f for f in free if f.flags & FrameFlag.IMPULSIVE]
    assert impulsive, "webrtcvad calls some click frames speech and they must be flagged impulsive"
    assert all(f.speech for f in impulsive), "without a key press an impulsive frame is not rejected"
    clf2 = FrameClassifier(0, mode=3, gate_dbfs=-60, crest_limit_db=15)
    near = [clf2.classify(f, i * 20_000_000, near_key_press=True) for i, f in enumerate(frames)]
    for f in near:
        if f.flags & FrameFlag.IMPULSIVE:
            assert f.flags & FrameFlag.CLICK and not f.speech


def ringing_click_frames(offset: int, tau_s: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Two consecutive frames with a 3 kHz click (decay tau_s, peak -6 dBFS) starting ``offset``
    samples into the first: the head and the tail that crossed into the second frame."""
    t = np.arange(int(0.03 * RATE)) / RATE
    clk = 16000 * np.exp(-t / tau_s) * np.sin(2 * np.pi * 3000 * t)
    buf = np.zeros(3 * N)
    n = min(len(clk), 2 * N - offset)
    buf[offset: offset + n] = clk[:n]
    x = np.round(buf).astype(np.int16)
    return x[:N], x[N: 2 * N]


def test_energy_share():
    assert energy_share(np.zeros(N, np.int16), 80) == 0.0
    flat = np.full(N, 1000, np.int16)
    assert abs(energy_share(flat, 80) - 0.25) < 1e-9
    spike = np.zeros(N, np.int16)
    spike[N - 1] = 5000
    assert energy_share(spike, 80) == 1.0


@pytest.mark.parametrize("offset", [0, 150, 259, 266, 315])
def test_tail_of_a_click_crossing_a_frame_boundary_is_impulsive(offset):
    """A ringing click's crest factor over a 20 ms frame is about 15 dB, and its tail in the next
    frame can fall below that (this let clicks through as 1-frame talk spurts); nearly all of each
    part's energy lies within 5 ms, which marks both as impulsive."""
    clf = FrameClassifier(0, mode=3, gate_dbfs=-60, crest_limit_db=15)
    head, tail = ringing_click_frames(offset)
    for part in (head, tail):
        if level_dbfs(part) > -60:
            assert clf.impulsive(part)
            f = clf.classify(part, 0, near_key_press=True)
            assert not f.speech and (f.flags & FrameFlag.CLICK or not f.vad)
    if offset >= 259:   # the tail is above the gate and its crest factor below 15 dB
        assert crest_db(tail) < 15 and level_dbfs(tail) > -54


def test_voiced_frames_are_not_impulsive():
    clf = FrameClassifier(0, mode=2, gate_dbfs=-54)
    assert not any(clf.impulsive(voiced(-25, s)) for s in range(20))


def test_speech_near_key_press_is_kept():
    clf = FrameClassifier(0, mode=2, gate_dbfs=-54)
    out = [clf.classify(voiced(-25, s), s * 20_000_000, near_key_press=True) for s in range(10)]
    assert sum(f.speech for f in out) >= 8
    assert not any(f.flags & FrameFlag.CLICK for f in out)


def test_bleed_flag_on_agent_channel_only():
    mic = [voiced(-45, s) for s in range(10)]     # customer at -20 dBFS leaking at -25 dB
    agent = FrameClassifier(0, mode=2, gate_dbfs=-60, coupling_db=20, bleed_margin_db=6)
    out = [agent.classify(f, i, customer_level_dbfs=-20.0) for i, f in enumerate(mic)]
    assert any(f.vad for f in out)
    assert not any(f.speech for f in out)
    assert all(f.flags & FrameFlag.BLEED for f in out)
    # the agent talking over the customer (much louder than the expected bleed) is speech
    loud = [agent.classify(voiced(-22, s), s, customer_level_dbfs=-20.0) for s in range(10)]
    assert sum(f.speech for f in loud) >= 8
    assert not any(f.flags & FrameFlag.BLEED for f in loud)
    # a silent customer channel explains nothing
    quiet = [agent.classify(f, i, customer_level_dbfs=-90.0) for i, f in enumerate(mic)]
    assert not any(f.flags & FrameFlag.BLEED for f in quiet)
    # the customer channel itself is never bleed-suppressed
    cust = FrameClassifier(1, mode=2, gate_dbfs=-60)
    assert not any(cust.classify(f, i, customer_level_dbfs=-20.0).flags & FrameFlag.BLEED for i, f in enumerate(mic))


def test_wrong_frame_length_raises():
    with pytest.raises(ValueError):
        FrameClassifier(0).classify(np.zeros(100, np.int16), 0)


def test_recent_key_presses_window_and_ring():
    k = RecentKeyPresses(capacity=4)
    assert not k.any_within(0, 10**12)
    for t in (100, 200, 300, 400, 500):
        k.note(t)
    assert len(k) == 4 and k.total == 5
    assert k.any_within(150, 250) and k.any_within(500, 500)
    assert not k.any_within(301, 399) and not k.any_within(501, 10**9)
    assert not k.any_within(50, 150), "the oldest press fell out of the ring"


def test_recent_key_presses_thread_safe():
    k = RecentKeyPresses(capacity=256)
    stop = threading.Event()
    errors = []

    def reader():
        while not stop.is_set():
            try:
                k.any_within(0, 10**12)
            except Exception as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    for i in range(20000):
        k.note(i * 1000)
    stop.set()
    th.join()
    assert not errors and k.total == 20000
    assert k.any_within(19999 * 1000, 19999 * 1000)


def test_key_presses_complete_until_follows_defer_and_resume():
    k = RecentKeyPresses()
    assert k.complete_until(1_000) == 1_000, "an input source that reads at once: complete up to now"
    k.defer(400)
    assert k.complete_until(1_000) == 400 and k.complete_until(300) == 300
    k.note(700)                  # read after the wait ...
    k.resume()                   # ... and noted: complete again
    assert k.complete_until(1_000) == 1_000 and k.any_within(650, 750)


def test_audio_source_holds_mic_frames_until_the_key_presses_near_them_are_known():
    """The XI2 input source reads in batches (up to 200 ms apart) and says so with
    RecentKeyPresses.defer: a mic click frame must wait for the press that is read late, and be
    rejected as a click (not released as speech before the press is known); without any press it
    is released after audio.align_wait_ms at the latest."""
    from station import config
    from station.capture.audio import AudioSource, _Track

    cfg = config.load(system=False)
    a = cfg.audio
    frame_ns = 20_000_000
    clicks = [f for f in (click(20000 - 500 * i) for i in range(10))
              if FrameClassifier(0, mode=3, gate_dbfs=-60, crest_limit_db=15).classify(f, 0).flags
              & FrameFlag.IMPULSIVE]
    assert clicks, "need a click frame that webrtcvad calls speech"

    def source(keys):
        src = AudioSource(cfg.replace(audio={"vad_mode": 3, "noise_floor_dbfs": -70, "gate_margin_db": 10}),
                          key_times=keys)
        src._has_customer = False
        src._tracks[Channel.AGENT] = _Track(Channel.AGENT, src._classifier(Channel.AGENT), RATE, N, frame_ns)
        return src

    t0 = 10**12
    end = t0 + frame_ns
    keys = RecentKeyPresses()
    src = source(keys)
    src._queue_agent(np.array([t0]), clicks[0].reshape(1, -1), end)
    keys.defer(t0 - 50_000_000)                 # the input source waits since before the frame
    out: list = []
    src._release_agent(end + a.click_window_ms * 1_000_000 + 80_000_000, out)
    assert out == [], "released while a press near the frame may still be unread"
    keys.note(t0 + 5_000_000)                   # the press, read after the wait
    keys.resume()
    src._release_agent(end + a.click_window_ms * 1_000_000 + 90_000_000, out)
    assert len(out) == 1 and len(out[0]["t_ns"]) == 1, "one block of one frame"
    assert out[0]["flags"][0] & FrameFlag.CLICK and not out[0]["speech"][0]

    keys = RecentKeyPresses()
    src = source(keys)
    src._queue_agent(np.array([t0]), clicks[0].reshape(1, -1), end)
    keys.defer(t0 - 50_000_000)                 # input stuck (e.g. X server gone): no resume
    src._release_agent(end + a.align_wait_ms * 1_000_000 - 1, out := [])
    assert out == []
    src._release_agent(end + a.align_wait_ms * 1_000_000, out)
    assert len(out) == 1 and len(out[0]["t_ns"]) == 1, "held at most audio.align_wait_ms"


def test_impulse_measures_of_a_block_equal_those_of_each_frame():
    """The audio source measures a whole block at once (impulse_measures_rows); the decision
    must be the one a frame measured alone gets (the same code offline and live)."""
    from station.vad import impulse_measures, impulse_measures_rows
    rng = np.random.default_rng(3)
    rows = [np.zeros(N, np.int16), click(), voiced(-30), voiced(-60, 1),
            rng.integers(-3000, 3000, N).astype(np.int16)]
    rows += [ringing_click_frames(o)[1] for o in (100, 266, 315)]
    block = np.stack(rows)
    for span in (80, N, N + 5):
        crests, shares = impulse_measures_rows(block, span)
        for row, c, s in zip(rows, crests, shares):
            assert (c, s) == impulse_measures(row, span)
    assert impulse_measures(np.zeros(N, np.int16), 80) == (0.0, 0.0)
    assert impulse_measures(click(), 80)[1] > 0.9 and impulse_measures(voiced(-30), 80)[1] < 0.5


def test_a_block_is_classified_as_its_frames_one_by_one():
    """The live source classifies a block of frames at once (classify_block); every frame must get
    the decision, level and flags it gets alone, in the same order (webrtcvad keeps state), with
    its own key-press and customer-level inputs."""
    rng = np.random.default_rng(11)
    kinds = [lambda s: voiced(-25, s), lambda s: voiced(-58, s), lambda s: click(), lambda s: np.zeros(N, np.int16),
             lambda s: rng.integers(-2000, 2000, N).astype(np.int16), lambda s: ringing_click_frames(100 + s % 200)[1]]
    frames = np.stack([kinds[int(rng.integers(len(kinds)))](s) for s in range(120)])
    t = np.arange(120, dtype=np.int64) * 20_000_000
    near = rng.random(120) < 0.5
    cust = np.where(rng.random(120) < 0.3, np.nan, rng.uniform(-80, -5, 120))
    for channel in (Channel.AGENT, Channel.CUSTOMER):
        block = FrameClassifier(channel, mode=3, gate_dbfs=-60).classify_block(
            frames, t, near_key_press=near, customer_level_dbfs=cust)
        alone = FrameClassifier(channel, mode=3, gate_dbfs=-60)
        one = [alone.classify(f, int(ti), near_key_press=bool(nk), customer_level_dbfs=None if np.isnan(c) else c)
               for f, ti, nk, c in zip(frames, t, near, cust)]
        assert [(f.t_ns, f.channel, f.dur_ns, f.level_dbfs_x10, f.vad, f.speech, f.flags) for f in one] == \
            list(zip(*(block[k].tolist() for k in ("t_ns", "channel", "dur_ns", "level_dbfs_x10", "vad",
                                                  "speech", "flags"))))
    flags = block["flags"]
    assert (flags & FrameFlag.CLICK).any() and (flags & FrameFlag.GATED).any(), "the mix exercises the checks"
    agent = FrameClassifier(Channel.AGENT, mode=3, gate_dbfs=-60).classify_block(
        frames, t, near_key_press=near, customer_level_dbfs=cust)
    assert (agent["flags"] & FrameFlag.BLEED).any()


def test_key_press_windows_of_a_block_match_a_scan():
    rng = np.random.default_rng(5)
    k = RecentKeyPresses(capacity=64)
    noted = [int(x) for x in rng.integers(0, 10**9, 100)]   # out of order, more than the ring holds
    for x in noted:
        k.note(x)
    kept = noted[-64:]
    t0 = rng.integers(0, 10**9, 500)
    t1 = t0 + rng.integers(0, 3 * 10**7, 500)
    expected = [any(a <= x <= b for x in kept) for a, b in zip(t0, t1)]
    assert k.within_each(t0, t1).tolist() == expected
    assert any(expected) and not all(expected)


def test_customer_level_of_each_mic_frame_is_the_loudest_overlapping_customer_frame():
    from station import config
    from station.capture.audio import AudioSource
    src = AudioSource(config.load(system=False))
    rng = np.random.default_rng(8)
    starts = np.arange(0, 200 * 20_000_000, 20_000_000, dtype=np.int64)
    keep = rng.random(200) < 0.8                     # gaps: windows without any customer frame
    starts = starts[keep]
    levels = np.round(rng.uniform(-90, -10, len(starts)), 1)
    src._remember_customer(starts[:90], levels[:90])
    src._remember_customer(starts[90:], levels[90:])
    t0 = rng.integers(-10**8, 5 * 10**9, 300)
    t1 = t0 + rng.integers(1, 2 * 10**8, 300)
    got = src._customer_levels(t0, t1)
    for a, b, g in zip(t0, t1, got):
        over = [lv for s, lv in zip(starts, levels) if s + 20_000_000 > a and s < b]
        assert (np.isnan(g) and not over) or g == max(over)
