"""Measurements on recorded arrays (no audio I/O here, so every function is testable offline).

Samples are int16 mono numpy arrays; levels are RMS in dBFS with full scale 32768
(``station.vad.level_dbfs``: a full-scale sine reads -3.01 dBFS), the same convention as P.56's
dBov. Times are in ms. Failure modes are stated per function; operator-facing problems raise
``station.errors.UserError`` with a message saying what to check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import correlate

from station.errors import UserError
from station.vad import SILENCE_DBFS, FrameClassifier, level_dbfs, levels_dbfs

FULL_SCALE = 32768.0


def a_weighting_gain(f_hz: np.ndarray) -> np.ndarray:
    """IEC 61672-1 A-weighting as a linear amplitude gain (1.0 at 1 kHz) for frequencies in Hz."""
    f2 = np.asarray(f_hz, dtype=np.float64) ** 2
    num = (12194.0 ** 2) * f2 ** 2
    den = ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2)) * (f2 + 12194.0 ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.where(den > 0, num / den, 0.0)
    return ra * 10 ** (2.0 / 20.0)  # +2.00 dB normalises to 0 dB at 1 kHz


def a_weighted_dbfs(samples: np.ndarray, sample_rate: int) -> float:
    """A-weighted RMS level (dBFS), computed exactly in the frequency domain (Parseval)."""
    x = np.asarray(samples, dtype=np.float64) / FULL_SCALE
    if len(x) == 0:
        return SILENCE_DBFS
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    w = np.abs(spec * a_weighting_gain(f)) ** 2
    # rfft holds each positive frequency once: double all bins except DC and (even n) Nyquist
    w[1:(len(x) + 1) // 2] *= 2
    ms = float(np.sum(w)) / len(x) ** 2
    return max(SILENCE_DBFS, 10 * math.log10(ms)) if ms > 0 else SILENCE_DBFS


def band_level_dbfs(samples: np.ndarray, sample_rate: int, center_hz: float, half_width_hz: float = 50.0) -> float:
    """RMS level (dBFS) of the components within center +- half_width Hz (Hann-windowed FFT).

    Used for the bleed tone: noise outside the band does not count, so a coupling loss well below
    the broadband noise floor is still measurable.
    """
    x = np.asarray(samples, dtype=np.float64) / FULL_SCALE
    n = len(x)
    if n == 0:
        return SILENCE_DBFS
    win = np.hanning(n)
    spec = np.fft.rfft(x * win)
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = np.abs(f - center_hz) <= half_width_hz
    power = 2.0 * float(np.sum(np.abs(spec[band]) ** 2)) / (n * float(np.sum(win ** 2)))
    return max(SILENCE_DBFS, 10 * math.log10(power)) if power > 0 else SILENCE_DBFS


def tone(sample_rate: int, seconds: float, hz: float, level_dbfs: float, fade_ms: float = 10.0) -> np.ndarray:
    """A sine of RMS ``level_dbfs`` (int16), with short raised-cosine fades against clicks."""
    n = int(round(seconds * sample_rate))
    amp = FULL_SCALE * math.sqrt(2.0) * 10 ** (level_dbfs / 20.0)
    if amp >= FULL_SCALE:
        raise ValueError(f"tone level {level_dbfs} dBFS would clip")
    x = amp * np.sin(2 * np.pi * hz * np.arange(n) / sample_rate)
    return _fade(x, sample_rate, fade_ms).astype(np.int16)


def chirp(sample_rate: int, seconds: float = 0.5, f0: float = 200.0, f1: float | None = None,
          level_dbfs: float = -20.0) -> np.ndarray:
    """A logarithmic sweep f0..f1 Hz (default up to 0.4 fs) at RMS ``level_dbfs`` (int16)."""
    f1 = f1 or 0.4 * sample_rate
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    k = math.log(f1 / f0)
    phase = 2 * np.pi * f0 * seconds / k * (np.exp(t / seconds * k) - 1.0)
    amp = FULL_SCALE * math.sqrt(2.0) * 10 ** (level_dbfs / 20.0)
    return _fade(amp * np.sin(phase), sample_rate, 5.0).astype(np.int16)


def _fade(x: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    m = min(len(x) // 2, int(sample_rate * fade_ms / 1000))
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / m)
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


@dataclass(frozen=True)
class Clipping:
    """peak_dbfs: 20 log10(max|x| / 32768). clipped: samples at or above the clip level."""

    peak_dbfs: float
    clipped: int

    @property
    def clips(self) -> bool:
        return self.clipped > 0


def clipping(samples: np.ndarray, clip_dbfs: float = -0.1) -> Clipping:
    """Peak level and the number of samples at or above ``clip_dbfs`` (dBFS peak)."""
    x = np.abs(np.asarray(samples, dtype=np.float64))
    peak = float(np.max(x)) if len(x) else 0.0
    limit = FULL_SCALE * 10 ** (clip_dbfs / 20.0)
    return Clipping(peak_dbfs=20 * math.log10(peak / FULL_SCALE) if peak > 0 else SILENCE_DBFS,
                    clipped=int(np.count_nonzero(x >= limit)))


def frames(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Split into whole frames (rows); the incomplete tail is dropped."""
    n = len(samples) // frame_len
    return np.ascontiguousarray(samples[: n * frame_len], dtype=np.int16).reshape(n, frame_len)


def frame_levels(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Per-frame RMS level (dBFS)."""
    return levels_dbfs(frames(samples, frame_len))


@dataclass(frozen=True)
class NoiseFloor:
    """dbfs: RMS of the recording; dbfs_a: A-weighted; frame_p90_dbfs: 90th percentile of frame
    levels (what an energy gate must clear); digital_silence: every sample is zero."""

    dbfs: float
    dbfs_a: float
    frame_p90_dbfs: float
    digital_silence: bool


def noise_floor(samples: np.ndarray, sample_rate: int, frame_ms: int = 20) -> NoiseFloor:
    """Noise floor of a recording of silence."""
    x = np.asarray(samples, dtype=np.int16)
    lv = frame_levels(x, sample_rate * frame_ms // 1000)
    return NoiseFloor(dbfs=level_dbfs(x), dbfs_a=a_weighted_dbfs(x, sample_rate),
                      frame_p90_dbfs=float(np.percentile(lv, 90)) if len(lv) else SILENCE_DBFS,
                      digital_silence=not np.any(x))


@dataclass(frozen=True)
class Latency:
    """lag_samples: where the reference appears in the recording; round_trip_ms: lag / fs;
    confidence: correlation peak over the median absolute correlation (> ~10 is a clear find)."""

    lag_samples: int
    round_trip_ms: float
    confidence: float


def find_delay(reference: np.ndarray, recording: np.ndarray, sample_rate: int, min_confidence: float = 8.0) -> Latency:
    """Delay of ``reference`` inside ``recording`` by cross-correlation (FFT).

    Raises UserError when the reference is not clearly present (confidence below min_confidence):
    the output does not reach the microphone, or the sweep is buried in noise.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    if len(rec) < len(ref):
        raise ValueError("recording shorter than the reference")
    c = correlate(rec, ref, mode="valid", method="fft")
    a = np.abs(c)
    k = int(np.argmax(a))
    med = float(np.median(a)) or 1e-12
    conf = float(a[k]) / med
    if conf < min_confidence:
        raise UserError(f"the test sweep was not found in the microphone signal (correlation {conf:.1f}, "
                        f"need {min_confidence:g}): is the earpiece near the microphone and the output "
                        "device right?")
    return Latency(lag_samples=k, round_trip_ms=1000.0 * k / sample_rate, confidence=conf)


@dataclass(frozen=True)
class Coupling:
    """coupling_db: played tone level minus the tone level in the microphone (dB, positive = quieter
    in the microphone); lower_bound: the tone did not rise 6 dB above the microphone's noise in its
    band, so the true loss is at least this."""

    played_dbfs: float
    mic_dbfs: float
    coupling_db: float
    lower_bound: bool


def coupling(played_dbfs: float, recording: np.ndarray, silence: np.ndarray, sample_rate: int, hz: float) -> Coupling:
    """Earpiece-to-microphone coupling loss from a tone of ``hz`` played at ``played_dbfs``.

    silence: a noise-floor recording of the same microphone, to tell the tone from noise in its band.
    """
    mic = band_level_dbfs(recording, sample_rate, hz)
    noise = band_level_dbfs(silence[: len(recording)], sample_rate, hz) if len(silence) else SILENCE_DBFS
    if mic < noise + 6.0:
        # scale noise band level to the recording length for a fair comparison
        return Coupling(played_dbfs, noise, played_dbfs - noise, True)
    # subtract the noise power in the band
    pm = 10 ** (mic / 10) - 10 ** (noise / 10)
    mic_clean = 10 * math.log10(pm)
    return Coupling(played_dbfs, mic_clean, played_dbfs - mic_clean, False)


@dataclass(frozen=True)
class VadStats:
    """Shares of frames: detected = speech frames called speech; false_alarm = noise frames called
    speech; click_rejection = click frames not called speech."""

    mode: int
    gate_dbfs: float
    detected: float
    false_alarm: float
    click_rejection: float


def vad_stats(mode: int, gate_dbfs: float, speech: np.ndarray, speech_mask: np.ndarray, noise: np.ndarray,
              clicks: np.ndarray, sample_rate: int, audio: Any) -> VadStats:
    """Run the agent's FrameClassifier (set up from ``audio``, the [audio] config section, with
    this mode and gate) on the calibration recordings: the detector, its gate and click checks;
    the own-voice check (``own_voice_check`` measures it) and the tracked noise floor (for noise
    that comes after calibration) are left out here.

    speech_mask: per speech frame, True where P.56's envelope says speech is active (only those
    count for detection). clicks: a recording with keyboard clicks; all its frames are offered
    as near a key press, as the agent would for real key events.
    """
    fl = sample_rate * audio.frame_ms // 1000

    def run(x, near=False):
        clf = FrameClassifier.from_audio_config(0, audio, gate_dbfs=gate_dbfs, mode=mode, sample_rate=sample_rate,
                                                own_margin_db=0.0, noise_margin_db=0.0)
        fr = frames(x, fl)
        near_keys = np.full(len(fr), near, dtype=bool)
        return clf.classify_block(fr, np.arange(len(fr), dtype=np.int64), near_key_press=near_keys)["speech"]

    sp = run(speech)
    mask = speech_mask[: len(sp)]
    detected = float(np.mean(sp[mask])) if mask.any() else 0.0
    nz = run(noise)
    cl = run(clicks, near=True)
    return VadStats(mode=mode, gate_dbfs=gate_dbfs, detected=detected,
                    false_alarm=float(np.mean(nz)) if len(nz) else 0.0,
                    click_rejection=1.0 - float(np.mean(cl)) if len(cl) else 1.0)


def active_frame_mask(samples: np.ndarray, sample_rate: int, active_dbfs: float, frame_ms: int = 20,
                      below_db: float = 15.9) -> np.ndarray:
    """Frames whose level is within ``below_db`` of the P.56 active level: the speech the VAD must
    catch (weak fricatives and pauses below that are not held against it)."""
    lv = frame_levels(samples, sample_rate * frame_ms // 1000)
    return lv >= active_dbfs - below_db


def synth_clicks(noise: np.ndarray, sample_rate: int, level_dbfs: float, every_ms: int = 150,
                 seed: int = 7) -> np.ndarray:
    """Keyboard-click test signal: the recorded noise with short decaying impulses added.

    Each click is ~4 ms of damped broadband noise with peak ``level_dbfs``; documented as
    synthetic in the certificate (a real typing recording can replace it).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(noise, dtype=np.float64).copy()
    n = int(0.004 * sample_rate)
    env = np.exp(-np.arange(n) / (0.0008 * sample_rate))
    peak = FULL_SCALE * 10 ** (level_dbfs / 20.0)
    step = int(every_ms * sample_rate / 1000)
    for start in range(step // 2, len(x) - n, step):
        burst = rng.uniform(-1, 1, n) * env
        x[start:start + n] += peak * burst / max(1e-9, np.max(np.abs(burst)))
    return np.clip(x, -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class OwnVoiceCheck:
    """The own-voice margin chosen by calibration (dB), and on the calibration speech: the share
    of its talk time (talk spurts as the engine builds them) kept when spoken ``soft_db`` softer
    (kept_soft), and the share rejected as another person's voice when ``distant_db`` quieter
    (rejected_distant), each against the same classification without the own-voice check."""

    margin_db: float
    kept_soft: float
    rejected_distant: float
    soft_db: float
    distant_db: float


def own_voice_check(speech: np.ndarray, sample_rate: int, audio: Any, mode: int, level_dbfs: float,
                    gate_dbfs: float, *,
                    padding_ms: int = 300, min_spurt_ms: int = 100, soft_db: float = 6.0,
                    distant_db: float = 20.0, min_kept: float = 0.9, max_extra_db: float = 8.0) -> OwnVoiceCheck:
    """Check the own-voice margin on the calibration speech (int16, its P.56 level level_dbfs):
    starting from audio.own_margin_db, the smallest margin (1 dB steps, at most max_extra_db
    more) that keeps at least min_kept of the talk time (pauses < padding_ms bridged, spurts <
    min_spurt_ms dropped, as the engine does) when the same speech comes soft_db softer, i.e. a
    wearer speaking softer than the technician. Also reports how much of its talk time, distant_db
    quieter (a neighbour), is rejected. Both classifications use the calibrated gate (gate_dbfs)
    and the tracked noise floor is left out, so the ratio is the own-voice check's alone."""
    from station import intervals
    fl = sample_rate * audio.frame_ms // 1000
    fr = frames(speech, fl)
    dur = audio.frame_ms * 1_000_000

    def talk(gain_db: float, margin: float) -> int:
        scaled = np.clip(np.round(fr.astype(np.float64) * 10 ** (gain_db / 20)), -32768, 32767).astype(np.int16)
        clf = FrameClassifier.from_audio_config(0, audio, gate_dbfs=gate_dbfs, mode=mode,
                                                sample_rate=sample_rate, own_level_dbfs=level_dbfs,
                                                own_margin_db=margin, noise_margin_db=0.0)
        sp = clf.classify_block(scaled, np.arange(len(fr), dtype=np.int64) * dur)["speech"]
        iv = intervals.normalize([(i * dur, (i + 1) * dur) for i in np.flatnonzero(sp)])
        iv = intervals.at_least(intervals.bridge(iv, padding_ms * 1_000_000), min_spurt_ms * 1_000_000)
        return intervals.measure(iv)

    def share(gain_db: float, margin: float) -> float:
        base = talk(gain_db, 0.0)
        return talk(gain_db, margin) / base if base else 0.0

    margin = float(audio.own_margin_db)
    best = margin
    for extra in range(int(max_extra_db) + 1):
        best = margin + extra
        if share(-soft_db, best) >= min_kept:
            break
    return OwnVoiceCheck(best, share(-soft_db, best), 1.0 - share(-distant_db, best), soft_db, distant_db)
