"""The built-in demo scenario: reproducible, private, VAD-true, and its ground truth is right.

The 10-minute scenario runs through the real station.vad.FrameClassifier (webrtcvad); nothing is
mocked. Figures (generation time, VAD agreement) are printed; run with -s to see them.
"""

import json
import random
import threading
import time

import numpy as np
import pytest

from station import config
from station import intervals as iv
from station.capture.scenario import ScenarioSource, VirtualClock
from station.errors import UserError
from station.eventqueue import EventQueue
from station.events import (
    Batch,
    FocusChange,
    FrameFlag,
    KeyClass,
    KeyEvent,
    MouseBin,
    MouseClick,
    SourceHealth,
    SpeechFrame,
    encode_batch,
)
from station.scenario import Scenario
from station.scenario.truth import levenshtein

MS = 1_000_000
S = 1_000_000_000
START = 5_000 * S   # an arbitrary station-clock start


@pytest.fixture(scope="module")
def cfg():
    return config.load(system=False)


@pytest.fixture(scope="module")
def full(cfg):
    """Seed 1, 10 minutes, stepped in 1 s; (scenario, events, seconds it took)."""
    t0, c0 = time.perf_counter(), time.process_time()
    sc = Scenario(cfg, seed=1, duration_s=600.0, start_ns=START)
    events = []
    t = sc.start_ns
    while not sc.finished:
        t += S
        events += sc.events_until(t)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n[scenario] 10-minute exam (seed 1): {len(events)} events generated and classified in "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU")
    return sc, events, cpu   # CPU time: the machine may be shared with other work


def encoded(events) -> bytes:
    return encode_batch(Batch.from_events(0, events))


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


# ---------------------------------------------------------------------------- reproducibility

def test_generation_time_and_completeness(full):
    sc, events, took = full
    assert took < 15.0, f"10 minutes of scenario took {took:.1f} s of CPU"
    frames = of(events, SpeechFrame)
    assert len(frames) == 2 * sc.n_frames == 2 * 600 * 1000 // sc.frame_ms
    assert all(sc.start_ns <= e.t_ns < sc.end_ns for e in events)
    assert max(f.t_ns + f.dur_ns for f in frames) == sc.end_ns
    for cls in (KeyEvent, MouseBin, MouseClick, FocusChange):
        ts = [e.t_ns for e in of(events, cls)]
        assert ts and ts == sorted(ts), cls
    assert sc.events_until(sc.end_ns + 10 * S) == []


def test_same_seed_gives_identical_events(cfg, full):
    _, events, _ = full
    cut = START + 120 * S
    again = Scenario(cfg, seed=1, duration_s=600.0, start_ns=START).events_until(cut)
    mine = [e for e in events if (e.t_ns + e.dur_ns if isinstance(e, SpeechFrame) else e.t_ns + 1) <= cut]
    assert len(again) == len(mine) > 10_000
    assert encoded(again) == encoded(mine)


def test_step_sizes_do_not_change_the_events(cfg, full):
    _, events, _ = full
    sc = Scenario(cfg, seed=1, duration_s=600.0, start_ns=START)
    rng = random.Random(7)
    got = []
    t = START - 5 * S
    calls = 0
    while not sc.finished:
        t += rng.choice([1, 7 * MS, 20 * MS, 333 * MS, 2 * S, 17 * S, 61 * S])
        got += sc.events_until(t)
        calls += 1
    assert calls > 50
    assert len(got) == len(events)
    assert encoded(got) == encoded(events)


def test_different_seeds_give_different_valid_exams(cfg, full):
    _, events, _ = full
    cut = START + 120 * S
    mine = [e for e in events if (e.t_ns + e.dur_ns if isinstance(e, SpeechFrame) else e.t_ns + 1) <= cut]
    other = Scenario(cfg, seed=2, duration_s=600.0, start_ns=START)
    assert encoded(other.events_until(cut)) != encoded(mine)
    truths = [Scenario(cfg, seed=s, duration_s=600.0, start_ns=START).truth() for s in (1, 2, 3)]
    assert len({json.dumps(t, sort_keys=True) for t in truths}) == 3
    for t in truths:
        check_truth(t, START, START + 600 * S)


# ---------------------------------------------------------------------------- privacy

def test_characters_only_in_typing_task_windows(full):
    _, events, _ = full
    focus_t = []
    focus_cat = []
    for f in of(events, FocusChange):
        focus_t.append(f.t_ns)
        focus_cat.append(f.category)
    assert "typing_task" in focus_cat and focus_t[0] == START
    keys = of(events, KeyEvent)
    with_char = [k for k in keys if k.char]
    assert len(with_char) > 200                       # the typing task was typed with characters
    outside = 0
    for k in keys:
        cat = focus_cat[int(np.searchsorted(focus_t, k.t_ns, side="right")) - 1]
        if cat != "typing_task":
            outside += 1
            assert k.char == "", k
        if k.char:
            assert k.down and k.key_class == KeyClass.PRINTABLE
    assert outside > 500                              # plenty of typing elsewhere, none of it recorded


def test_titles_go_through_the_privacy_setting(cfg):
    hashed = cfg.replace(privacy={"titles": "hash"})
    sc = Scenario(hashed, seed=1, duration_s=600.0, start_ns=START)
    focus = of(sc.events_until(START + 120 * S), FocusChange)
    assert focus and all(f.title.startswith("sha256:") for f in focus)
    assert {f.category for f in focus} >= {"other", "typing_task", "crm"}


# ---------------------------------------------------------------------------- VAD

def smoothed(frames, cfg) -> np.ndarray:
    """The engine's talk spurts: voiced frames -> bridge gaps < padding -> drop runs < min_spurt."""
    raw = iv.normalize([(f.t_ns, f.t_ns + f.dur_ns) for f in frames if f.speech])
    return iv.at_least(iv.bridge(raw, cfg.speech.padding_ms * MS), cfg.speech.min_spurt_ms * MS)


def test_vad_output_agrees_with_planned_speech(cfg, full):
    sc, events, _ = full
    truth = sc.truth()
    frames = of(events, SpeechFrame)
    for ch, key in ((0, "agent_speech"), (1, "customer_speech")):
        fr = [f for f in frames if f.channel == ch]
        mid = np.array([f.t_ns + f.dur_ns // 2 for f in fr], dtype=np.int64)
        planned = iv.make(truth[key])
        voiced = iv.normalize([(START + a * MS, START + b * MS) for u in sc.plan.utterances if u.party == ch
                               for a, b in u.phrases])
        speech = np.array([f.speech for f in fr])
        raw_agree = float(np.mean(speech == iv._contains(voiced, mid)))
        spurt_agree = float(np.mean(iv._contains(smoothed(fr, cfg), mid) == iv._contains(planned, mid)))
        measured = iv.measure(smoothed(fr, cfg))
        print(f"[scenario] channel {ch}: frame agreement raw-vs-phrases {raw_agree:.4f}, "
              f"spurts-vs-utterances {spurt_agree:.4f}, talk {measured // MS} ms vs planned "
              f"{iv.measure(planned) // MS} ms")
        assert raw_agree >= 0.95 and spurt_agree >= 0.95
        assert abs(measured - iv.measure(planned)) <= 0.02 * iv.measure(planned)


def test_clicks_and_bleed_are_rejected_not_speech(cfg, full):
    sc, events, _ = full
    truth = sc.truth()
    agent = [f for f in of(events, SpeechFrame) if f.channel == 0]
    planned = iv.make(truth["agent_speech"])
    starts = np.array([f.t_ns for f in agent], dtype=np.int64)
    outside = ~iv._contains(planned, starts) & ~iv._contains(planned, starts + agent[0].dur_ns - 1)
    speech_outside = [f for f, o in zip(agent, outside) if o and f.speech]
    clicks = [f for f in agent if f.flags & FrameFlag.CLICK]
    bleed = [f for f in agent if f.flags & FrameFlag.BLEED]
    print(f"[scenario] agent channel: {len(clicks)} click frames and {len(bleed)} bleed frames rejected, "
          f"{len(speech_outside)} speech frames outside planned agent speech")
    assert speech_outside == []
    # the rejections did real work: webrtcvad itself called these frames speech
    assert sum(1 for f in clicks if f.vad) > 100
    assert sum(1 for f in bleed if f.vad) > 100
    # bleed sits about 25 dB under the simultaneous customer frame
    cust = {f.t_ns: f.level_dbfs_x10 for f in of(events, SpeechFrame) if f.channel == 1}
    diffs = [cust[f.t_ns] - f.level_dbfs_x10 for f in bleed if cust[f.t_ns] > -350]
    assert 200 <= float(np.median(diffs)) <= 300


# ---------------------------------------------------------------------------- ground truth

def check_truth(t: dict, start: int, end: int) -> None:
    """The plan constraints of the brief, checked on the truth alone."""
    json.dumps(t)
    phones = [c for c in t["contacts"] if c["kind"] == "phone"]
    chats = [c for c in t["contacts"] if c["kind"] == "chat"]
    assert len(phones) >= 2 and len(chats) >= 1
    agent, cust = iv.make(t["agent_speech"]), iv.make(t["customer_speech"])
    for party in (agent, cust):
        assert np.all(party[:, 1] - party[:, 0] >= 600 * MS)
        assert np.all(party[1:, 0] - party[:-1, 1] >= 500 * MS)
    speech = iv.union(agent, cust)
    calls = iv.normalize([(c["start_ns"], c["end_ns"]) for c in phones])
    assert iv.measure(iv.difference(speech, calls)) == 0         # nobody speaks outside calls
    assert np.all(calls[1:, 0] - calls[:-1, 1] >= 30 * S)
    assert sum(c["dead_air_count"] for c in phones) >= 1
    assert sum(c["overtalk_count"] for c in phones) >= 1
    for c in phones:
        assert start <= c["start_ns"] < c["end_ns"] <= end
        assert c["customer_talk_ms"] >= 1000
        assert 0.1 < c["s3_agent_share"] < 0.95 and 0.1 < c["s3_customer_share"] < 0.95
        assert 0.0 < c["s1_share"] < 1.0
        # dead air and overtalk recomputed from the speech lists
        conv = iv.clip(speech, c["start_ns"], c["end_ns"])
        gaps = iv.complement(conv, c["start_ns"], c["end_ns"])
        assert c["dead_air_count"] == int(np.sum(iv.lengths(gaps) >= 3 * S))
        over = iv.intersect(iv.clip(agent, c["start_ns"], c["end_ns"]), iv.clip(cust, c["start_ns"], c["end_ns"]))
        assert c["overtalk_count"] == int(np.sum(iv.lengths(over) >= 500 * MS))
        assert c["agent_talk_ms"] == iv.measure(iv.clip(agent, c["start_ns"], c["end_ns"])) // MS
    focus = t["focus"]
    for c in chats:
        inside = [(ts, cat) for ts, cat in focus if c["start_ns"] <= ts <= c["end_ns"]]
        assert inside[0] == (c["start_ns"], "chat") and inside[-1][1] != "chat"
        away = None
        for ts, cat in inside:
            if cat != "chat" and away is None:
                away = ts
            elif cat == "chat" and away is not None:
                assert ts - away < 60 * S
                away = None
    task = t["typing_task"]
    assert 0.95 <= task["accuracy"] < 1.0
    assert task["accuracy"] == 1 - levenshtein(task["typed"], task["reference"]) / len(task["reference"])
    assert t["corrections"] > 0 and t["keys_pressed"] > 500


def test_truth_satisfies_the_plan_constraints(full):
    sc, _, _ = full
    t = sc.truth()
    check_truth(t, sc.start_ns, sc.end_ns)
    for c in t["contacts"]:
        print(f"[scenario] {c['kind']:5} {(c['end_ns'] - c['start_ns']) / S:6.1f} s  agent {c['agent_talk_ms']} ms "
              f"customer {c['customer_talk_ms']} ms  dead air {c['dead_air_count']}  overtalk {c['overtalk_count']}"
              f"  S3 {c['s3_agent_share']:.2f}/{c['s3_customer_share']:.2f}  S1 {c['s1_share']:.2f}")
    print(f"[scenario] typing task accuracy {t['typing_task']['accuracy']:.4f}")


def test_truth_matches_the_emitted_events(cfg, full):
    """Typing, mouse, focus and typed text recomputed from the event stream equal the truth."""
    sc, events, _ = full
    t = sc.truth()
    keys = of(events, KeyEvent)
    presses = [k.t_ns for k in keys if k.down]
    assert len(presses) == t["keys_pressed"]
    assert sum(1 for k in keys if k.down and k.key_class == KeyClass.BACKSPACE) == t["corrections"]
    # bursts: presses with gaps <= 2 s, first press to last release
    bursts = []
    pending_releases = []
    for k in keys:
        if k.down:
            if bursts and k.t_ns - bursts[-1][2] <= cfg.activity.typing_burst_gap_ms * MS:
                bursts[-1][2] = k.t_ns
            else:
                bursts.append([k.t_ns, k.t_ns, k.t_ns])
        else:
            pending_releases.append(k.t_ns)
    ends = np.array(sorted(pending_releases))
    got = []
    for i, (s, _, last_press) in enumerate(bursts):
        nxt = bursts[i + 1][0] if i + 1 < len(bursts) else 1 << 62
        rel = ends[(ends > last_press) & (ends < nxt)]
        got.append([s, int(rel.max())])
    assert got == t["typing_bursts"]
    mouse_t = [e.t_ns for e in events if isinstance(e, (MouseBin, MouseClick))]
    spans = iv.bridge(iv.normalize([(x, x + 10 * MS) for x in mouse_t]), cfg.activity.mouse_active_gap_ms * MS + 1)
    assert spans.tolist() == t["mouse_active"]
    assert [[f.t_ns, f.category] for f in of(events, FocusChange)] == t["focus"]
    typed = []
    for k in keys:
        if k.down and k.char:
            typed.append(k.char)
        elif k.down and k.key_class == KeyClass.BACKSPACE and typed and _in_task(k.t_ns, t["focus"]):
            typed.pop()
    assert "".join(typed) == t["typing_task"]["typed"]


def _in_task(t_ns: int, focus: list) -> bool:
    cat = "other"
    for ts, c in focus:
        if ts > t_ns:
            break
        cat = c
    return cat == "typing_task"


def test_too_short_a_duration_is_a_clear_error(cfg):
    with pytest.raises(UserError, match="too short") as e:
        Scenario(cfg, seed=1, duration_s=120.0)
    assert e.value.exit_code == 2


# ---------------------------------------------------------------------------- paced source

def test_virtual_clock_runs_at_speed():
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            VirtualClock(0, bad)
    clock = VirtualClock(10 * S, 50.0)
    a = clock.now()
    time.sleep(0.2)
    b = clock.now()
    assert 10 * S <= a < 10 * S + 2 * S
    assert 8 * S <= b - a <= 20 * S


def test_source_emits_the_whole_scenario_once_and_stops(cfg):
    sc = Scenario(cfg, seed=3, duration_s=360.0, start_ns=START)
    reference = Scenario(cfg, seed=3, duration_s=360.0, start_ns=START).events_until(START + 360 * S)
    sink = EventQueue()
    src = ScenarioSource(sc, VirtualClock(START, 2000.0))
    src.start(sink)
    deadline = time.monotonic() + 60
    while not src.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    src.stop()
    assert src.finished and src.status()["state"] == "finished"
    got = sink.drain()
    health = [e for e in got if isinstance(e, SourceHealth)]
    assert [(h.source, h.state) for h in health] == [("scenario", "ok")]
    rest = [e for e in got if not isinstance(e, SourceHealth)]
    assert encoded(rest) == encoded(reference)


def test_source_paces_with_the_clock_and_stops_promptly(cfg):
    sc = Scenario(cfg, seed=1, duration_s=600.0, start_ns=START)
    sink = EventQueue()
    src = ScenarioSource(sc, VirtualClock(START, 10.0))
    src.start(sink)
    time.sleep(0.5)
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == "scenario-source" for t in threading.enumerate())
    got = [e for e in sink.drain() if not isinstance(e, SourceHealth)]
    # about 5 s of station time in 0.5 s of wall time at 10x: not the whole exam
    last = max(e.t_ns for e in got)
    assert START + 2 * S < last < START + 15 * S
    assert not src.finished and src.status()["state"] == "ok"
