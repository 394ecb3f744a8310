"""Wiring of ``station run``: the capture's sources and the recorder in one process (no hand-over
socket). The exam deployment runs them as two processes instead (``station.capture.process``,
``station.recorder.process``); this module is the one place that puts both domains together.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from station.capture.base import SourcesWatermark
from station.capture.process import (SIMULATED_DETAIL, build_sources, refuse_simulated_in_exam_mode, sources_status,
                                     start_sources, stop_sources)
from station.config import Config
from station.eventqueue import EventQueue
from station.signals import install_stop_signals
from station.recorder.loop import Recorder
from station.recorder.process import publisher_factory, serve

log = logging.getLogger(__name__)


def run_agent(cfg: Config, *, sources_kind: str = "real", seed: int = 1, speed: float = 1.0,
              data_dir: Path | None = None, stop: threading.Event | None = None, notify=None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    refuse_simulated_in_exam_mode(cfg, sources_kind)
    sources, clock = build_sources(cfg, sources_kind, seed=seed, speed=speed)
    queue = EventQueue()
    rec = Recorder(cfg, clock=clock, data_dir=data_dir, publisher_factory=publisher_factory(cfg), queue=queue,
                   watermark=SourcesWatermark(sources, queue),
                   sources_status=lambda: sources_status(sources),
                   simulated=SIMULATED_DETAIL if sources_kind == "scenario" else "")
    rec.open_session()
    start_sources(sources, queue, clock)
    log.info("agent running: station %s, session %s", cfg.station.id, rec.journal.header.session_id)
    return serve(rec, stop, notify, lambda: stop_sources(sources))
