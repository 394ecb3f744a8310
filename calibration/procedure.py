"""The guided calibration procedure: devices, noise floor, speech level, bleed, latency, VAD gate.

``run(cfg, io, opts)`` walks the steps of issue 6 with a progress bar and one clear instruction per
step, builds the certificate and writes the headset profile. ``io`` is an audio I/O object
(``calibration.audio.SoundDeviceIO`` in real use); ``opts.rig`` an optional ``rig.Calibrator`` that
plays the reference tone and speech (then nothing is asked of a human: ``--yes``); ``opts.meter`` an
optional ``rig.SoundLevelMeter`` that reads the reference SPL instead of the calibrator's ``SPL?``.

Aborts (``UserError``, non-zero exit, no profile written): a device problem, a microphone that
delivers digital silence or no speech (unplugged, muted), clipping speech, an earpiece tone that is
louder on the microphone than on the customer channel (channels swapped), a sweep that never
reaches the microphone. Limits that are not met do not abort: the certificate says FAIL, the profile
is written with ``passed = false`` (the agent's health then warns) and the exit code is 1.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from station import __version__
from station.errors import UserError
from station.headset import HeadsetProfile, profile_dir, profile_path

from . import measure, p56
from .certificate import Certificate, Check
from .profile_writer import write_profile
from .sources import calibrated_sources

SENTENCE = ("Good morning, you are speaking with the customer service desk. "
            "How can I help you today?")


@dataclass
class Options:
    headset_id: str
    technician: str
    rig: object | None = None            # rig.Calibrator
    meter: object | None = None          # rig.SoundLevelMeter
    yes: bool = False                    # never wait for a human (requires a rig)
    out: TextIO = field(default_factory=lambda: sys.stderr)
    ask: Callable[[str], str] = input    # how to wait for the technician (interactive mode)
    now: dt.datetime | None = None


@dataclass
class Result:
    certificate: Certificate
    profile: HeadsetProfile
    profile_path: Path
    certificate_paths: dict[str, Path]

    @property
    def passed(self) -> bool:
        return self.certificate.passed


class Steps:
    """Step headers, instructions and a text progress bar on ``out``."""

    def __init__(self, out: TextIO, total: int):
        self.out = out
        self.total = total
        self.n = 0
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._last = -1

    def step(self, title: str, instruction: str = "") -> None:
        self.n += 1
        self._last = -1
        print(f"\n[{self.n}/{self.total}] {title}", file=self.out)
        if instruction:
            print(f"      -> {instruction}", file=self.out)
        self.out.flush()

    def bar(self, fraction: float) -> None:
        pct = int(max(0.0, min(1.0, fraction)) * 100)
        if pct == self._last or (not self.tty and pct % 25 and pct != 100):
            return
        self._last = pct
        filled = pct * 30 // 100
        end = "\r" if self.tty and pct < 100 else "\n"
        self.out.write(f"      [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%{end}")
        self.out.flush()

    def say(self, text: str) -> None:
        if self.tty and 0 <= self._last < 100:   # a bar is drawn on this line: end it first
            self.out.write("\n")
            self._last = -1
        print(f"      {text}", file=self.out)
        self.out.flush()


def run(cfg, io, opts: Options) -> Result:
    """Run the whole procedure; see the module docstring for aborts and outcomes."""
    c = cfg.calibration
    fs = int(cfg.audio.sample_rate)
    frame_ms = int(cfg.audio.frame_ms)
    rig, meter = opts.rig, opts.meter
    if opts.yes and rig is None:
        raise UserError("--yes needs a calibration rig (--rig URL): without one a technician must speak", 2)
    steps = Steps(opts.out, 7)
    if getattr(io, "notice", None) is not None:
        io.notice = steps.say     # "measuring again" lines go between the steps' own lines
    notes: list[str] = []

    def wait(prompt: str) -> None:
        if not opts.yes:
            opts.ask(f"      {prompt} [Enter] ")

    # 1. devices and channel mapping --------------------------------------------------------
    steps.step("Devices", "checking microphone, earpiece and customer channel")
    names = io.check()
    for what, name in names.items():
        steps.say(f"{what}: {name} ({fs} Hz)")
    rig_id = ""
    if rig is not None:
        rig_id = rig.identify()
        steps.say(f"rig: {rig_id}")
        rig.stop()
    mapping = {}
    if getattr(io, "has_customer", False):
        wait("Put the headset on the test head / table as for the calibration.")
        probe = measure.tone(fs, c.tone_seconds, c.tone_hz, c.test_level_dbfs)
        pr = io.playrec(probe, tail_s=0.3, with_customer=True, progress=steps.bar)
        mic_l = measure.band_level_dbfs(pr.mic, fs, c.tone_hz)
        cust_l = measure.band_level_dbfs(pr.customer, fs, c.tone_hz)
        mapping = {"mapping_customer_tone_dbfs": cust_l, "mapping_mic_tone_dbfs": mic_l}
        if cust_l < c.test_level_dbfs - 20.0:
            raise UserError(f"channel mapping: the earpiece tone does not reach the customer channel "
                            f"({cust_l:.1f} dBFS for {c.test_level_dbfs:.1f} played): audio.customer_device "
                            "must capture what the earpiece plays (its monitor)")
        if mic_l >= cust_l:
            raise UserError(f"channel mapping: the earpiece tone is louder on the microphone ({mic_l:.1f} dBFS) "
                            f"than on the customer channel ({cust_l:.1f} dBFS): agent and customer "
                            "devices or channels are swapped")
        steps.say(f"earpiece tone on customer channel {cust_l:.1f} dBFS, on microphone {mic_l:.1f} dBFS: ok")
    else:
        notes.append("channel mapping not checked: audio.customer_device is not configured")
        steps.say("customer channel not configured: mapping check skipped")

    # 2. noise floor ------------------------------------------------------------------------
    steps.step("Noise floor", f"silence please: recording {c.noise_seconds:g} s")
    wait("Keep quiet, hands off the keyboard.")
    silence = io.record(c.noise_seconds, progress=steps.bar)
    nf = measure.noise_floor(silence, fs, frame_ms)
    if nf.digital_silence:
        raise UserError("the microphone delivers digital silence (all samples zero): unplugged, muted or "
                        "wrong input device (audio.agent_device)")
    steps.say(f"noise floor {nf.dbfs:.1f} dBFS, {nf.dbfs_a:.1f} dBFS(A)")

    # 3. speech level (and microphone sensitivity with a rig) -------------------------------
    sensitivity = None
    if rig is not None:
        steps.step("Microphone sensitivity and speech level",
                   f"rig plays {c.tone_dbspl:g} dB SPL at {c.tone_hz:g} Hz, then the test sentence")
        rig.tone(c.tone_hz, c.tone_dbspl)
        rig.play()
        try:
            ref_tone = io.record(c.tone_seconds, progress=steps.bar)
            ref_spl = meter.average(3) if meter is not None else rig.spl()
        finally:
            rig.stop()
        tone_dbfs = measure.band_level_dbfs(ref_tone, fs, c.tone_hz)
        if tone_dbfs < nf.dbfs + 10:
            raise UserError(f"the rig's reference tone did not reach the microphone ({tone_dbfs:.1f} dBFS, "
                            f"noise {nf.dbfs:.1f} dBFS): is the headset on the rig?")
        sensitivity = ref_spl - tone_dbfs
        steps.say(f"reference {ref_spl:.1f} dB SPL reads {tone_dbfs:.1f} dBFS: 0 dBFS = {sensitivity:.1f} dB SPL")
        rig.speech(c.speech_dbspl)
        rig.play()
        try:
            speech = io.record(c.speech_seconds, progress=steps.bar)
        finally:
            rig.stop()
    else:
        steps.step("Speech level", "read the sentence aloud at your normal telephone voice")
        steps.say(f'"{SENTENCE}"')
        wait("Press Enter, then read the sentence.")
        speech = io.record(c.speech_seconds, progress=steps.bar)
    clip = measure.clipping(speech, c.clip_dbfs)
    if clip.clips:
        raise UserError(f"the speech recording clips ({clip.clipped} samples at or above {c.clip_dbfs:g} dBFS, "
                        f"peak {clip.peak_dbfs:.1f} dBFS): lower the microphone gain or move the microphone "
                        "away from the mouth, then calibrate again")
    lev = p56.measure(speech, fs)
    if lev.silent or lev.active_dbov < nf.dbfs + 6.0:
        raise UserError(f"no speech reached the microphone (active level {lev.active_dbov:.1f} dBFS, noise "
                        f"{nf.dbfs:.1f} dBFS): microphone unplugged, muted or wrong input device?")
    snr = lev.active_dbov - nf.dbfs
    steps.say(f"active speech level {lev.active_dbov:.1f} dBFS (P.56), activity {lev.activity * 100:.0f} %, "
              f"peak {clip.peak_dbfs:.1f} dBFS, SNR {snr:.1f} dB")

    # 4. earpiece-to-microphone coupling ----------------------------------------------------
    steps.step("Earpiece bleed", f"a {c.tone_hz:g} Hz tone plays in the earpiece at {c.test_level_dbfs:g} dBFS")
    wait("Headset in its normal position, keep quiet.")
    probe = measure.tone(fs, c.tone_seconds, c.tone_hz, c.test_level_dbfs)
    pr = io.playrec(probe, tail_s=0.3, progress=steps.bar)
    cp = measure.coupling(c.test_level_dbfs, pr.mic, silence, fs, c.tone_hz)
    steps.say(f"coupling loss {'>= ' if cp.lower_bound else ''}{cp.coupling_db:.1f} dB")

    # 5. latency ----------------------------------------------------------------------------
    steps.step("Latency", "a sweep plays in the earpiece and is found in the microphone")
    sweep = measure.chirp(fs, 0.5, level_dbfs=c.test_level_dbfs)
    lead = np.zeros(int(0.1 * fs), np.int16)
    pr = io.playrec(np.concatenate([lead, sweep]), tail_s=max(0.6, c.max_round_trip_ms / 1000 + 0.2),
                    progress=steps.bar)
    lat = measure.find_delay(sweep, pr.mic[len(lead):], fs)
    round_trip = lat.round_trip_ms
    if pr.adc_minus_dac_s is not None:
        input_latency = max(0.0, round_trip + 1000.0 * pr.adc_minus_dac_s)
    else:
        input_latency = max(0.0, round_trip - 1000.0 * pr.output_latency_s)
        notes.append("PortAudio gave no usable stream timestamps: input latency = round trip minus the "
                     f"reported output latency ({1000.0 * pr.output_latency_s:.1f} ms)")
    steps.say(f"round trip {round_trip:.1f} ms, input latency {input_latency:.1f} ms "
              f"(correlation {lat.confidence:.0f})")

    # 6. VAD gate ---------------------------------------------------------------------------
    steps.step("VAD gate", "choosing the energy gate and webrtcvad mode, then verifying them")
    gate = nf.frame_p90_dbfs + float(cfg.audio.gate_margin_db)
    gate = min(gate, lev.active_dbov - 20.0)
    gate = max(-120.0, min(-1.0, gate))
    mask = measure.active_frame_mask(speech, fs, lev.active_dbov, frame_ms)
    clicks = measure.synth_clicks(silence, fs, min(-1.0, lev.active_dbov + 10.0))
    stats = [measure.vad_stats(m, gate, speech, mask, silence, clicks, fs, cfg.audio) for m in (0, 1, 2, 3)]
    ok = [s for s in stats if s.false_alarm <= c.max_vad_false_alarm and s.click_rejection >= c.min_click_rejection
          and s.detected >= c.min_speech_detection]
    chosen = ok[0] if ok else min(stats, key=lambda s: (s.false_alarm + (1 - s.click_rejection), -s.detected))
    for s in stats:
        steps.say(f"mode {s.mode}: speech detected {s.detected * 100:.0f} %, noise false alarms "
                  f"{s.false_alarm * 100:.1f} %, clicks rejected {s.click_rejection * 100:.0f} %"
                  + ("   <- chosen" if s is chosen else ""))
    steps.say(f"gate {gate:.1f} dBFS, webrtcvad mode {chosen.mode}")
    notes.append("keyboard clicks for the VAD check are synthetic impulses added to the recorded noise")
    own = measure.own_voice_check(speech, fs, cfg.audio, chosen.mode, lev.active_dbov, gate,
                                 padding_ms=cfg.speech.padding_ms, min_spurt_ms=cfg.speech.min_spurt_ms)
    steps.say(f"own-voice margin {own.margin_db:g} dB: the sentence {own.soft_db:g} dB softer keeps "
              f"{own.kept_soft * 100:.0f} % of its talk time; {own.distant_db:g} dB quieter (a neighbour) "
              f"{own.rejected_distant * 100:.0f} % of it is rejected")

    # 7. output ----------------------------------------------------------------------------
    steps.step("Certificate and profile")
    now = (opts.now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    checks = [
        Check.of("noise floor", nf.dbfs, "<=", c.max_noise_floor_dbfs, "dBFS"),
        Check.of("speech SNR", snr, ">=", c.min_snr_db, "dB"),
        Check.of("speech peak (no clipping)", clip.peak_dbfs, "<=", c.clip_dbfs, "dBFS"),
        Check.of("coupling loss", cp.coupling_db, ">=", c.min_coupling_db, "dB",
                 "lower bound: tone below the microphone noise" if cp.lower_bound else ""),
        Check.of("round-trip latency", round_trip, "<=", c.max_round_trip_ms, "ms"),
        Check.of("VAD speech detection", chosen.detected * 100, ">=", c.min_speech_detection * 100, "%"),
        Check.of("VAD false alarms on noise", chosen.false_alarm * 100, "<=", c.max_vad_false_alarm * 100, "%"),
        Check.of("VAD click rejection", chosen.click_rejection * 100, ">=", c.min_click_rejection * 100, "%"),
        Check.of("own voice 6 dB softer: talk time kept", own.kept_soft * 100, ">=", 90.0, "%"),
    ]
    measurements = {
        "sample_rate_hz": fs,
        "noise_floor_dbfs": nf.dbfs, "noise_floor_dbfs_a": nf.dbfs_a, "noise_frame_p90_dbfs": nf.frame_p90_dbfs,
        "speech_active_level_dbfs": lev.active_dbov, "speech_activity_factor": lev.activity,
        "speech_long_term_dbfs": lev.long_term_dbov, "speech_peak_dbfs": clip.peak_dbfs, "speech_snr_db": snr,
        "coupling_db": cp.coupling_db, "coupling_mic_tone_dbfs": cp.mic_dbfs,
        "round_trip_ms": round_trip, "input_latency_ms": input_latency, "latency_correlation": lat.confidence,
        "vad_gate_dbfs": gate, "vad_mode": chosen.mode,
        "own_margin_db": own.margin_db, "own_soft_kept": own.kept_soft, "own_distant_rejected": own.rejected_distant,
        **{f"vad_mode{s.mode}_detected": s.detected for s in stats},
        **{f"vad_mode{s.mode}_false_alarm": s.false_alarm for s in stats},
        **{f"vad_mode{s.mode}_click_rejection": s.click_rejection for s in stats},
        **mapping,
    }
    if sensitivity is not None:
        measurements["sensitivity_dbspl_at_0dbfs"] = sensitivity
        measurements["speech_active_level_dbspl"] = lev.active_dbov + sensitivity
    cert = Certificate(headset_id=opts.headset_id, station_id=cfg.station.id, technician=opts.technician,
                       created=created, source="rig" if rig is not None else "voice", rig_id=rig_id,
                       measurements=measurements, checks=checks, notes=notes,
                       software=f"station {__version__}, config {cfg.hash[:12]}")
    agent_source, customer_source = calibrated_sources(cfg)
    profile = HeadsetProfile(
        agent_source=agent_source, customer_source=customer_source,
        headset_id=opts.headset_id, station_id=cfg.station.id, technician=opts.technician, created=created,
        noise_floor_dbfs=_clamp(nf.dbfs, -140.0, 0.0), gate_dbfs=_clamp(gate, -140.0, 0.0), vad_mode=chosen.mode,
        input_latency_ms=_clamp(input_latency, 0.0, 2000.0), round_trip_ms=_clamp(round_trip, 0.0, 4000.0),
        coupling_db=_clamp(cp.coupling_db, -20.0, 140.0), speech_level_dbfs=_clamp(lev.active_dbov, -140.0, 0.0),
        passed=cert.passed,
        sensitivity_dbspl_at_0dbfs=_clamp(sensitivity, 60.0, 200.0) if sensitivity is not None else None,
        own_margin_db=_clamp(own.margin_db, 0.0, 60.0))
    cert_dir = Path(c.certificate_dir).expanduser() if c.certificate_dir else profile_dir(cfg)
    paths = cert.write(cert_dir)
    ppath = write_profile(profile, profile_path(cfg, opts.headset_id))
    print(cert.text(), file=opts.out)
    steps.say(f"profile: {ppath}")
    steps.say(f"certificate: {paths['json']} (+ .txt, .html)")
    return Result(cert, profile, ppath, paths)


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, float(v)))
