"""Wiring of the recorder process (``station recorder``, a system service under its own user):
journal, engine and publisher fed by the hand-over socket.

Stopping: SIGTERM/SIGINT stop cleanly; the session stays open so that a restart resumes it. An
assessor's "exam end" command ends the session and the recorder opens a fresh one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from station.clock import monotonic_ns
from station.config import Config
from station.config import data_dir as config_data_dir
from station.eventqueue import EventQueue
from station.handover import handover_path
from station.signals import install_stop_signals
from station.recorder.handover_server import HandoverServer, LinkPolicy
from station.recorder.loop import Recorder

log = logging.getLogger(__name__)


def publisher_factory(cfg: Config):
    """The ZeroMQ publisher, or None when streaming is disabled in the configuration."""
    from station.recorder.publisher import Publisher
    if not cfg.publisher.enabled:
        return None
    return lambda c, header, path, on_command, clock=monotonic_ns: Publisher(c, header, path, on_command, clock=clock)


def recorder_loop(rec: Recorder, stop: threading.Event, notify=None, extra_status=None) -> None:
    """Recorder loop; ends the session on an exam "end" command and opens a new one."""
    while not stop.is_set():
        published = rec.step()
        if notify is not None:
            notify.tick()
        if any(kind == "exam" and body.get("action") == "end" for _, kind, _, body in published):
            rec.rotate_session()
        stop.wait(rec.ingest_ns / 1e9)


def serve(rec: Recorder, stop: threading.Event, notify, before_close) -> int:
    """Run the recorder loop until stopped; then stop the inputs (``before_close``), journal what
    they delivered last and close. Tells systemd (``notify``) when ready and when stopping."""
    if notify is not None:
        notify.ready()
    try:
        recorder_loop(rec, stop, notify)
    finally:
        if notify is not None:
            notify.stopping()
        before_close()
        rec.step()
        rec.close()
    return 0


def run_recorder(cfg: Config, *, data_dir: Path | None = None, stop: threading.Event | None = None, notify=None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    root = Path(data_dir) if data_dir is not None else config_data_dir(cfg)
    queue = EventQueue()
    server = HandoverServer(handover_path(cfg, root), queue, station_id=cfg.station.id,
                            max_frame_bytes=cfg.handover.max_frame_bytes, gap_alert_ms=cfg.handover.gap_alert_ms,
                            policy=LinkPolicy.from_config(cfg))
    rec = Recorder(cfg, data_dir=root, publisher_factory=publisher_factory(cfg), queue=queue,
                   watermark=server.watermark, sources_status=lambda: {"capture": server.status()},
                   initial_health=server.health_now)
    rec.open_session()
    server.start()
    log.info("recorder running: station %s, session %s, hand-over %s", cfg.station.id,
             rec.journal.header.session_id, server.path)
    return serve(rec, stop, notify, server.stop)
