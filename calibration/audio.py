"""Audio I/O for calibration through sounddevice (PortAudio).

``SoundDeviceIO`` records the microphone (``audio.agent_device`` / ``agent_channel``), plays on
the earpiece (``calibration.output_device``) and, for the channel-mapping check, records the
customer channel (``audio.customer_device`` / ``customer_channel``). All signals are int16 mono at
``audio.sample_rate`` Hz.

Failure modes (``UserError``, exit 1, one clear line): no input or output device, a device name
that matches nothing, a sample rate the device refuses, a stream that stops delivering samples
(timeout), PortAudio errors. A device given as digits is an index, otherwise a name (substring,
as sounddevice matches it); "" is PortAudio's default. A name that is exactly a sound-server
source (sink, for ``calibration.output_device``), as ``station devices`` lists it and the capture
records it natively, is opened through ALSA's ``pulse`` PCM (libasound2-plugins) routed to that
source or sink by name while the stream opens (``PULSE_SOURCE`` / ``PULSE_SINK``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from station.errors import UserError

STALL_S = 5.0   # a stream that delivers no sample for this long (s) has failed
SERVER_PROBE_S = 2.0   # a sound server that does not answer within this time (s) is stuck

Progress = Callable[[float], None]


def _device(spec: str):
    spec = (spec or "").strip()
    if spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


PULSE_PCM = "pulse"   # ALSA's PulseAudio plugin PCM (libasound2-plugins): the server's default source/sink


def _server_names() -> tuple[set[str], set[str]]:
    """(source names, sink names) of the sound server ("" sets when none answers)."""
    from station.capture import soundserver
    try:
        with soundserver.connect("station-calibrate") as pulse:
            return {s.name for s in pulse.source_list()}, {s.name for s in pulse.sink_list()}
    except soundserver.SoundServerError:
        return set(), set()
    except Exception:   # pulsectl errors while listing
        return set(), set()


def _server_answers(timeout_s: float) -> bool:
    """Whether the sound server answers (its server info) within ``timeout_s`` s; True when there
    is none to ask (no server: the device is not behind one). A frozen server accepts the
    connection and never answers: the probe's thread is then left blocked (a daemon thread)."""
    from station.capture import soundserver
    answered = threading.Event()

    def probe():
        try:
            with soundserver.connect("station-calibrate-probe") as pulse:
                pulse.server_info()
        except Exception:   # no server, or it went away: nothing stuck to wait for
            pass
        answered.set()

    threading.Thread(target=probe, name="sound-server-probe", daemon=True).start()
    return answered.wait(timeout_s)


@contextlib.contextmanager
def _routed(source: str | None = None, sink: str | None = None):
    """While opening a stream on the ALSA ``pulse`` PCM: route it to a sound-server source / sink by
    name (libpulse reads ``PULSE_SOURCE`` / ``PULSE_SINK`` when the plugin connects); both are
    restored (or unset) on exit.

    Why the process environment: ALSA's PCM takes the name as an argument (``pulse:DEVICE=<name>``),
    but PortAudio opens such a string only through ``paUseHostApiSpecificDeviceSpecification``,
    which sounddevice does not expose; it opens enumerated devices only. The capture's native path
    (``station.capture.pulse_record``) passes the name to libpulse directly and needs no variable.
    The change is process-wide for the time a stream opens: calibration opens its streams from one
    thread, and a stream already running (its PortAudio callback thread) has connected and reads
    neither variable again."""
    saved = {k: os.environ.get(k) for k in ("PULSE_SOURCE", "PULSE_SINK")}
    try:
        if source:
            os.environ["PULSE_SOURCE"] = source
        if sink:
            os.environ["PULSE_SINK"] = sink
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class PlayRec:
    """mic: microphone samples aligned with the played signal (index 0 = first output sample's
    buffer); customer: customer-channel samples (not aligned) or None; adc_minus_dac_s: PortAudio's
    inputBufferAdcTime - outputBufferDacTime of the first buffer (s), or None when the host API
    reports no usable timestamps (both zero, or equal within 1 ms as ALSA's pulse plugin does);
    output_latency_s: the stream's output latency as PortAudio reports it (s)."""

    mic: np.ndarray
    customer: np.ndarray | None
    adc_minus_dac_s: float | None
    output_latency_s: float = 0.0


class _Stalled(Exception):
    """A stream delivered no sample for STALL_S; ``delivered_s``: seconds it had delivered."""

    def __init__(self, delivered_s: float):
        super().__init__(delivered_s)
        self.delivered_s = delivered_s


class SoundDeviceIO:
    """notice: called with one line for the technician when a measurement is repeated (default:
    the line goes to stderr)."""

    def __init__(self, cfg, notice: Callable[[str], None] | None = None):
        import sounddevice as sd  # imported here: PortAudio missing is reported by check()

        self.sd = sd
        self.notice = notice or (lambda line: print(f"      {line}", file=sys.stderr, flush=True))
        self.fs = int(cfg.audio.sample_rate)
        self.mic = _device(cfg.audio.agent_device)
        self.mic_channel = int(cfg.audio.agent_channel)
        self.customer = _device(cfg.audio.customer_device)
        self.customer_channel = int(cfg.audio.customer_channel)
        self.out = _device(cfg.calibration.output_device)
        self.has_customer = bool((cfg.audio.customer_device or "").strip())
        # sound-server names (as the capture records them natively): through ALSA's pulse PCM,
        # routed by name while each stream opens (_routed)
        self.mic_source = self.customer_source = self.out_sink = None
        names = [d for d in (self.mic, self.customer, self.out) if isinstance(d, str)]
        if names:
            sources, sinks = _server_names()
            if self.mic in sources:
                self.mic_source, self.mic = self.mic, PULSE_PCM
            if self.customer in sources:
                self.customer_source, self.customer = self.customer, PULSE_PCM
            if self.out in sinks:
                self.out_sink, self.out = self.out, PULSE_PCM

    # -- checks ---------------------------------------------------------------------------------
    def _info(self, dev, kind: str, what: str, key: str) -> dict:
        sd = self.sd
        try:
            info = sd.query_devices(dev, kind=kind)
        except (ValueError, sd.PortAudioError) as e:
            if dev is None:
                raise UserError(f"no {kind} device for the {what}: PortAudio finds no default {kind} "
                                f"(is a headset plugged in and the sound server running?) ({e})") from None
            raise UserError(f"{what} device {dev!r} ({key}) not found: {e}; see `station devices`") from None
        return info

    def check(self) -> dict[str, str]:
        """Check that the devices exist and accept the sample rate; return their names."""
        sd = self.sd
        names = {}
        checks = [(self.mic, "input", "microphone", "audio.agent_device", self.mic_channel),
                  (self.out, "output", "earpiece", "calibration.output_device", 0)]
        if self.has_customer:
            checks.append((self.customer, "input", "customer channel", "audio.customer_device",
                           self.customer_channel))
        for dev, kind, what, key, channel in checks:
            info = self._info(dev, kind, what, key)
            chans = info["max_input_channels"] if kind == "input" else info["max_output_channels"]
            if channel >= chans:
                raise UserError(f"{what} device {info['name']!r} has {chans} {kind} channel(s); "
                                f"channel {channel} does not exist")
            try:
                if kind == "input":
                    sd.check_input_settings(dev, channels=channel + 1, dtype="int16", samplerate=self.fs)
                else:
                    sd.check_output_settings(dev, channels=1, dtype="int16", samplerate=self.fs)
            except (ValueError, sd.PortAudioError) as e:
                raise UserError(f"{what} device {info['name']!r} does not support {self.fs} Hz 16-bit "
                                f"({e}); set audio.sample_rate to a rate it supports or use a resampling "
                                "device (PulseAudio/PipeWire)") from None
            names[what] = info["name"]
        return names

    # -- streams ----------------------------------------------------------------------------------
    def record(self, seconds: float, progress: Progress | None = None) -> np.ndarray:
        """Record ``seconds`` of the microphone (int16 samples at ``audio.sample_rate`` Hz). A
        stream that stalls is recorded once more from the start (see ``_measure``)."""
        return self._measure(lambda: self._record_once(seconds, progress), "microphone", seconds)

    def _record_once(self, seconds: float, progress: Progress | None) -> np.ndarray:
        n = int(round(seconds * self.fs))
        buf = np.zeros(n, dtype=np.int16)
        pos = [0]
        done = threading.Event()

        def cb(indata, frames, time, status):
            i = pos[0]
            k = min(frames, n - i)
            buf[i:i + k] = indata[:k, self.mic_channel]
            pos[0] = i + k
            if progress:
                progress(pos[0] / n)
            if pos[0] >= n:
                done.set()
                raise self.sd.CallbackStop

        def make():
            with _routed(source=self.mic_source):
                return self.sd.InputStream(device=self.mic, channels=self.mic_channel + 1, dtype="int16",
                                           samplerate=self.fs, callback=cb)
        self._run(make, done, seconds, "microphone", lambda: pos[0])
        return buf

    def playrec(self, signal: np.ndarray, tail_s: float = 0.6, with_customer: bool = False,
                progress: Progress | None = None) -> PlayRec:
        """Play ``signal`` on the earpiece while recording the microphone (one duplex stream, so the
        recorded index is aligned with the played index) and, optionally, the customer channel.
        A stream that stalls is played and recorded once more from the start (see ``_measure``)."""
        seconds = (len(signal) + int(tail_s * self.fs)) / self.fs
        return self._measure(lambda: self._playrec_once(signal, tail_s, with_customer, progress),
                             "earpiece and microphone", seconds)

    def _playrec_once(self, signal: np.ndarray, tail_s: float, with_customer: bool,
                      progress: Progress | None) -> PlayRec:
        sd = self.sd
        out = np.asarray(signal, dtype=np.int16)
        n = len(out) + int(tail_s * self.fs)
        mic = np.zeros(n, dtype=np.int16)
        pos = [0]
        stamps: list[float] = []
        done = threading.Event()

        def cb(indata, outdata, frames, time, status):
            i = pos[0]
            if i == 0:
                stamps.extend([time.inputBufferAdcTime, time.outputBufferDacTime])
            k = min(frames, n - i)
            mic[i:i + k] = indata[:k, self.mic_channel]
            chunk = out[i:i + frames]
            outdata[:len(chunk), 0] = chunk
            outdata[len(chunk):, 0] = 0
            pos[0] = i + k
            if progress:
                progress(pos[0] / n)
            if pos[0] >= n:
                done.set()
                raise sd.CallbackStop

        cust_stream = None
        cust: list[np.ndarray] = []
        if with_customer and self.has_customer:
            def ccb(indata, frames, time, status):
                cust.append(indata[:, self.customer_channel].copy())
            try:
                with _routed(source=self.customer_source):
                    cust_stream = sd.InputStream(device=self.customer, channels=self.customer_channel + 1,
                                                 dtype="int16", samplerate=self.fs, callback=ccb)
                cust_stream.start()
            except (ValueError, sd.PortAudioError) as e:
                raise UserError(f"cannot record the customer channel ({e})") from None
        reported = [0.0]

        def make():
            with _routed(source=self.mic_source, sink=self.out_sink):
                st = sd.Stream(device=(self.mic, self.out), channels=(self.mic_channel + 1, 1),
                               dtype="int16", samplerate=self.fs, callback=cb)
            reported[0] = float(st.latency[1])
            return st
        try:
            self._run(make, done, n / self.fs, "earpiece and microphone", lambda: pos[0])
        finally:
            if cust_stream is not None:
                cust_stream.stop()
                cust_stream.close()
        adc, dac = (stamps + [0.0, 0.0])[:2]
        skew = (adc - dac) if (adc and dac and abs(adc - dac) >= 0.001) else None
        customer = np.concatenate(cust) if cust else (np.zeros(0, np.int16) if with_customer and self.has_customer else None)
        return PlayRec(mic=mic, customer=customer, adc_minus_dac_s=skew, output_latency_s=reported[0])

    def _measure(self, attempt, what: str, seconds: float):
        """``attempt()`` once more when its stream stalled (``_Stalled``) while the sound server
        still answers: ALSA's pulse plugin sometimes stops serving one stream (seen about once in
        400 streams on a loaded machine, at the start or near the end), and the technician should
        not have to start the whole calibration again for it. The measurement is repeated from
        the start, so no samples of the stalled stream are used. ``UserError`` when the second
        attempt stalls too (a device unplugged), or from ``_run`` (a stuck server)."""
        try:
            return attempt()
        except _Stalled as first:
            where = f"no samples for {STALL_S:.0f} s after {first.delivered_s:.1f} s of {seconds:.1f} s"
            self.notice(f"the {what} stopped delivering audio ({where}); measuring again")
        try:
            return attempt()
        except _Stalled as again:
            raise UserError(f"the {what} stopped delivering audio ({where}, and again after "
                            f"{again.delivered_s:.1f} s when measured again): device unplugged or sound "
                            "server stuck?") from None

    def _run(self, make, done: threading.Event, seconds: float, what: str, position) -> None:
        """Run the stream ``make()`` returns until ``done`` is set. ``position()`` is the number
        of samples delivered so far: the stream has stalled (``_Stalled``) when it stays the same
        for STALL_S (a busy machine may deliver late, but a stuck device delivers nothing). It has
        failed (``UserError``) when the sound server does not answer then either (stuck: asked
        before the stream closes, since closing waits for a stuck server), or when the run takes
        longer than 3 x ``seconds`` + STALL_S in all."""
        sd = self.sd
        try:
            with make():
                deadline = time.monotonic() + 3 * seconds + STALL_S
                last, last_change = position(), time.monotonic()
                while not done.wait(0.25):
                    now = time.monotonic()
                    pos = position()
                    if pos != last:
                        last, last_change = pos, now
                    if now - last_change > STALL_S:
                        if not _server_answers(SERVER_PROBE_S):
                            raise UserError(
                                f"the {what} stopped delivering audio (no samples for {STALL_S:.0f} s after "
                                f"{last / self.fs:.1f} s of {seconds:.1f} s) and the sound server does not "
                                f"answer within {SERVER_PROBE_S:.0f} s: sound server stuck?")
                        raise _Stalled(last / self.fs)
                    if now > deadline:
                        raise UserError(f"the {what} delivers audio too slowly ({last / self.fs:.1f} s of "
                                        f"{seconds:.1f} s in {3 * seconds + STALL_S:.0f} s): overloaded machine "
                                        "or a stuck sound server?")
        except (ValueError, sd.PortAudioError) as e:
            raise UserError(f"audio error on the {what}: {e}") from None
