"""The engine's results must not depend on how events were split into batches, and feeding the same
batches twice must give identical messages (the basis of exact replay)."""

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from station.engine import Engine
from station.events import Batch, decode_batch, encode_batch
from tests.engine_helpers import S, cfg, focus, marker, mouse, speech, typing

END_S = 100


def exam_events(rng: random.Random) -> list:
    """A random 100-second mix of calls, typing, mouse and focus."""
    ev = []
    spans = {0: [], 1: []}
    t = 1.0
    while t < END_S - 10:
        who = rng.randint(0, 1)
        length = rng.uniform(0.3, 6)
        spans[who].append((round(t, 2), round(min(t + length, END_S - 5), 2)))
        t += length + rng.choice([0.1, 0.5, 1.5, 4.0, 20.0])
    ev += speech(0, spans[0], 0, END_S) + speech(1, spans[1], 0, END_S)
    for _ in range(rng.randint(2, 8)):
        a = rng.uniform(0, END_S - 10)
        ev += typing(a, a + rng.uniform(0.5, 8), step_s=rng.choice([0.15, 0.3, 0.9]))
    for _ in range(rng.randint(1, 6)):
        a = rng.uniform(0, END_S - 10)
        ev += mouse(a, a + rng.uniform(0.1, 5), step_s=0.01)
    cats = ["crm", "knowledge", "chat", "other", "script", "email", "typing_task"]
    for k in range(rng.randint(10, 40)):
        ev.append(focus(rng.uniform(0, END_S - 2), rng.choice(cats)))
    if rng.random() < 0.5:
        a = rng.uniform(0, END_S / 2)
        ev += [marker(a, "start"), marker(a + rng.uniform(5, 60), "end")]
    return ev


def split(events, cuts_s, end_s=END_S + 2.0, lag_s=1.0):
    """Batches at the given times (plus the end); each holds the events older than its time."""
    events = sorted(events, key=lambda e: e.t_ns)
    out, i = [], 0
    for T in sorted(set(int(c * S) for c in cuts_s)) + [int(end_s * S)]:
        j = i
        while j < len(events) and events[j].t_ns < T:
            j += 1
        if out and T <= out[-1].t_ns:
            continue
        out.append(Batch.from_events(T, events[i:j], watermark_ns=T - int(lag_s * S)))
        i = j
    return out


def short_gaps():
    """Contacts separated by 5 s instead of 15/60 s: many more boundaries in a short session."""
    return cfg(contacts={"phone_gap_ms": 5000, "chat_gap_ms": 5000})


def final_result(batches):
    eng = Engine(short_gaps())
    for b in batches:
        eng.ingest(b)
    eng.finish(batches[-1].t_ns)
    contacts = [{k: v for k, v in c.items()} for c in eng.contacts]
    return contacts, eng.agent.closed.all.tolist(), eng.typing.closed.all.tolist()


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.floats(0.05, END_S + 1.9), min_size=1, max_size=200))
def test_final_figures_do_not_depend_on_batching(seed, cuts):
    events = exam_events(random.Random(seed))
    fine = split(events, [k * 0.25 for k in range(1, int(END_S * 4) + 8)])
    coarse = split(events, cuts)
    assert final_result(fine) == final_result(coarse)


def test_same_batches_give_identical_messages_after_codec_round_trip():
    events = exam_events(random.Random(7))
    batches = split(events, [k * 0.5 for k in range(1, int(END_S * 2) + 4)])

    def messages(bs):
        eng = Engine(cfg())
        out = []
        for b in bs:
            out += eng.ingest(b)
        out += eng.finish(bs[-1].t_ns)
        return [(k, t, msgpack.packb(body)) for k, t, body in out]

    live = messages(batches)
    replayed = messages([decode_batch(encode_batch(b)) for b in batches])
    assert live == replayed
    assert sum(1 for k, _, _ in live if k == "summary") > END_S * 2 * 0.9


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(0, 400), max_size=12), st.integers(0, 40))
def test_a_batch_of_handed_over_batches_equals_the_batch_of_their_events(seed, cuts, n_local):
    """The recorder merges the capture's batches (as received) with its own events
    (Batch.from_items); the result must be the batch that from_events makes of all of them:
    same rows, each stream in time order, although the pieces overlap in time."""
    from station.events import SourceHealth
    rng = random.Random(seed)
    events = exam_events(rng)[:400]
    rng.shuffle(events)          # arrival order is not time order across streams
    bounds = sorted(set(cuts)) + [len(events)]
    pieces, i = [], 0
    for j in bounds:
        if j > i:
            pieces.append(Batch.from_events(10 * S, events[i:j]))
            i = j
    local = [SourceHealth(int(rng.uniform(0, END_S) * S), "capture", "ok") for _ in range(n_local)]
    items = pieces + local
    merged = Batch.from_items(200 * S, items, watermark_ns=199 * S)
    assert merged == Batch.from_events(200 * S, events + local, watermark_ns=199 * S)
    assert merged.count() == len(events) + n_local
