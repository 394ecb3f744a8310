"""The recorder: journal, engine and publisher, fed by an event queue.

One ingest cycle (``step``), every ``journal.ingest_interval_ms``:

1. drain the queue into one ``Batch`` stamped with the recorder clock (its "now") and a
   watermark (the time up to which all sources have delivered);
2. journal the batch; run the engine on it; journal every message it produces (sequence numbers
   are assigned by the journal); once a second, also a ``health`` message (and every other
   second the status file for ``station status``);
3. commit (the cycle survives SIGKILL from here on), then publish the committed messages and
   acknowledge the assessor commands of this batch; every ``commit_interval_ms``, fsync the WAL
   (power-loss safety: at most that much data at risk).

Journal before publish: a message a console saw is always in the journal, so a restarted recorder
never reuses a sequence number.

Sessions: on start the recorder resumes this station's open session (same boot) by replaying its
journal into a fresh engine, so figures and sequence numbers continue; otherwise it creates one.

The clock is injected (``clock``): the real monotonic clock live, a virtual clock in the demo.
The recorder never reads the wall clock except once per session for the header's anchor.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from station import __version__, software
from station.competences import CommandError
from station.clock import boot_id, monotonic_ns, wall_anchor
from station.config import Config, ConfigError
from station.config import data_dir as config_data_dir
from station.engine import Engine
from station.errors import JournalError, UserError
from station.eventqueue import EventQueue
from station.events import DEFAULT_LAG_NS, Batch, ExamControl, IntegrityEvent, SourceHealth
from station.headset import ProfileFile, profile_warnings
from station.protocol import packb
from station.recorder.assessor_commands import command_to_event
from station.recorder.journal import Journal, SessionHeader, list_sessions, new_session_id
from station.recorder.replay import replay
from station.recorder.status import status_path, write_status

log = logging.getLogger(__name__)
NS_PER_MS = 1_000_000
HEALTH_INTERVAL_NS = 1_000_000_000   # a health message (consoles, journal) this often
STATUS_INTERVAL_NS = 2_000_000_000   # the status file (``station status``; stale after 5 s) this often:
                                     # each rewrite is a file creation and a rename (~0.2-0.8 ms of CPU)
MAX_BACKLOG_CYCLES = 7200   # un-journaled ingest cycles kept in memory while the disk is full (1 h at 500 ms)


def is_space_error(e: Exception) -> bool:
    """A journal write that failed for lack of space (SQLITE_FULL, ENOSPC surfacing as an I/O error)."""
    text = str(e).lower()
    return any(s in text for s in ("disk full", "disk is full", "no space", "disk i/o error"))


def read_reference_text(cfg: Config) -> str:
    """The typing-task reference text (config typing.reference_file, relative to the config dir),
    with runs of white space collapsed to one space (as typed on one line)."""
    name = cfg.typing.reference_file
    if not name:
        return ""
    path = Path(name)
    if not path.is_absolute():
        path = cfg.base_dir / path
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as e:
        from station.config import ConfigError
        raise ConfigError(f"typing.reference_file = {name!r}: cannot read {path}: {e}") from None


class Recorder:
    """Journal + engine + publisher for one station.

    cfg: configuration. clock: station-clock function (ns). data_dir: journals (default from cfg).
    publisher_factory: ``f(cfg, header, journal_path, on_command, clock=) -> publisher`` or None (no
    streaming). watermark: ``f(now_ns) -> ns`` up to which sources have delivered everything
    (default now - 1 s). sources_status: ``f() -> dict`` for the health beat.
    initial_health: ``f() -> [SourceHealth]``, the sources' current states, journaled at the start
    of every new session (an exam end opens one while the capture stays connected).
    simulated: non-empty when this recorder's own sources are simulated (``station run --sources
    scenario``): the reason, journaled as ``IntegrityEvent("simulated")`` in every session.
    """

    def __init__(self, cfg: Config, *, clock: Callable[[], int] = monotonic_ns, data_dir: Path | None = None,
                 publisher_factory=None, queue: EventQueue | None = None,
                 watermark: Callable[[int], int] | None = None,
                 sources_status: Callable[[], dict] | None = None, resume: bool = True,
                 initial_health: Callable[[], list] | None = None, simulated: str = ""):
        self.cfg = cfg
        self.clock = clock
        self.data_dir = Path(data_dir) if data_dir is not None else config_data_dir(cfg)
        self.queue = queue if queue is not None else EventQueue()
        self.watermark_fn = watermark or (lambda now: now - DEFAULT_LAG_NS)
        self.sources_status = sources_status or (lambda: {})
        self.initial_health = initial_health or (lambda: [])
        self.simulated = simulated
        self.publisher_factory = publisher_factory
        self.resume = resume
        self.publisher = None
        self.journal: Journal | None = None
        self.engine: Engine | None = None
        self.last_summary: dict | None = None
        self.last_health_t = None
        self.last_sync_t = None
        self.last_status_t = None
        self.ingest_ns = cfg.journal.ingest_interval_ms * NS_PER_MS
        self.commit_ns = cfg.journal.commit_interval_ms * NS_PER_MS
        self._acks_lock = threading.Lock()
        self._pending_acks: list[tuple[Any, threading.Event, dict]] = []
        self._lock = threading.Lock()
        self.journal_error: str | None = None
        self.counters = {"batches": 0, "events": 0, "messages": 0, "commit_failures": 0}
        self.resumed = False
        self.backlog_cycles = 0     # ingest cycles not yet committed (disk full); see _journal_full
        self.status_file: Path | None = status_path(self.data_dir)   # None: no status file
        self._profile_file = ProfileFile(cfg)      # the headset profile, for the health beat

    # ------------------------------------------------------------ session
    def open_session(self) -> Journal:
        """Resume this station's open session from the same boot, or start a new one."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        boot = boot_id()
        if self.resume:
            for info in reversed(list_sessions(self.data_dir)):
                if info.station_id != self.cfg.station.id or info.ended:
                    continue
                try:
                    j = Journal.open(info.path, writable=True)
                except Exception as e:  # an unreadable journal is left alone, a new session starts
                    log.warning("cannot resume %s: %s", info.path, e)
                    continue
                if j.header.boot_id != boot or j.header.config_hash != self.cfg.hash:
                    j.close()
                    continue
                res = replay(j, compare=False, finish=False)
                self.engine = res.engine
                self.journal = j
                self.resumed = True
                log.info("resumed session %s at seq %d", j.header.session_id, j.last_seq())
                self.queue.put(SourceHealth(self.clock(), "recorder", "ok", "recorder restarted; session resumed"))
                break
        if self.journal is None:
            mono, wall = wall_anchor()
            header = SessionHeader(station_id=self.cfg.station.id, session_id=new_session_id(self.cfg.station.id, wall),
                                   created_mono_ns=self.clock() if self.clock is not monotonic_ns else mono,
                                   created_wall_ns=wall, boot_id=boot, software_version=__version__,
                                   config_hash=self.cfg.hash, config=self.cfg.as_dict())
            self.journal = Journal.create(self.data_dir, header)
            ident = software.identity()
            self.journal.set_meta("software", json.dumps(ident))
            if ident["writable_by_others"]:
                self.queue.put(IntegrityEvent(self.clock(), "software_writable",
                                              "recorder's code: " + "; ".join(ident["writable_by_others"])))
            ref = read_reference_text(self.cfg)
            self.journal.set_meta("reference_text", ref)
            self.journal.set_meta("headset", json.dumps(self._headset_status()))
            self.journal.commit()
            self.engine = Engine(self.cfg, reference_text=ref)
            for ev in self.initial_health():
                self.queue.put(ev)
            if self.simulated:
                self.queue.put(IntegrityEvent(self.clock(), "simulated", self.simulated))
        if self.publisher_factory is not None:
            self.publisher = self.publisher_factory(self.cfg, self.journal.header, self.journal.path,
                                                    self.submit_command, clock=self.clock)
            self.publisher.start()
        return self.journal

    def _headset_status(self) -> dict:
        """The headset profile's state for the health beat (every second; the file is parsed
        again only when it changed: ``ProfileFile``)."""
        try:
            profile = self._profile_file.current()
        except (ConfigError, OSError) as e:
            return {"status": "invalid", "warnings": [str(e)]}
        warnings = profile_warnings(self.cfg, profile)
        out: dict[str, Any] = {"status": "ok" if not warnings else "warning", "warnings": warnings}
        if profile is not None:
            out.update(headset_id=profile.headset_id, calibrated=profile.created, passed=profile.passed,
                       technician=profile.technician)
        return out

    # --------------------------------------------------------------- cycle
    def step(self) -> list[tuple[int, str, int, dict]]:
        """One ingest cycle. Returns the (seq, kind, t_ns, body) messages it published."""
        if self.backlog_cycles >= MAX_BACKLOG_CYCLES and not self._retry_backlog():
            return []          # disk still full and the in-memory backlog is at its bound
        now = self.clock()
        with self._acks_lock:
            acks, self._pending_acks = self._pending_acks, []
        batch = self.queue.drain_batch(now, self.watermark_fn)   # events and the capture's batches
        outputs = self.engine.ingest(batch)
        for kind, t_ns, body in outputs:
            if kind == "summary":
                self.last_summary = body
        if self.last_health_t is None or now - self.last_health_t >= HEALTH_INTERVAL_NS:
            self.last_health_t = now
            health = self.health(now)
            outputs.append(("health", now, health))
            if self.last_status_t is None or now - self.last_status_t >= STATUS_INTERVAL_NS:
                self.last_status_t = now
                self._write_status(health)
        published = self._journal_and_publish(batch, outputs)
        for _, done, result in acks:
            result["journaled"] = True
            done.set()
        self.counters["batches"] += 1
        self.counters["events"] += batch.count()
        return published

    def _journal_and_publish(self, batch: Batch, outputs) -> list:
        j = self.journal
        msgs = []
        with self._lock:
            j.append_batch(batch)
            for kind, t_ns, body in outputs:
                packed = packb(body)
                seq = j.append_message(kind, t_ns, packed)
                msgs.append((seq, kind, t_ns, packed, body))
            now = batch.t_ns
            try:
                j.commit()
            except (sqlite3.Error, JournalError) as e:
                self.counters["commit_failures"] += 1
                self.journal_error = str(e)
                if not is_space_error(e):
                    log.error("journal commit failed: %s", e)
                    raise
                self._journal_full(now, e)     # keep publishing; the journal keeps the backlog
            else:
                if self.backlog_cycles:
                    self._journal_back(now)
                self.journal_error = None
                if self.last_sync_t is None or now - self.last_sync_t >= self.commit_ns:
                    try:
                        j.sync()
                    except JournalError as e:   # committed (safe from SIGKILL), not yet on disk
                        log.warning("journal sync failed: %s", e)
                    self.last_sync_t = now
        if self.publisher is not None:
            for seq, kind, t_ns, packed, _ in msgs:
                self.publisher.publish(seq, kind, t_ns, packed)
        self.counters["messages"] += len(msgs)
        return [(seq, kind, t_ns, body) for seq, kind, t_ns, _, body in msgs]

    # ------------------------------------------------------ disk full
    # A commit that fails because the disk is full does not stop the recorder: the Journal keeps
    # every appended (sequence-numbered, hash-chained) row in its write buffer and retries them,
    # in order, at the next commit; messages are still published live meanwhile. An alert
    # (SourceHealth "journal" lost/ok, hence an engine alert and a report gap meaning "journal
    # writes delayed") is raised when it starts and ends. Memory is bounded by
    # MAX_BACKLOG_CYCLES: beyond it the recorder stops ingesting (events wait in the bounded
    # queue, then in the capture's outbox) and only retries the commit.

    def _journal_full(self, now: int, e: Exception) -> None:
        if self.backlog_cycles == 0:
            log.error("journal disk full: %s; publishing continues, un-journaled data held in memory", e)
            self.queue.put(SourceHealth(now, "journal", "lost", "disk full: journal writes delayed, data held in memory"))
        self.backlog_cycles += 1

    def _journal_back(self, now: int) -> None:
        log.warning("journal writable again: %d delayed batches written", self.backlog_cycles)
        self.queue.put(SourceHealth(now, "journal", "ok", f"journal writable again; {self.backlog_cycles} "
                                                          "delayed batches written"))
        self.backlog_cycles = 0

    def _retry_backlog(self) -> bool:
        """Backlog at its bound: only retry the commit. True when the journal took it."""
        try:
            with self._lock:
                self.journal.commit()
        except (sqlite3.Error, JournalError) as e:
            self.counters["commit_failures"] += 1
            self.journal_error = str(e)
            if not is_space_error(e):
                raise
            return False
        self._journal_back(self.clock())
        self.journal_error = None
        return True

    def health(self, now: int) -> dict:
        j = self.journal
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            free = -1
        out = {"t_ns": now, "station_id": self.cfg.station.id, "session_id": j.header.session_id,
               "sources": self.sources_status(), "engine_health": dict(self.engine.health),
               "queue": {"waiting": len(self.queue), "dropped": self.queue.dropped},
               "journal": {"size_bytes": j.size_bytes(), "last_seq": j.last_seq(), "blocks": j.block_count(),
                           "disk_free_bytes": free, "error": self.journal_error},
               "headset": self._headset_status(), "software_version": __version__,
               "counters": dict(self.counters),
               "chain_heads": j.chain_heads()}   # committed heads: the consoles keep them (station/anchors.py)
        if self.publisher is not None:
            out["publisher"] = self.publisher.stats()
        return out

    def _write_status(self, health: dict) -> None:
        """Status file for ``station status`` (station/status.py); best effort, never raises."""
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, health)
        except OSError as e:
            log.debug("status file not written: %s", e)

    # ------------------------------------------------------------ commands
    def submit_command(self, cmd: dict, timeout_s: float = 5.0) -> dict:
        """Called by the publisher (its command thread): validate, queue the event, and return once
        it is journaled (committed): ``{"journaled": true, "t_ns": ...}``. A mark whose mark_id is
        already journaled (a retry across a restart) is acknowledged without journaling it again.
        Raises CommandError (refused) or UserError (not journaled in time)."""
        now = self.clock()
        event = command_to_event(cmd, now, self.journal.header.created_mono_ns)
        if isinstance(event, ExamControl) and event.action == "start":
            blockers = self.exam_blockers()
            if blockers:
                raise CommandError("exam start refused: " + "; ".join(blockers))
        mark_id = getattr(event, "mark_id", "")
        if mark_id and any(m["mark_id"] == mark_id and m.get("key_fp", "") == event.key_fp for m in self.engine.marks):
            return {"journaled": True, "duplicate": True}
        done = threading.Event()
        result: dict = {"journaled": False, "t_ns": event.t_ns}
        with self._acks_lock:
            self.queue.put(event)
            self._pending_acks.append((event, done, result))
        if not done.wait(timeout_s):
            raise UserError("the station did not journal the command in time")
        return result

    def exam_blockers(self) -> list[str]:
        """Why an exam may not start now: each source of ``station.exam_requires`` that has
        reported a state other than "ok" (as of the last ingest cycle), with its detail."""
        out = []
        for source in self.cfg.station.exam_requires:
            state = self.engine.health.get(source)
            if state is not None and state != "ok":
                detail = self.engine.health_detail.get(source, "")
                out.append(f"{source} is {state}" + (f" ({detail})" if detail else ""))
        return out

    # ---------------------------------------------------------------- end
    def end_session(self) -> None:
        """Close the session: final contacts and summary journaled and published, journal ended."""
        if self.journal is None:
            return
        self.step()
        t = self.clock()
        outputs = self.engine.finish(t)   # replay calls finish(ended_ns) after the last batch too
        self._journal_and_publish_outputs_only(outputs)
        self._journal_and_publish_outputs_only([("anchor", t, self._final_anchor(t))])
        self.journal.end(t)

    def _final_anchor(self, t: int) -> dict:
        """The session's final chain heads signed with the station key (station/anchors.py);
        unsigned when the station has no key (plaintext demo) or it cannot be read."""
        from station import anchors, keys
        key = None
        if not self.cfg.publisher.allow_plaintext_loopback:
            try:
                key = anchors.signing_key(keys.load_secret(keys.station_secret_file(self.cfg))[1])
            except UserError as e:
                log.warning("exam-end anchor not signed: %s", e)
        h = self.journal.header
        return anchors.sign_anchor(key, h.station_id, h.session_id, self.journal.chain_heads(), t, h.wall_ns(t))

    def rotate_session(self) -> None:
        """End the current session (exam ended) and open a fresh one; consoles are told by the
        publisher's session switch."""
        self.end_session()
        self.journal.close()
        self.journal, self.engine = None, None
        publisher, self.publisher = self.publisher, None
        factory, self.publisher_factory = self.publisher_factory, None
        resume, self.resume = self.resume, False
        try:
            self.open_session()
        finally:
            self.publisher_factory, self.resume, self.publisher = factory, resume, publisher
        if publisher is not None:
            publisher.switch_session(self.journal.header, self.journal.path)

    def _journal_and_publish_outputs_only(self, outputs) -> None:
        j = self.journal
        msgs = []
        with self._lock:
            for kind, t_ns, body in outputs:
                packed = packb(body)
                msgs.append((j.append_message(kind, t_ns, packed), kind, t_ns, packed))
            j.commit()
            j.sync()
        if self.publisher is not None:
            for m in msgs:
                self.publisher.publish(*m)

    def close(self, end: bool = False) -> None:
        if end:
            self.end_session()
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        if self.journal is not None:
            try:
                self.journal.close()
            except JournalError as e:
                log.error("journal not written at stop (%d delayed batches lost): %s", self.backlog_cycles, e)
            self.journal = None

    def run(self, stop: threading.Event, on_step: Callable[[list], None] | None = None,
            sleep: Callable[[float], None] | None = None) -> None:
        """Loop until ``stop`` is set, one step every ingest interval of the recorder clock."""
        while not stop.is_set():
            published = self.step()
            if on_step is not None:
                on_step(published)
            stop.wait(self.ingest_ns / 1e9) if sleep is None else sleep(self.ingest_ns / 1e9)
