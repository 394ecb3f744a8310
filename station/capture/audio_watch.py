"""Follow the sound server's events for the capture's own record streams (pulsectl subscription).

``SourceWatch`` runs one thread with its own pulsectl connection, subscribed to source,
source-output and server events. After every burst of events (and once at start) it compares what
the server says now with what the capture opened:

- a stream moved: our source output (found by its unique ``media.name`` and our process id) is on
  another source than the one opened (``pactl move-source-output``, or the server moving it
  because its source went away);
- a source removed: the source a stream was opened on is gone (headset unplugged, sink unloaded);
- a stream ended: our source output is gone;
- the server's default source changed.

Each finding becomes ``DeviceEvent`` s (``SourceInfo.device_event``) and, for all but a
default change while every channel is configured by name, a failure reason: ``on_change(events,
failure)`` is called in the watch thread; the audio source journals the events and treats the
failure as a loss (reopening the configured source). After the first failure the watch reports
nothing more (the streams are reopened with a new watch).

Latency: the server sends events at once; a finding reaches ``on_change`` within milliseconds.
Failure modes: a lost server connection ends the thread after ``on_change([], reason)``; pulsectl
errors inside a check are reported the same way. Never raises into its caller.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from station.capture import soundserver
from station.clock import monotonic_ns
from station.osthread import named

log = logging.getLogger(__name__)


def removed_event(source: Any, roles: str, now_ns: int) -> Any:
    """The DeviceEvent journaled when a recorded sound-server source (a SourceInfo) is gone from
    the server: no evidence from it (the watch, and the audio source between two streams)."""
    return source.device_event(now_ns, "removed", roles, False,
                               f"{roles}: {source.name!r} was removed from the sound server")


@dataclass
class WatchedStream:
    """One record stream the capture opened: its media.name, the roles it carries
    ("agent", "customer", "agent+customer") and the source (SourceInfo) it was opened on."""

    stream_name: str
    roles: str
    source: soundserver.SourceInfo


class SourceWatch:
    """See the module doc. judge(roles, info) -> (evidence, reason) decides a source's evidence;
    follow_default: a channel records the default source (config ""), so a default change is a
    failure (reopen on the new default); default_source: the default source name at open."""

    def __init__(self, streams: list[WatchedStream], default_source: str, follow_default: bool, judge, on_change):
        self.streams = streams
        self.default_source = default_source
        self.follow_default = follow_default
        self.judge = judge
        self.on_change = on_change
        self._stop = threading.Event()
        self._done = False
        self._pulse = None
        self._thread = threading.Thread(target=named(self._run), name="audio-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (within 1.5 s). event_listen_stop only stops a listen already running
        (pulsectl), so it is repeated until the thread has ended."""
        self._stop.set()
        if threading.current_thread() is self._thread:
            return
        deadline = time.monotonic() + 1.5
        while self._thread.is_alive() and time.monotonic() < deadline:
            pulse = self._pulse
            if pulse is not None:
                try:
                    pulse.event_listen_stop()
                except Exception:
                    pass
            self._thread.join(0.05)

    def _run(self) -> None:
        try:
            pulsectl = soundserver._pulsectl()
            pulse = soundserver.connect("station-capture-watch")
        except soundserver.SoundServerError as e:
            self._report([], f"cannot follow the sound server: {e}")
            return
        self._pulse = pulse
        pending: list = []
        listening = [False]

        def on_event(ev):
            # pulsectl calls this from any of its calls, _check's own queries too: an event that
            # comes during a check is kept for the next one (stopping the loop only in
            # event_listen), and event_listen is not entered while one is kept, since it waits
            # for the next event (seen: a sink unloaded while the watch checked was never noticed)
            pending.append(ev)
            if listening[0]:
                raise pulsectl.PulseLoopStop

        try:
            pulse.event_mask_set("source", "source_output", "server")
            pulse.event_callback_set(on_event)
            self._check(pulse)
            while not self._stop.is_set() and not self._done:
                if not pending:
                    listening[0] = True
                    try:
                        pulse.event_listen()  # no timeout: no wake-up without an event (close stops it)
                    finally:
                        listening[0] = False
                if pending and not self._stop.is_set():
                    pending.clear()
                    self._check(pulse)
        except (pulsectl.PulseError, soundserver.SoundServerError) as e:
            if not self._stop.is_set():
                self._report([], f"lost the sound server's events: {e}")
        except Exception:
            log.exception("audio watch failed")
            if not self._stop.is_set():
                self._report([], "audio watch failed (internal error)")
        finally:
            self._pulse = None
            try:
                pulse.close()
            except Exception:
                pass

    def _report(self, events: list, failure: str | None) -> None:
        if self._done or self._stop.is_set():
            return
        if failure:
            self._done = True
        self.on_change(events, failure)

    def _check(self, pulse) -> None:
        """Compare the server's state with the opened streams; report what changed."""
        infos = soundserver.source_infos(pulse)
        by_name = {s.name: s for s in infos}
        by_index = {s.index: s for s in infos}
        pid = str(os.getpid())
        outputs = {o.proplist.get("media.name"): o for o in pulse.source_output_list()
                   if o.proplist.get("application.process.id") == pid}
        default, _ = soundserver.defaults(pulse)
        now = monotonic_ns()
        events, failure = [], None
        for ws in self.streams:
            old = ws.source
            out = outputs.get(ws.stream_name)
            if old.name not in by_name:
                events.append(removed_event(old, ws.roles, now))
                failure = failure or f"{old.name!r} was removed from the sound server (headset unplugged?)"
            if out is None:
                failure = failure or f"the sound server ended the recorded stream on {old.name!r}"
            elif out.source != old.index or (old.name in by_name and by_name[old.name].index != old.index):
                new = by_index.get(out.source)
                if new is not None and new.name != old.name:
                    events.append(new.device_event(now, "changed", ws.roles, False,
                                                   f"{ws.roles}: the recorded stream was moved here from {old.name!r}; "
                                                   f"no evidence (not the configured source)"))
                    failure = failure or f"the recorded stream was moved from {old.name!r} to {new.name!r}"
        if default != self.default_source:
            info = by_name.get(default)
            ours = [ws for ws in self.streams if ws.source.name == default]
            if info is not None:
                roles = ours[0].roles if ours else ""
                ok, why = self.judge(roles, info) if ours else (False, "not recorded by the station")
                events.append(info.device_event(now, "changed", roles, ok,
                                                f"default source changed from {self.default_source!r} to {default!r}: {why}"))
            if self.follow_default:
                failure = failure or f"the default source changed from {self.default_source!r} to {default!r}"
            self.default_source = default
        if events or failure:
            self._report(events, failure)
