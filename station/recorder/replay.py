"""Re-run the metrics engine on a journal, offline, with the session's own configuration.

The engine is fed exactly the journaled batches, so the messages it produces must equal the
journaled ones (kinds the engine produces: summary, contact, alert, mark, exam), byte for byte.
``replay`` reports any difference; ``station replay`` exits non-zero on one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from station.config import Config
from station.engine import Engine
from station.engine.core import LATE_STREAMS
from station.errors import JournalError
from station.events import Batch
from station.protocol import packb

ENGINE_KINDS = ("summary", "contact", "alert", "mark", "exam", "evidence")


def session_config(journal) -> Config:
    """The configuration the session ran with (snapshot in its header), not today's files."""
    return Config(journal.header.config, [f"{journal.path} (session snapshot)"])


def make_engine(journal, live: bool = True) -> Engine:
    return Engine(session_config(journal), reference_text=journal.get_meta("reference_text") or "", live=live)


FAST_CHUNK_NS = 60_000_000_000   # fast replay feeds the engine a minute of batches at a time
FINAL_KINDS = ("contact", "mark", "exam")


@dataclass
class ReplayResult:
    engine: Engine
    produced: int = 0
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    journaled_only: int = 0
    batches: int = 0
    events: int = 0


def replay(journal, *, compare: bool = True, finish: bool = True, exact: bool = True) -> ReplayResult:
    """Feed every journaled batch to a fresh engine; compare its messages with the journal's.

    exact=True: batch by batch, as live, so every message (live summaries included) must come out
    identical and in the same order. exact=False: the fast path for final figures: batches are
    merged into one-minute chunks and live summaries are skipped; because final figures do not
    depend on batching, the contact, mark and exam messages must still equal the journaled ones.
    A batch holding late events starts a new chunk, so that they are late here as they were live.
    finish: also close the session (as at its end) so that the engine holds final figures; the
    closing messages are compared only if the session was ended (they were journaled then).
    """
    if not exact:
        return _replay_fast(journal, compare=compare, finish=finish)
    engine = make_engine(journal)
    res = ReplayResult(engine)
    expected = journal.iter_messages(kinds=ENGINE_KINDS) if compare else iter(())
    last_t = None

    unreadable = []   # the journaled messages could not be read on (an edited journal): stop comparing

    def check(outputs):
        nonlocal expected
        for kind, t_ns, body in outputs:
            res.produced += 1
            if not compare or unreadable:
                continue
            try:
                want = next(expected, None)
            except JournalError as e:
                unreadable.append(str(e))
                res.mismatches.append(f"journaled messages unreadable after {res.compared} compared: {e}")
                expected = iter(())
                continue
            res.compared += 1
            got = packb(body)
            if want is None:
                if len(res.mismatches) < 20:
                    res.mismatches.append(f"replay produced an extra {kind} message at t={t_ns}")
            elif (want.kind, want.t_ns, want.body) != (kind, t_ns, got):
                if len(res.mismatches) < 20:
                    res.mismatches.append(f"seq {want.seq}: journal has {want.kind}@{want.t_ns}, replay gives {kind}@{t_ns}"
                                          + ("" if want.kind != kind or want.t_ns != t_ns else " (body differs)"))

    for batch in journal.iter_batches():
        res.batches += 1
        res.events += batch.count()
        last_t = batch.t_ns
        check(engine.ingest(batch))
    ended = journal.get_meta("ended_ns")
    if finish:
        end_t = int(ended) if ended else (last_t if last_t is not None else journal.header.created_mono_ns)
        outs = engine.finish(end_t)
        if ended:
            check(outs)
    if compare and not unreadable:
        try:
            res.journaled_only = sum(1 for _ in expected)
        except JournalError as e:
            res.mismatches.append(f"journaled messages unreadable after {res.compared} compared: {e}")
        if res.journaled_only:
            res.mismatches.append(f"{res.journaled_only} journaled engine message(s) not reproduced by replay")
    return res


def _has_late(batch: Batch, watermark: int | None) -> bool:
    """Does the batch hold a measurement older than ``watermark`` (late: see Engine._without_late)?"""
    if watermark is None:
        return False
    for name in LATE_STREAMS:
        cols = batch.streams.get(name)
        if cols is not None and len(cols["t_ns"]) and int(np.min(cols["t_ns"])) < watermark:
            return True
    return False


def _replay_fast(journal, *, compare: bool, finish: bool) -> ReplayResult:
    engine = make_engine(journal, live=False)
    res = ReplayResult(engine)
    produced: list[tuple[str, int, bytes]] = []
    chunk: list = []
    last_t = None

    def feed():
        if chunk:
            for kind, t_ns, body in engine.ingest(Batch.concat(chunk)):
                produced.append((kind, t_ns, packb(body)))
            chunk.clear()

    watermark = None   # the engine's watermark once every batch so far is fed (the running max)
    for batch in journal.iter_batches():
        res.batches += 1
        res.events += batch.count()
        last_t = batch.t_ns
        if chunk and _has_late(batch, watermark):
            feed()   # live, its late events were late against this watermark: so they must be here
        chunk.append(batch)
        watermark = batch.watermark_ns if watermark is None else max(watermark, batch.watermark_ns)
        if batch.t_ns - chunk[0].t_ns >= FAST_CHUNK_NS:
            feed()
    feed()
    ended = journal.get_meta("ended_ns")
    if finish:
        end_t = int(ended) if ended else (last_t if last_t is not None else journal.header.created_mono_ns)
        for kind, t_ns, body in engine.finish(end_t):
            produced.append((kind, t_ns, packb(body)))
    res.produced = len(produced)
    if compare:
        want = sorted((m.kind, m.body) for m in journal.iter_messages(kinds=FINAL_KINDS))
        got = sorted((k, b) for k, _, b in produced if k in FINAL_KINDS)
        if not ended:   # contacts still open at a crash were never journaled
            got = [g for g in got if g in set(want)] if len(got) > len(want) else got
        res.compared = len(want)
        if want != got:
            missing = len([w for w in want if w not in set(got)])
            extra = len([g for g in got if g not in set(want)])
            res.mismatches.append(f"final figures differ from the journaled ones: {missing} journaled message(s) "
                                  f"not reproduced, {extra} produced that were not journaled")
    return res
