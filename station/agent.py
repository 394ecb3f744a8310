"""Wiring of the station's processes.

- ``run_agent``: sources, journal, engine and publisher in one process (``station run``);
- ``run_capture``: the sources alone, handing events to a recorder over the local socket
  (``station capture``, in the candidate's graphical session);
- ``run_recorder``: journal, engine and publisher fed by the hand-over socket
  (``station recorder``, a system service under its own user).

Sources are ``real`` (audio VAD, keyboard/mouse, window focus) or ``scenario`` (the demo's simulated
exam, paced at ``speed`` x real time: for tests, soak runs and demonstrations). A source that
cannot start reports itself lost in health and the others keep running (degrade, don't die).

Stopping: SIGTERM/SIGINT stop cleanly; the session stays open so that a restart resumes it. An
assessor's "exam end" command ends the session and the recorder opens a fresh one.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from .clock import monotonic_ns
from .config import Config, data_dir as config_data_dir
from .errors import UserError
from .events import SourceHealth
from .recorder import Recorder
from .sources.base import EventQueue, sources_watermark

log = logging.getLogger(__name__)


def handover_path(cfg: Config, data_dir: Path) -> Path:
    return Path(cfg.handover.socket) if cfg.handover.socket else data_dir / "capture.sock"


def build_sources(cfg: Config, kind: str, *, seed: int = 1, speed: float = 1.0, duration_s: float = 6 * 3600):
    """The sources of a station: kind "real" or "scenario". Returns (sources, clock_fn)."""
    if kind == "scenario":
        from .scenario import Scenario
        from .sources.scenario import ScenarioSource, VirtualClock
        start = monotonic_ns()
        clock = VirtualClock(start, speed)
        return [ScenarioSource(Scenario(cfg, seed=seed, duration_s=duration_s, start_ns=start), clock)], clock.now
    if kind != "real":
        raise UserError(f"unknown source kind {kind!r}: use real or scenario", exit_code=2)
    from .headset import load_profile
    from .sources.audio import AudioSource
    from .sources.focus import FocusSource, FocusState
    from .sources.input import InputSource
    from .sources.keytimes import RecentKeyPresses
    keys = RecentKeyPresses()
    focus = FocusState()
    return [FocusSource(cfg, focus), InputSource(cfg, focus, keys), AudioSource(cfg, load_profile(cfg), keys)], monotonic_ns


def start_sources(sources, queue: EventQueue, clock) -> None:
    for src in sources:
        try:
            src.start(queue)
        except Exception as e:  # degrade, don't die
            log.error("source %s failed to start: %s", getattr(src, "name", src), e)
            queue.put(SourceHealth(clock(), getattr(src, "name", "source"), "lost", f"failed to start: {e}"[:200]))


def stop_sources(sources) -> None:
    for src in sources:
        try:
            src.stop()
        except Exception as e:  # a source that fails to stop must not keep the others running
            log.warning("source %s failed to stop: %s", getattr(src, "name", src), e)


def sources_status(sources) -> dict:
    out = {}
    for src in sources:
        try:
            out[src.name] = src.status()
        except Exception as e:
            out[getattr(src, "name", "source")] = {"state": "unknown", "error": str(e)[:100]}
    return out


def publisher_factory(cfg: Config):
    """The ZeroMQ publisher, or None when streaming is disabled in the configuration."""
    from .publisher import Publisher
    if not cfg.publisher.enabled:
        return None
    return lambda c, header, path, on_command, clock=monotonic_ns: Publisher(c, header, path, on_command, clock=clock)


def _install_signals(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _loop(rec: Recorder, stop: threading.Event, notify=None, extra_status=None) -> None:
    """Recorder loop; ends the session on an exam "end" command and opens a new one."""
    while not stop.is_set():
        published = rec.step()
        if notify is not None:
            notify.tick()
        if any(kind == "exam" and body.get("action") == "end" for _, kind, _, body in published):
            rec.rotate_session()
        stop.wait(rec.ingest_ns / 1e9)


def _serve(rec: Recorder, stop: threading.Event, notify, before_close) -> int:
    """Run the recorder loop until stopped; then stop the inputs (``before_close``), journal what
    they delivered last and close. Tells systemd (``notify``) when ready and when stopping."""
    if notify is not None:
        notify.ready()
    try:
        _loop(rec, stop, notify)
    finally:
        if notify is not None:
            notify.stopping()
        before_close()
        rec.step()
        rec.close()
    return 0


def run_agent(cfg: Config, *, sources_kind: str = "real", seed: int = 1, speed: float = 1.0,
              data_dir: Path | None = None, stop: threading.Event | None = None, notify=None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_signals(stop)
    sources, clock = build_sources(cfg, sources_kind, seed=seed, speed=speed)
    queue = EventQueue()
    rec = Recorder(cfg, clock=clock, data_dir=data_dir, publisher_factory=publisher_factory(cfg), queue=queue,
                   watermark=lambda now: sources_watermark(sources, now),
                   sources_status=lambda: sources_status(sources))
    rec.open_session()
    start_sources(sources, queue, clock)
    log.info("agent running: station %s, session %s", cfg.station.id, rec.journal.header.session_id)
    return _serve(rec, stop, notify, lambda: stop_sources(sources))


def run_recorder(cfg: Config, *, data_dir: Path | None = None, stop: threading.Event | None = None, notify=None) -> int:
    from .handover import HandoverServer
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_signals(stop)
    root = Path(data_dir) if data_dir is not None else config_data_dir(cfg)
    queue = EventQueue()
    server = HandoverServer(handover_path(cfg, root), queue, station_id=cfg.station.id,
                            max_frame_bytes=cfg.handover.max_frame_bytes, gap_alert_ms=cfg.handover.gap_alert_ms)
    rec = Recorder(cfg, data_dir=root, publisher_factory=publisher_factory(cfg), queue=queue,
                   watermark=server.watermark,
                   sources_status=lambda: {"capture": {"link": server.link_state, **server.capture_status,
                                                       "peer": server.peer, "stats": dict(server.stats)}})
    rec.open_session()
    server.start()
    log.info("recorder running: station %s, session %s, hand-over %s", cfg.station.id,
             rec.journal.header.session_id, server.path)
    return _serve(rec, stop, notify, server.stop)


def run_capture(cfg: Config, *, sources_kind: str = "real", seed: int = 1, speed: float = 1.0,
                data_dir: Path | None = None, socket_path: Path | None = None,
                stop: threading.Event | None = None, notify=None) -> int:
    from .handover import CaptureClient
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_signals(stop)
    root = Path(data_dir) if data_dir is not None else config_data_dir(cfg)
    sources, clock = build_sources(cfg, sources_kind, seed=seed, speed=speed)
    queue = EventQueue()
    client = CaptureClient(socket_path or handover_path(cfg, root), queue, station_id=cfg.station.id,
                           heartbeat_ms=cfg.handover.heartbeat_ms, queue_max_batches=cfg.handover.queue_max_batches,
                           interval_ms=cfg.handover.batch_ms,
                           clock=clock, sources_status=lambda: sources_status(sources),
                           watermark=lambda now: sources_watermark(sources, now))
    start_sources(sources, queue, clock)
    client.start()
    if notify is not None:
        notify.ready()
    try:
        while not stop.is_set():
            if notify is not None:
                notify.tick()
            stop.wait(0.5)
    finally:
        if notify is not None:
            notify.stopping()
        stop_sources(sources)
        client.stop()
    return 0
