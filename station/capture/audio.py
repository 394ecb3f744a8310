"""Audio source: headset microphone and customer signal -> VAD frames on the station clock.

``AudioSource`` opens input streams for the agent microphone and the customer signal: two
channels of one device (one stream), or two devices (two streams), e.g. the microphone and the
monitor of the headset's sink. Config keys: ``audio.agent_device`` / ``agent_channel`` /
``customer_device`` / ``customer_channel``. Where blocks come from (``plan_streams``, the rule):
a device that is exactly a sound-server source name (``station devices``), or ``""`` while a
sound server answers (its default source), is recorded natively from the sound server
(``station.capture.pulse_record``: libpulse, one wake-up per block); anything else (a
sounddevice name, a unique part of one, an index; or any device when no sound server answers)
through sounddevice (PortAudio). ``""`` for the customer = "same device as the agent".

Source identity (native path only): at every open each source is judged
(``station.capture.audio_identity``: the calibrated headset's identity from the profile, else no
virtual source in exam mode) and journaled as a ``DeviceEvent`` ("present"); a source without
evidence is not opened (the audio is lost with the reason and retried). While streams are open,
``station.capture.audio_watch`` follows the sound server: a stream moved to another source, its
source removed, the default source switched give ``DeviceEvent`` s at once and (except a default
switch while every channel is configured by name) a loss: the queued blocks are dropped (none
becomes a frame: they may come from the other source), and the configured source is reopened. Samples are 16-bit mono per channel at ``audio.sample_rate``
(16 kHz), cut into frames of ``audio.frame_ms`` and classified by ``station.vad.FrameClassifier``
into ``SpeechFrame`` events. No samples leave this module: only levels and decisions.

Threads: PortAudio's callback only copies the block and its timing into a queue. One worker
thread wakes once per block period (``audio.block_ms``, 400 ms), reads what the native streams
recorded meanwhile (``PulseRecorder.read``: no thread per stream) and takes every PortAudio
block that came, stamps, frames, aligns the channels, classifies whole blocks of frames
(``FrameClassifier.classify_block``), and hands the frames to the sink as one ``Batch``
(``sink.put_batch``); it also watches for device loss and reopens. Frames therefore reach the
sink up to about two block periods after they were spoken (their stamps do not depend on that);
``delivered_until`` tells the recorder's watermark (``sources_watermark``) how far they have come,
so that no frame arrives behind it.

Timestamps (station clock, ns): a native block is stamped by ``pulse_record`` (arrival minus
libpulse's latency minus its duration: ``adc_clock`` "pulse"). A PortAudio block is stamped from
``inputBufferAdcTime`` (time of its first sample). Its clock is checked against ``currentTime``
for every block:
- ``monotonic``: currentTime is near time.monotonic() (PortAudio's own clock, CLOCK_MONOTONIC):
  used as is;
- ``realtime``: currentTime is near time.time() (Debian's ALSA ``pulse`` plugin reports
  gettimeofday stamps): converted with the wall-to-monotonic offset read in the callback;
- ``arrival``: 0 or implausible (more than 2 s old, in the future): arrival time minus the block's
  duration minus the stream's input latency.
The headset profile's ``input_latency_ms`` (else ``audio.latency_ms``) is subtracted. Within a
channel frames are contiguous: frame times count samples from an anchor (the first block's time)
and are re-anchored only when a block's own time differs from the count by more than one frame
(a gap after an overflow, or clock drift).

Checks on top of webrtcvad (see station.vad): energy gate (profile gate, else noise floor +
margin; the customer channel, a clean electrical signal, uses ``audio.customer_gate_dbfs``), keyboard-click rejection (an impulsive
mic frame within ``audio.click_window_ms`` of a key press noted in ``RecentKeyPresses``), and
bleed suppression: a mic frame is classified once the customer channel has covered the same time
plus ``audio.bleed_window_ms`` and the key presses up to its end plus ``audio.click_window_ms``
are known (``RecentKeyPresses.complete_until``; the input source may read in batches), or after
``audio.align_wait_ms`` of waiting, with the loudest customer frame within that window as the
customer level.

Failure modes: a device missing, failing to open, reporting an error, or delivering no block for
``audio.stall_ms`` makes the source "lost" (SourceHealth, with the reason, stamped at the end of
the last frame delivered); all streams are closed and reopened every ``audio.retry_ms`` (PortAudio
re-initialised so that a replugged device is found); "ok" is reported with the first block after
that. No frame is invented for the gap: while "lost" the audio is unknown, not silence. Input
overflows (samples dropped by the device) are counted in ``status()``; a block queue that grows
past ``MAX_QUEUED_BLOCKS`` (worker stalled) drops blocks and counts them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from station.capture.base import HealthReporter
from station.capture.keytimes import RecentKeyPresses
from station.clock import monotonic_ns
from station.config import Config
from station.eventqueue import EventSink
from station.events import Batch, Channel
from station.osthread import named
from station.vad import FrameClassifier

log = logging.getLogger(__name__)

MAX_QUEUED_BLOCKS = 200          # ~40 s of 400 ms blocks for two streams before blocks are dropped
ADC_MAX_AGE_NS = 2_000_000_000   # an ADC time older than this (vs currentTime) is implausible
CLOCK_MATCH_NS = 500_000_000     # currentTime within this of a clock reading = that clock
CUSTOMER_HISTORY_NS = 5_000_000_000


class AudioDeviceError(Exception):
    """A device is missing, ambiguous, has too few channels, or cannot be opened."""


def _sd():
    """The sounddevice module (imported late: importing it loads PortAudio, which may be missing;
    that raises OSError)."""
    import sounddevice
    return sounddevice


def list_devices() -> list[dict[str, Any]]:
    """All PortAudio devices: id (the index usable in audio.*_device), name, host api,
    max input channels, max output channels, default rate (Hz). Raises OSError when the PortAudio
    library cannot be loaded."""
    sd = _sd()
    apis = sd.query_hostapis()
    out = []
    for d in sd.query_devices():
        out.append({"id": d["index"], "name": d["name"], "hostapi": apis[d["hostapi"]]["name"],
                    "max_input_channels": d["max_input_channels"],
                    "max_output_channels": d["max_output_channels"],
                    "default_samplerate": d["default_samplerate"]})
    return out


def resolve_device(spec: str) -> dict[str, Any]:
    """The input device a config value names: "" = the default input device, digits = an index,
    else an exact (case-insensitive) name or a part of exactly one input device's name.
    Returns the sounddevice device dict (with "index"). Raises AudioDeviceError."""
    sd = _sd()
    spec = (spec or "").strip()
    if spec == "":
        try:
            return dict(sd.query_devices(kind="input"))
        except (ValueError, sd.PortAudioError):
            raise AudioDeviceError("no default input device") from None
    devices = [dict(d) for d in sd.query_devices()]
    if spec.isdigit():
        idx = int(spec)
        if idx >= len(devices):
            raise AudioDeviceError(f"no audio device with id {idx} ({len(devices)} devices)")
        if devices[idx]["max_input_channels"] < 1:
            raise AudioDeviceError(f"audio device {idx} ({devices[idx]['name']}) has no input channels")
        return devices[idx]
    inputs = [d for d in devices if d["max_input_channels"] > 0]
    exact = [d for d in inputs if d["name"].lower() == spec.lower()]
    if len(exact) == 1:
        return exact[0]
    part = [d for d in inputs if spec.lower() in d["name"].lower()]
    if len(part) == 1:
        return part[0]
    if not part:
        raise AudioDeviceError(f"no input device named {spec!r}")
    raise AudioDeviceError(f"input device name {spec!r} is ambiguous: "
                           + ", ".join(f"{d['index']}: {d['name']}" for d in part))


@dataclass
class StreamPlan:
    """One input stream to open: device index/name, channels to open, and which logical channel
    (Channel.AGENT / CUSTOMER) takes which column. backend: "portaudio" (device = the PortAudio
    index) or "pulse" (native from the sound server: source = its SourceInfo, device = -1)."""

    device: int
    name: str
    channels: int
    picks: list[tuple[int, int]]   # (logical channel, column)
    backend: str = "portaudio"
    source: Any = None             # soundserver.SourceInfo for backend "pulse"

    @property
    def roles(self) -> str:
        return "+".join("agent" if ch == Channel.AGENT else "customer" for ch, _ in self.picks)


def sound_server_sources() -> tuple[list[Any], str] | None:
    """(the sound server's sources, its default source name), or None when no sound server
    answers (or pulsectl is missing): then every device goes through PortAudio."""
    from station.capture import soundserver
    try:
        with soundserver.connect() as pulse:
            return soundserver.source_infos(pulse), soundserver.defaults(pulse)[0]
    except soundserver.SoundServerError:
        return None


def _resolve(spec: str, server: tuple[list[Any], str] | None) -> dict[str, Any]:
    """A device setting as a device dict: a sound-server source when the setting is exactly a
    source's name, or "" while a sound server answers (its default source); else PortAudio's
    ``resolve_device``. A pulse device dict has "index" = the source name (a str) and "source"."""
    spec = (spec or "").strip()
    if server is not None:
        infos, default = server
        name = spec or default
        for info in infos:
            if info.name == name:
                return {"index": f"pulse:{info.name}", "name": info.name, "source": info,
                        "max_input_channels": max(1, info.channels)}
        if spec == "" and not default:
            raise AudioDeviceError("the sound server has no default source")
    return resolve_device(spec)


def plan_streams(cfg: Config, server: tuple[list[Any], str] | None | bool = True) -> list[StreamPlan]:
    """The streams the config asks for (resolving device names now). The customer channel is left
    out when it names exactly the agent's device and channel. server: the sound server's sources
    (``sound_server_sources()``), None = no sound server, True = ask it now.

    Which path (the rule): a device setting that is exactly the name of one of the sound server's
    sources (``station devices`` lists them: ``alsa_input.usb-...``, ``<sink>.monitor``), or ""
    while a sound server answers (= its default source), is recorded natively from the sound
    server (``station.capture.pulse_record``); anything else (a PortAudio/ALSA name, a part of
    one, an index; or any setting when no sound server answers) goes through PortAudio.
    Raises AudioDeviceError."""
    a = cfg.audio
    if server is True:
        server = sound_server_sources()
    agent = _resolve(a.agent_device, server)
    customer = agent if (a.customer_device or "").strip() == "" else _resolve(a.customer_device, server)
    wants = [(agent, Channel.AGENT, a.agent_channel, "agent")]
    if not (customer["index"] == agent["index"] and a.customer_channel == a.agent_channel):
        wants.append((customer, Channel.CUSTOMER, a.customer_channel, "customer"))
    plans: dict[Any, StreamPlan] = {}
    for dev, ch, col, what in wants:
        if col >= dev["max_input_channels"]:
            raise AudioDeviceError(f"audio.{what}_channel = {col}, but {dev['name']!r} has "
                                   f"{dev['max_input_channels']} input channel(s)")
        native = "source" in dev
        p = plans.setdefault(dev["index"], StreamPlan(-1 if native else dev["index"], dev["name"], 0, [],
                                                      "pulse" if native else "portaudio", dev.get("source")))
        p.picks.append((int(ch), col))
        p.channels = max(p.channels, col + 1)
    return list(plans.values())


def doctor_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    """Checks for ``station doctor``: (name, ok, detail). Never raises."""
    from station.headset import load_profile, profile_path, profile_warnings
    checks: list[tuple[str, bool, str]] = []
    server = sound_server_sources()
    checks.append(("audio: sound server", server is not None,
                   f"{len(server[0])} source(s), default {server[1]!r}" if server is not None
                   else "no sound server answers: only PortAudio devices can be recorded"))
    try:
        devices = list_devices()
    except OSError as e:
        if server is None:
            return checks + [("audio: PortAudio", False, f"PortAudio library not loadable: {e}")]
        devices = []
    n_in = sum(1 for d in devices if d["max_input_channels"] > 0)
    checks.append(("audio: PortAudio input devices", n_in > 0 or server is not None,
                   f"{n_in} input device(s) of {len(devices)}"))
    try:
        plans = plan_streams(cfg, server)
    except AudioDeviceError as e:
        checks.append(("audio: configured devices", False, str(e)))
        plans = []
    else:
        names = {Channel.AGENT: "agent", Channel.CUSTOMER: "customer"}
        desc = "; ".join(f"{names[ch]} = {p.name!r} " + ("(sound server)" if p.backend == "pulse" else f"(id {p.device})")
                         + f" channel {col}" for p in plans for ch, col in p.picks)
        if not any(ch == Channel.CUSTOMER for p in plans for ch, _ in p.picks):
            checks.append(("audio: customer channel", False,
                           "customer device/channel equal the agent's: no customer signal"))
        checks.append(("audio: configured devices", True, desc))
    for p in plans:
        if p.backend == "pulse":
            from station.capture.audio_identity import evidence
            expected = _expected_identity(load_profile_quietly(cfg), p)
            ok, why = evidence(p.source, expected, cfg.station.mode == "exam")
            checks.append((f"audio: evidence from {p.name}", ok, why))
            continue
        sd = _sd()
        try:
            sd.check_input_settings(device=p.device, channels=p.channels, dtype="int16",
                                    samplerate=cfg.audio.sample_rate)
            checks.append((f"audio: {cfg.audio.sample_rate} Hz on {p.name}", True,
                           f"{p.channels} channel(s), int16 (converted by the host API if not native)"))
        except Exception as e:  # PortAudioError, ValueError
            checks.append((f"audio: {cfg.audio.sample_rate} Hz on {p.name}", False,
                           f"not supported ({e}); use a device that resamples (ALSA 'plug'/'pulse')"))
    try:
        profile = load_profile(cfg)
    except Exception as e:  # ConfigError from an invalid file
        checks.append(("audio: headset profile", False, str(e)))
    else:
        if profile is None:
            what = (f"missing: {profile_path(cfg)}" if cfg.station.headset
                    else "no headset configured (station.headset)")
            checks.append(("audio: headset profile", False, what + "; defaults used"))
        else:
            warnings = profile_warnings(cfg, profile)
            checks.append(("audio: headset profile", not warnings,
                           "; ".join(warnings) or f"{profile.headset_id}: gate {profile.gate_dbfs:g} dBFS, "
                           f"latency {profile.input_latency_ms:g} ms, coupling {profile.coupling_db:g} dB, "
                           f"own voice {profile.speech_level_dbfs:g} dBFS, margin "
                           f"{cfg.audio.own_margin_db if profile.own_margin_db is None else profile.own_margin_db:g} dB"))
    return checks


def load_profile_quietly(cfg: Config) -> Any:
    """The headset profile, or None when it is missing or invalid (doctor reports that)."""
    from station.headset import load_profile
    try:
        return load_profile(cfg)
    except Exception:
        return None


def _expected_identity(profile: Any, plan: StreamPlan) -> Any:
    """The calibrated SourceIdentity for a plan's first role (None = none in the profile)."""
    if profile is None:
        return None
    first = plan.picks[0][0]
    return profile.agent_source if first == Channel.AGENT else profile.customer_source


@dataclass
class _Track:
    """Sample counting and framing of one logical channel."""

    channel: int
    classifier: FrameClassifier
    rate: int
    frame_len: int
    dur_ns: int
    anchor_ns: int | None = None
    n: int = 0                          # samples pushed since the anchor
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    late: int = 0                       # consecutive blocks with a small drift
    reanchors: int = 0
    frames: int = 0
    last_end_ns: int | None = None

    def reset(self) -> None:
        self.anchor_ns = None
        self.n = 0
        self.pending = np.zeros(0, dtype=np.int16)
        self.late = 0

    def push(self, samples: np.ndarray, t_ns: int, overflow: bool) -> tuple[np.ndarray, np.ndarray]:
        """Add a block whose first sample is at t_ns; return its complete frames as (start times
        in ns, int64 array; samples, 2-D int16 array with one frame per row)."""
        if self.anchor_ns is not None:
            expected = self.anchor_ns + self.n * 1_000_000_000 // self.rate
            drift = abs(t_ns - expected)
            if drift > self.dur_ns:
                self.late += 1
                if overflow or drift > 4 * self.dur_ns or self.late >= 3:
                    self.reanchors += 1
                    self.reset()
            else:
                self.late = 0
        if self.anchor_ns is None:
            self.anchor_ns = t_ns
        buf = np.concatenate((self.pending, samples)) if len(self.pending) else samples
        first = self.n - len(self.pending)   # sample index (since anchor) of buf[0]
        count = len(buf) // self.frame_len
        used = count * self.frame_len
        offsets = first + np.arange(0, used, self.frame_len, dtype=np.int64)
        starts = self.anchor_ns + offsets * 1_000_000_000 // self.rate
        self.pending = buf[used:].copy()
        self.n += len(samples)
        return starts, buf[:used].reshape(count, self.frame_len)


class AudioSource:
    """The audio source (name "audio"); see the module docstring.

    cfg: the station Config. profile: the headset profile (station.headset.HeadsetProfile) or None
    for config defaults. key_times: the RecentKeyPresses the input source fills (None = no click
    rejection).
    """

    name = "audio"

    def __init__(self, cfg: Config, profile: Any = None, key_times: RecentKeyPresses | None = None):
        a = cfg.audio
        self.cfg = cfg
        self.profile = profile
        self.key_times = key_times
        self.rate = a.sample_rate
        self.frame_ms = a.frame_ms
        self.frame_len = self.rate * self.frame_ms // 1000
        self.dur_ns = self.frame_ms * 1_000_000
        self.block = max(self.frame_len, self.rate * a.block_ms // 1000)
        self.period_s = self.block / self.rate   # worker wake-up period (s)
        self.vad_mode = profile.vad_mode if profile is not None else a.vad_mode
        self.gate_dbfs = profile.gate_dbfs if profile is not None else a.noise_floor_dbfs + a.gate_margin_db
        self.customer_gate_dbfs = a.customer_gate_dbfs
        self.coupling_db = profile.coupling_db if profile is not None else a.bleed_coupling_db
        # own voice (station.ownvoice): anchored at the calibrated speech level, else the config's
        self.own_level_dbfs = profile.speech_level_dbfs if profile is not None else a.own_level_dbfs
        self.own_margin_db = getattr(profile, "own_margin_db", None)   # None: audio.own_margin_db
        self.latency_ns = int(round((profile.input_latency_ms if profile is not None else a.latency_ms) * 1e6))
        self.click_ns = a.click_window_ms * 1_000_000
        self.bleed_ns = a.bleed_window_ms * 1_000_000
        self.align_wait_ns = a.align_wait_ms * 1_000_000
        self.stall_ns = max(a.stall_ms * 1_000_000, 3 * a.block_ms * 1_000_000)
        self.retry_ns = a.retry_ms * 1_000_000
        self.reinit_portaudio = True   # re-enumerate devices before each reopen (see module doc)

        self._sink: EventSink | None = None
        self._health: HealthReporter | None = None
        self._blocks: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streams: list[Any] = []
        self._native: list[tuple[int, Any, list[int]]] = []   # (stream index, PulseRecorder, columns)
        self._plans: list[StreamPlan] = []
        self._gen = 0
        self._opened_ns = 0
        self._last_block_ns: dict[int, int] = {}
        self._open_error = ""      # the last reason an open failed (logged once per reason)
        self._native_sources: dict[str, tuple[Any, str]] = {}   # sound-server sources recorded: (info, roles)
        self._failed: str | None = None       # set from PortAudio's / the reader's / the watch's thread
        self._watch: Any = None               # audio_watch.SourceWatch while native streams are open
        self._dev_lock = threading.Lock()
        self._dev_last: dict[str, tuple] = {}  # device -> the last DeviceEvent's content (see _device)
        self._ok_pending = False
        self._tracks: dict[int, _Track] = {}
        # mic frames waiting for the customer signal and the key presses around them (see
        # _release_agent): start times (ns), samples (one frame per row), arrival times (ns)
        self._wait_t = np.zeros(0, dtype=np.int64)
        self._wait_frames = np.zeros((0, self.frame_len), dtype=np.int16)
        self._wait_arrival = np.zeros(0, dtype=np.int64)
        # customer frames of the last CUSTOMER_HISTORY_NS: start, end (ns), level (dBFS)
        self._cust_t = np.zeros(0, dtype=np.int64)
        self._cust_end = np.zeros(0, dtype=np.int64)
        self._cust_level = np.zeros(0, dtype=np.float64)
        self._has_customer = False
        self._delivered: dict[int, int] = {}  # channel -> end (ns) of the last frame put into the sink
        self.counters = {"overflows": 0, "dropped_blocks": 0, "restarts": 0, "losses": 0,
                         "blocks": 0, "unaligned_frames": 0}
        self.adc_clock = "unknown"
        self.state = "starting"
        self.detail = ""

    # -- Source interface ---------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Start the worker (it opens the devices; a missing device is reported, not raised)."""
        if self._thread is not None:
            raise RuntimeError("AudioSource already started")
        self._sink = sink
        self._health = HealthReporter(self.name, sink)
        self._stop.clear()
        self._thread = threading.Thread(target=named(self._run), name="audio-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker and close the streams (within about 1 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """State and counters for the health beat."""
        frames = {("agent" if ch == Channel.AGENT else "customer"): t.frames for ch, t in self._tracks.items()}
        reanchors = sum(t.reanchors for t in self._tracks.values())
        paths = {p.roles: f"{p.backend}:{p.name}" for p in self._plans}
        agent = self._tracks.get(Channel.AGENT)
        own = agent.classifier.own_voice.status() if agent is not None and agent.classifier.own_voice else {}
        return {"state": self.state, "detail": self.detail, "adc_clock": self.adc_clock, "frames": frames,
                "paths": paths,
                "reanchors": reanchors, "customer_channel": self._has_customer, **self.counters, **own}

    def delivered_until(self) -> int | None:
        """The station time (ns) up to which every frame of every open channel is in the sink:
        frames reach it in blocks, up to about two block periods after they were spoken (see
        ``sources_watermark``). None while the audio is lost or before the first frames."""
        if self.state == "lost" or not self._streams:
            return None
        delivered = dict(self._delivered)
        channels = [ch for plan in self._plans for ch, _ in plan.picks]
        if not channels or any(ch not in delivered for ch in channels):
            return None
        return min(delivered[ch] for ch in channels)

    # -- streams ------------------------------------------------------------------------------

    def _classifier(self, channel: int) -> FrameClassifier:
        gate = self.gate_dbfs if channel == Channel.AGENT else self.customer_gate_dbfs
        return FrameClassifier.from_audio_config(channel, self.cfg.audio, gate_dbfs=gate, mode=self.vad_mode,
                                                 coupling_db=self.coupling_db, own_level_dbfs=self.own_level_dbfs,
                                                 own_margin_db=self.own_margin_db)

    def _open(self) -> None:
        """Plan and open all streams; journal the sound-server sources' identity and follow them.
        Raises AudioDeviceError / OSError / PortAudioError / PulseRecordError."""
        server = sound_server_sources()
        if server is not None:
            self._journal_removed_sources(server[0])
        try:
            plans: list[StreamPlan] | None = plan_streams(self.cfg, server)
        except AudioDeviceError:
            if not self.reinit_portaudio:
                raise
            plans = None
        if self.reinit_portaudio and (plans is None or any(p.backend == "portaudio" for p in plans)):
            # PortAudio enumerates its devices once, at initialisation: a device missing then
            # (its sound server restarting, a headset replugged) stays missing, and indices may
            # have moved. So re-enumerate, then resolve the names again on the fresh list (a plan
            # that failed on the stale list is tried again there).
            sd = _sd()
            sd._terminate()
            sd._initialize()
            plans = plan_streams(self.cfg, server)
        now = monotonic_ns()
        judged = {}
        for plan in plans:
            if plan.backend == "pulse":
                ok, why = self._judge(plan.roles, plan.source)
                if not ok:
                    self._device(plan.source.device_event(now, "present", plan.roles, False, f"{plan.roles}: {why}"))
                    raise AudioDeviceError(f"{plan.roles} audio gives no evidence: {why}")
                judged[plan.name] = why
        self._gen += 1
        gen = self._gen
        streams = []
        native: list[tuple[int, Any, list[int]]] = []
        try:
            for sidx, plan in enumerate(plans):
                cols = [col for _, col in plan.picks]
                if plan.backend == "pulse":
                    from station.capture.pulse_record import PulseRecorder
                    streams.append(PulseRecorder(plan.name, plan.channels, self.rate, self.block,
                                                 f"station {plan.roles} {gen}"))
                    native.append((sidx, streams[-1], cols))
                    continue
                sd = _sd()
                stream = sd.InputStream(device=plan.device, channels=plan.channels, samplerate=self.rate,
                                        dtype="int16", blocksize=self.block, latency="low",
                                        callback=self._make_callback(gen, sidx, cols),
                                        finished_callback=self._make_finished(gen, plan.name))
                streams.append(stream)
            for s in streams:
                if hasattr(s, "start"):
                    s.start()
        except BaseException:
            for s in streams:
                self._close_stream(s)
            raise
        self._streams, self._plans, self._native = streams, plans, native
        self._opened_ns = monotonic_ns()
        self._last_block_ns = {}
        self._failed = None
        self._ok_pending = True
        self._has_customer = any(ch == Channel.CUSTOMER for p in plans for ch, _ in p.picks)
        for p in plans:
            for ch, _ in p.picks:
                if ch not in self._tracks:
                    self._tracks[ch] = _Track(ch, self._classifier(ch), self.rate, self.frame_len, self.dur_ns)
                self._tracks[ch].reset()
        native = [p for p in plans if p.backend == "pulse"]
        for p in native:
            self._device(p.source.device_event(now, "present", p.roles, True, f"{p.roles}: {judged[p.name]}"))
            self._native_sources[p.source.name] = (p.source, p.roles)
        if native:
            from station.capture.audio_watch import SourceWatch, WatchedStream
            a = self.cfg.audio
            follow = (a.agent_device or "").strip() == "" or (a.customer_device or "").strip() == ""
            self._watch = SourceWatch([WatchedStream(f"station {p.roles} {gen}", p.roles, p.source) for p in native],
                                      server[1] if server else "", follow, self._judge,
                                      self._make_watch_callback(gen))

    def _journal_removed_sources(self, infos: list[Any]) -> None:
        """A source the capture recorded that the sound server no longer has (a headset
        unplugged) is journaled as removed here too: the watch says so only while a stream is
        open, and the source may go while the capture is between two streams (reopening)."""
        names = {i.name for i in infos}
        now = monotonic_ns()
        for name, (info, roles) in list(self._native_sources.items()):
            if name in names:
                continue
            del self._native_sources[name]
            with self._dev_lock:
                already = (self._dev_last.get(name) or ("",))[0] == "removed"
            if not already:
                from station.capture.audio_watch import removed_event
                self._device(removed_event(info, roles, now))

    def _judge(self, roles: str, info: Any) -> tuple[bool, str]:
        """Whether audio from ``info`` (a SourceInfo) counts for ``roles`` (audio_identity rule)."""
        from station.capture.audio_identity import evidence
        p = self.profile
        expected = None
        if p is not None:
            expected = getattr(p, "agent_source" if roles.startswith("agent") else "customer_source", None)
        return evidence(info, expected, self.cfg.station.mode == "exam")

    def _device(self, ev: Any) -> None:
        """Journal a DeviceEvent; a "present" one only when it differs from the last for that device."""
        key = ev.device
        sig = (ev.state, ev.evidence, ev.detail, ev.name, ev.bus, ev.vendor, ev.product, ev.serial, ev.virtual)
        with self._dev_lock:
            if ev.state == "present" and self._dev_last.get(key) == sig:
                return
            self._dev_last[key] = sig
        if self._sink is not None:
            self._sink.put(ev)

    def _make_watch_callback(self, gen: int):
        def on_change(events: list, failure: str | None) -> None:   # the watch thread
            for ev in events:
                self._device(ev)
            if failure and gen == self._gen and not self._stop.is_set():
                self._failed = failure
        return on_change

    def _make_callback(self, gen: int, sidx: int, cols: list[int]):
        put = self._blocks.put
        qsize = self._blocks.qsize
        mono = time.monotonic_ns
        wall = time.time_ns
        counters = self.counters
        single = cols[0] if len(cols) == 1 else None

        def callback(indata, frames, time_info, status):  # PortAudio thread: copy and go
            arrival = mono()
            now_wall = wall()
            if qsize() > MAX_QUEUED_BLOCKS:
                counters["dropped_blocks"] += 1
                return
            data = indata[:, single].copy() if single is not None else indata[:, cols].copy()
            put((gen, sidx, data, time_info.inputBufferAdcTime, time_info.currentTime, arrival, now_wall,
                 bool(status.input_overflow)))

        return callback

    def _make_finished(self, gen: int, name: str):
        def finished():
            if gen == self._gen and not self._stop.is_set() and self._streams:
                self._failed = f"stream on {name!r} ended"
        return finished

    @staticmethod
    def _close_stream(stream: Any) -> None:
        if not hasattr(stream, "abort"):   # a PulseRecorder
            stream.close()
            return
        try:
            stream.abort(ignore_errors=True)
        except Exception:
            pass
        try:
            stream.close(ignore_errors=True)
        except Exception:
            pass

    def _close_all(self) -> None:
        self._gen += 1          # blocks still queued from these streams are ignored
        streams, self._streams, self._native = self._streams, [], []
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        for s in streams:
            self._close_stream(s)

    # -- worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_open = 0
        try:
            while not self._stop.is_set():
                now = monotonic_ns()
                if not self._streams and now >= next_open:
                    try:
                        self._open()
                    except Exception as e:  # AudioDeviceError, PortAudioError, OSError, ValueError
                        reason = self._reason(e)
                        if next_open == 0:  # at start: say it on stderr too, not only as a gap
                            log.warning("audio cannot start: %s (see `station devices`; retrying every "
                                        "%d ms)", reason, self.retry_ns // 1_000_000)
                        elif reason != self._open_error:   # each new reason once, not every retry
                            log.warning("audio cannot reopen: %s (retrying every %d ms)", reason,
                                        self.retry_ns // 1_000_000)
                        self._open_error = reason
                        self._lose(reason)
                        next_open = monotonic_ns() + self.retry_ns
                        continue
                # one wake-up per block period handles every block that came meanwhile (both
                # streams), instead of one per block: a Python wake-up costs CPU of its own
                if self._stop.wait(self.period_s):
                    break
                if self._failed and self._streams:
                    # the sound server moved the stream or removed its source: what is queued may
                    # come from the wrong source; none of it becomes a frame (a gap, not evidence)
                    self._lose(self._failed)
                    next_open = monotonic_ns() + min(self.retry_ns, 200_000_000)
                    continue
                out: list = []
                if self._native and not self._read_native(out):
                    self._lose(self._failed)
                    next_open = monotonic_ns() + min(self.retry_ns, 200_000_000)
                    continue
                while True:
                    try:
                        item = self._blocks.get_nowait()
                    except queue.Empty:
                        break
                    self._process(item, out)
                now = monotonic_ns()
                self._release_agent(now, out)
                self._emit(out)
                if self._streams:
                    why = self._stalled(now)
                    if why:
                        self._lose(why)
                        next_open = monotonic_ns() + min(self.retry_ns, 200_000_000)
        except Exception:  # a bug must not kill capture silently
            log.exception("audio worker failed")
            if self._health:
                self._health.report("lost", "audio worker failed (internal error)")
            self.state = "lost"
        finally:
            self._close_all()

    def _read_native(self, out: list) -> bool:
        """Read every native stream (what it recorded since the last wake-up) and process it
        into ``out`` (``_process``); False (``_failed`` set) when a stream has failed."""
        from station.capture.pulse_record import PulseRecordError
        for sidx, recorder, cols in self._native:
            try:
                got = recorder.read()
            except PulseRecordError as e:
                self._failed = str(e)
                return False
            if got is None:
                continue
            data, first_ns, arrival = got
            if data.ndim > 1:
                data = data[:, cols[0]] if len(cols) == 1 else data[:, cols]
            self._process((self._gen, sidx, data, first_ns, None, arrival, 0, False), out)
        return True

    @staticmethod
    def _reason(e: Exception) -> str:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and "PortAudio" in text:
            return "PortAudio library not found"
        return text[:200]

    def _stalled(self, now: int) -> str | None:
        if self._failed:
            return self._failed
        for sidx, plan in enumerate(self._plans):
            last = self._last_block_ns.get(sidx)
            since = self._opened_ns + self.stall_ns if last is None else last
            if now - since > self.stall_ns:
                return f"no audio from {plan.name!r} for more than {self.stall_ns // 1_000_000} ms"
        return None

    def _lose(self, reason: str) -> None:
        """Close everything, flush what is complete, and report "lost" from the end of the last frame."""
        was_open = bool(self._streams)
        self._close_all()
        out: list = []
        self._release_agent(None, out)
        self._emit(out)
        self._forget_customer()
        ends = [t.last_end_ns for t in self._tracks.values() if t.last_end_ns is not None]
        t_lost = max(ends) if ends else monotonic_ns()   # no delivered frame lies inside the lost span
        for t in self._tracks.values():
            t.reset()
        if self.state != "lost":
            self.counters["losses"] += 1
        if was_open:
            self.counters["restarts"] += 1
        if self._health.state != "lost":   # keep the first reason while retrying
            self._health.report("lost", reason, t_lost)
            self.detail = reason
        self.state = "lost"

    def _block_time(self, sidx: int, frames: int, adc: float, cur: float, arrival: int, wall: int) -> int:
        """Station time (ns) of a block's first sample, before the headset latency correction."""
        if cur is None:             # native: adc is already the first sample's station time (ns)
            self.adc_clock = "pulse"
            return int(adc)
        if adc > 0 and cur > 0 and 0 <= (cur - adc) * 1e9 < ADC_MAX_AGE_NS:
            cur_ns = cur * 1e9
            if abs(cur_ns - arrival) < CLOCK_MATCH_NS:
                self.adc_clock = "monotonic"
                return int(round(adc * 1e9))
            if abs(cur_ns - wall) < CLOCK_MATCH_NS:
                self.adc_clock = "realtime"
                return int(round(adc * 1e9)) - (wall - arrival)
        self.adc_clock = "arrival"
        try:
            latency_ns = int(self._streams[sidx].latency * 1e9)
        except Exception:
            latency_ns = 0
        return arrival - frames * 1_000_000_000 // self.rate - latency_ns

    def _process(self, item: tuple, out: list) -> None:
        """Stamp and frame one block; classify its customer frames (into ``out``, a list of
        ``speech`` column dicts) and queue its mic frames for ``_release_agent``."""
        gen, sidx, data, adc, cur, arrival, wall, overflow = item
        if gen != self._gen:
            return
        self.counters["blocks"] += 1
        self._last_block_ns[sidx] = arrival
        if overflow:
            self.counters["overflows"] += 1
        frames = data.shape[0]
        t0 = self._block_time(sidx, frames, adc, cur, arrival, wall) - self.latency_ns
        if self._ok_pending:
            self._ok_pending = False
            self.state = "ok" if self._has_customer else "degraded"
            self.detail = ("" if self._has_customer
                           else "no customer channel (audio.customer_device/customer_channel equal the agent's)")
            self._health.report(self.state, self.detail, t0)
        plan = self._plans[sidx]
        for k, (ch, _col) in enumerate(plan.picks):
            samples = data if data.ndim == 1 else data[:, k]
            track = self._tracks[ch]
            starts, block = track.push(np.ascontiguousarray(samples), t0, overflow)
            if not len(starts):
                continue
            if ch == Channel.CUSTOMER:
                cols = track.classifier.classify_block(block, starts)
                self._remember_customer(starts, cols["level_dbfs_x10"] / 10)
                track.frames += len(starts)
                track.last_end_ns = int(starts[-1]) + self.dur_ns
                out.append(cols)
            else:
                self._queue_agent(starts, block, arrival)

    def _queue_agent(self, starts: np.ndarray, frames: np.ndarray, arrival_ns: int) -> None:
        """Queue mic frames (start times ns, one frame per row) that arrived at arrival_ns for
        ``_release_agent``."""
        self._wait_t = np.concatenate((self._wait_t, starts))
        self._wait_frames = np.concatenate((self._wait_frames, frames))
        self._wait_arrival = np.concatenate((self._wait_arrival, np.full(len(starts), arrival_ns, np.int64)))

    def _remember_customer(self, starts: np.ndarray, levels: np.ndarray) -> None:
        """Keep the customer frames' times and levels (dBFS) of the last CUSTOMER_HISTORY_NS,
        sorted by start time."""
        t = np.concatenate((self._cust_t, starts))
        end = np.concatenate((self._cust_end, starts + self.dur_ns))
        level = np.concatenate((self._cust_level, levels))
        if len(self._cust_t) and starts[0] < self._cust_t[-1]:   # re-anchored backwards
            order = np.argsort(t, kind="stable")
            t, end, level = t[order], end[order], level[order]
        keep = end >= end.max() - CUSTOMER_HISTORY_NS
        self._cust_t, self._cust_end, self._cust_level = t[keep], end[keep], level[keep]

    def _forget_customer(self) -> None:
        self._cust_t = self._cust_t[:0]
        self._cust_end = self._cust_end[:0]
        self._cust_level = self._cust_level[:0]

    def _customer_levels(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Per window [t0, t1) (ns): the loudest customer frame level (dBFS) overlapping it, NaN
        where no customer frame is known there."""
        out = np.full(len(t0), np.nan)
        levels = self._cust_level
        if not len(levels) or not len(t0):
            return out
        first = np.searchsorted(self._cust_end, t0, side="right")   # first frame ending after t0
        stop = np.searchsorted(self._cust_t, t1, side="left")       # first frame starting at/after t1
        width = int(max(0, (stop - first).max()))
        if width == 0:
            return out
        idx = first[:, None] + np.arange(width)
        valid = idx < stop[:, None]
        vals = np.where(valid, levels[np.minimum(idx, len(levels) - 1)], -np.inf).max(axis=1)
        known = stop > first
        out[known] = vals[known]
        return out

    def _release_agent(self, now: int | None, out: list) -> None:
        """Classify the waiting mic frames whose customer window and nearby key presses are known
        (or that waited ``align_wait_ms``; all of them when now is None), oldest first, into
        ``out``."""
        track = self._tracks.get(Channel.AGENT)
        n = len(self._wait_t)
        if track is None or n == 0:
            self._take_waiting(n)
            return
        end = self._wait_t + self.dur_ns
        count = n
        if now is not None:
            if not self._has_customer:
                covered = np.ones(n, dtype=bool)
            else:
                cust = self._tracks.get(Channel.CUSTOMER)
                cust_until = cust.last_end_ns if cust is not None else None
                covered = (np.zeros(n, dtype=bool) if cust_until is None
                           else end + self.bleed_ns <= cust_until)
            ready = covered
            if self.key_times is not None:
                ready = ready & (end + self.click_ns <= self.key_times.complete_until(now))
            ok = ready | (now - self._wait_arrival >= self.align_wait_ns)
            count = n if ok.all() else int(np.argmin(ok))   # a prefix: frames leave in order
            self.counters["unaligned_frames"] += int(np.count_nonzero(~covered[:count]))
        if count == 0:
            return
        t, end = self._wait_t[:count], end[:count]
        frames = self._wait_frames[:count]
        self._take_waiting(count)
        level = self._customer_levels(t - self.bleed_ns, end + self.bleed_ns) if self._has_customer else None
        near = (self.key_times.within_each(t - self.click_ns, end + self.click_ns)
                if self.key_times is not None else None)
        out.append(track.classifier.classify_block(frames, t, near_key_press=near, customer_level_dbfs=level))
        track.frames += count
        track.last_end_ns = int(end[-1])

    def _take_waiting(self, count: int) -> None:
        self._wait_t = self._wait_t[count:]
        self._wait_frames = self._wait_frames[count:]
        self._wait_arrival = self._wait_arrival[count:]

    def _emit(self, out: list) -> None:
        """Hand the frames classified in one wake-up (``speech`` column dicts) to the sink as one
        time-ordered batch."""
        if not out or self._sink is None:
            return
        cols = {name: np.concatenate([c[name] for c in out]) for name in out[0]}
        order = np.argsort(cols["t_ns"], kind="stable")
        self._sink.put_batch(Batch(monotonic_ns(), {"speech": {k: v[order] for k, v in cols.items()}}))
        for c in out:   # now in the sink (delivered_until); frames of a channel leave in time order
            self._delivered[int(c["channel"][0])] = int(c["t_ns"][-1] + c["dur_ns"][-1])
        out.clear()
