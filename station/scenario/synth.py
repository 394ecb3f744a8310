"""Synthetic headset audio for the scenario: cheap, deterministic, and speech-like enough for
webrtcvad.

Speech: a glottal pulse train (f0 with slow vibrato and ~1.5 % jitter, per-pulse shimmer) through a
short glottal low-pass and a cascade of three formant resonators (one vowel per syllable, 180-300 ms
syllables, i.e. 3-5 Hz), under a syllable-rate amplitude envelope (floor 0.45, so phrases stay
voiced), with a little aspiration noise and 8 ms fades at phrase edges. Pauses are background noise.

Channels (int16, ``fs`` Hz):

- customer (1): noise + the customer's utterances;
- agent (0): noise + the agent's utterances + earpiece bleed (the customer's speech at
  ``plan.bleed_db``, about -25 dB) + a keyboard click (a 4 ms decaying noise burst, peak about
  -20 dBFS, crest factor > 15 dB) at every planned key press.

Audio is produced in fixed chunks (``chunk_frames`` frames); chunk ``c`` depends only on the plan,
the seed and ``c``, never on how callers step through time, so results are reproducible. Cost:
about 0.1 s per simulated minute for both channels on one core (classification is extra).
"""

from __future__ import annotations

import math

import numpy as np

from station.scenario.plan import AGENT, CUSTOMER, Plan, Utterance

# (F1, F2, F3) Hz of a few vowels (a, i, e, o, u, ae) and their bandwidths
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
          (300, 870, 2240), (660, 1720, 2410))
BANDWIDTHS = (90.0, 110.0, 170.0)
NOISE_DBFS = -65.0
CLICK_PEAK_DBFS = -20.0


def _resonator_ir(fs: int, formants: tuple[float, ...], n: int) -> np.ndarray:
    """Impulse response (n samples) of a glottal low-pass and cascaded two-pole resonators."""
    glottal = np.hanning(max(3, int(0.0015 * fs)))
    h = np.zeros(n)
    h[: len(glottal)] = glottal
    for f, bw in zip(formants, BANDWIDTHS):
        f = min(f, 0.45 * fs)
        r = math.exp(-math.pi * bw / fs)
        a1, a2 = 2 * r * math.cos(2 * math.pi * f / fs), -r * r
        y = np.zeros(n)
        y1 = y2 = 0.0
        for i in range(n):
            v = (1 - r) * h[i] + a1 * y1 + a2 * y2
            y[i] = v
            y2, y1 = y1, v
        h = y
    return h / math.sqrt(float(np.dot(h, h)))


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


class Voice:
    """One speaker: vowel impulse responses with formants scaled for the voice (shorter tract for
    higher f0)."""

    def __init__(self, fs: int, f0: float):
        scale = 1.0 + 0.15 * (f0 > 160)
        n = int(0.03 * fs)
        self.irs = [_resonator_ir(fs, tuple(f * scale for f in v), n) for v in VOWELS]


class AudioSynth:
    """Both channels of the scenario, chunk by chunk. ``chunk(c)`` -> (agent, customer) int16."""

    def __init__(self, plan: Plan, *, fs: int, frame_ms: int, chunk_frames: int, start_ms_keys: list[int]):
        self.plan = plan
        self.fs = fs
        self.spm = fs // 1000                    # samples per ms (fs is a multiple of 1000)
        self.frame_len = fs * frame_ms // 1000
        self.chunk_len = self.frame_len * chunk_frames
        self.voices = {AGENT: Voice(fs, plan.agent_voice[0]), CUSTOMER: Voice(fs, plan.customer_voice[0])}
        self.noise_rms = 32768.0 * 10 ** (NOISE_DBFS / 20)
        self.bleed_gain = 10 ** (plan.bleed_db / 20)
        self.utts = {p: plan.party_utterances(p) for p in (AGENT, CUSTOMER)}
        self.utt_start = {p: np.array([u.start_ms * self.spm for u in us], dtype=np.int64)
                          for p, us in self.utts.items()}
        self.utt_end = {p: np.array([u.end_ms * self.spm for u in us], dtype=np.int64)
                        for p, us in self.utts.items()}
        self.key_samples = np.array([t * self.spm for t in start_ms_keys], dtype=np.int64)
        self._cache: dict[int, np.ndarray] = {}
        crng = np.random.default_rng([plan.seed, 99])
        n = int(0.004 * fs)
        decay = np.exp(-np.arange(n) / (0.0004 * fs))
        peak = 32768.0 * 10 ** (CLICK_PEAK_DBFS / 20)
        self.clicks = []
        for _ in range(8):
            c = crng.normal(0, 1, n) * decay
            self.clicks.append(c / np.max(np.abs(c)) * peak * crng.uniform(0.6, 1.0))

    def set_noise_dbfs(self, dbfs: float) -> None:
        self.noise_rms = 32768.0 * 10 ** (dbfs / 20)

    # ------------------------------------------------------------------ speech
    def utterance(self, u: Utterance) -> np.ndarray:
        """The waveform of one utterance (float, int16 scale), from u.start_ms to u.end_ms."""
        cached = self._cache.get(u.index)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self.plan.seed, 1, u.index])
        fs, spm = self.fs, self.spm
        voice = self.voices[u.party]
        out = np.zeros((u.end_ms - u.start_ms) * spm)
        voiced = np.zeros(len(out), dtype=bool)
        irlen = len(voice.irs[0])
        for ps, pe in u.phrases:
            n = (pe - ps) * spm
            t = np.arange(n) / fs
            jitter = np.convolve(rng.normal(0, 0.015, n // 80 + 2), np.ones(3) / 3, mode="same")
            jitter = np.repeat(jitter, 80)[:n]
            f0 = u.f0 * (1 + 0.06 * np.sin(2 * math.pi * rng.uniform(0.7, 1.6) * t + rng.uniform(0, 6.28)))
            f0 *= (1 - 0.08 * t / max(t[-1], 1e-9)) * (1 + jitter)   # slight declination
            phase = np.cumsum(f0 / fs)
            pulses = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
            exc = np.zeros(n)
            exc[pulses] = 1.0 + rng.normal(0, 0.06, len(pulses))
            seg = np.zeros(n + irlen)
            env = np.empty(n)
            pos = 0
            while pos < n:
                L = min(int(fs * rng.uniform(0.18, 0.30)), n - pos)
                if n - (pos + L) < int(0.08 * fs):
                    L = n - pos
                ir = voice.irs[int(rng.integers(len(voice.irs)))]
                seg[pos:pos + L + irlen - 1] += _fftconv(exc[pos:pos + L], ir)
                x = np.arange(L) / L
                env[pos:pos + L] = 0.45 + 0.55 * np.sin(math.pi * x) ** 2
                pos += L
            y = seg[:n] * env
            y += rng.normal(0, 0.05 * float(np.std(y)) + 1e-12, n) * env
            fade = min(int(0.008 * fs), n // 4)
            if fade > 0:
                w = 0.5 - 0.5 * np.cos(math.pi * np.arange(fade) / fade)
                y[:fade] *= w
                y[-fade:] *= w[::-1]
            a = (ps - u.start_ms) * spm
            out[a:a + n] = y
            voiced[a:a + n] = True
        rms = math.sqrt(float(np.mean(out[voiced] ** 2))) if voiced.any() else 1.0
        out *= 32768.0 * 10 ** (u.level_dbfs / 20) / max(rms, 1e-12)
        self._cache[u.index] = out
        return out

    def _speech(self, party: int, s0: int, s1: int) -> np.ndarray:
        """Sum of one party's utterances over samples [s0, s1)."""
        buf = np.zeros(s1 - s0)
        starts, ends = self.utt_start[party], self.utt_end[party]
        lo = int(np.searchsorted(ends, s0, side="right"))
        hi = int(np.searchsorted(starts, s1, side="left"))
        for u in self.utts[party][lo:hi]:
            w = self.utterance(u)
            us = u.start_ms * self.spm
            a, b = max(s0, us), min(s1, us + len(w))
            if b > a:
                buf[a - s0:b - s0] += w[a - us:b - us]
        # forget utterances that ended before this chunk
        for u in self.utts[party][:lo]:
            self._cache.pop(u.index, None)
        return buf

    # ------------------------------------------------------------------ chunks
    def chunk(self, c: int, n_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(agent, customer) int16 samples of chunk c (n_samples long, default chunk_len)."""
        n = self.chunk_len if n_samples is None else n_samples
        s0 = c * self.chunk_len
        s1 = s0 + n
        nrng = np.random.default_rng([self.plan.seed, 2, c])
        cust_speech = self._speech(CUSTOMER, s0, s1)
        noise = nrng.standard_normal((2, n), dtype=np.float32) * np.float32(self.noise_rms)
        customer = cust_speech + noise[1]
        agent = self._speech(AGENT, s0, s1) + self.bleed_gain * cust_speech + noise[0]
        lo = int(np.searchsorted(self.key_samples, s0 - len(self.clicks[0]), side="left"))
        hi = int(np.searchsorted(self.key_samples, s1, side="left"))
        for k in range(lo, hi):
            click = self.clicks[k % len(self.clicks)]
            ks = int(self.key_samples[k])
            a, b = max(s0, ks), min(s1, ks + len(click))
            if b > a:
                agent[a - s0:b - s0] += click[a - ks:b - ks]
        return to_int16(agent), to_int16(customer)
