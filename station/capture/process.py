"""Wiring of the capture process (``station capture``): the sources, handing their events to a
recorder over the local socket.

Sources are ``real`` (audio VAD, keyboard/mouse, window focus) or ``scenario`` (the demo's simulated
exam, paced at ``speed`` x real time: for tests, soak runs and demonstrations). A source that
cannot start reports itself lost in health and the others keep running (degrade, don't die).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from station.capture.base import SourcesWatermark
from station.capture.handover_client import CaptureClient
from station.clock import monotonic_ns
from station.config import Config
from station.config import data_dir as config_data_dir
from station.errors import UserError
from station.eventqueue import EventQueue
from station.events import SourceHealth
from station.handover import handover_path
from station.signals import install_stop_signals

log = logging.getLogger(__name__)


SIMULATED_DETAIL = "scenario sources: simulated demo/test data, not an exam"


def refuse_simulated_in_exam_mode(cfg: Config, sources_kind: str) -> None:
    """Scenario sources are for demos and tests: a station in exam mode never runs them."""
    if sources_kind == "scenario" and cfg.station.mode == "exam":
        raise UserError("scenario sources are for demos and tests; this station is in exam mode "
                        "(station.mode = \"exam\")", exit_code=2)


def build_sources(cfg: Config, kind: str, *, seed: int = 1, speed: float = 1.0, duration_s: float = 6 * 3600):
    """The sources of a station: kind "real" or "scenario". Returns (sources, clock_fn)."""
    if kind == "scenario":
        from station.capture.scenario import ScenarioSource, VirtualClock
        from station.scenario import Scenario
        start = monotonic_ns()
        clock = VirtualClock(start, speed)
        return [ScenarioSource(Scenario(cfg, seed=seed, duration_s=duration_s, start_ns=start), clock)], clock.now
    if kind != "real":
        raise UserError(f"unknown source kind {kind!r}: use real or scenario", exit_code=2)
    from station.capture.audio import AudioSource
    from station.capture.focus import FocusSource, FocusState
    from station.capture.input import InputSource
    from station.capture.keytimes import RecentKeyPresses
    from station.headset import load_profile
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


def run_capture(cfg: Config, *, sources_kind: str = "real", seed: int = 1, speed: float = 1.0,
                data_dir: Path | None = None, socket_path: Path | None = None,
                stop: threading.Event | None = None, notify=None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    root = Path(data_dir) if data_dir is not None else config_data_dir(cfg)
    refuse_simulated_in_exam_mode(cfg, sources_kind)
    sources, clock = build_sources(cfg, sources_kind, seed=seed, speed=speed)
    queue = EventQueue()
    client = CaptureClient(socket_path or handover_path(cfg, root), queue, station_id=cfg.station.id,
                           heartbeat_ms=cfg.handover.heartbeat_ms, queue_max_batches=cfg.handover.queue_max_batches,
                           interval_ms=cfg.handover.batch_ms,
                           clock=clock, sources_status=lambda: sources_status(sources),
                           watermark=SourcesWatermark(sources, queue),
                           source_names=tuple(getattr(src, "name", "source") for src in sources),
                           on_link=lambda: [ev for src in sources for ev in getattr(src, "device_set", list)()])
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
