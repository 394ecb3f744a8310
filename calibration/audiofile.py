"""Reading a recording for calibration: any WAV or FLAC a recorder writes, through libsndfile.

``read(path, channel)`` opens the file with soundfile (libsndfile): WAV with 8/16/24/32-bit
integer or 32/64-bit float samples, WAVE_FORMAT_EXTENSIBLE (what sox and many recorders write for
more than 16 bits or 2 channels), RF64/W64, FLAC, and the other formats libsndfile reads (AIFF,
Ogg, ...). It returns one channel as float64 in -1..+1 of full scale (an integer sample is divided
by 2^(bits-1), so int16 reads exactly as ``p56.to_unit`` does; float files keep their values,
also beyond +-1). Levels computed from it are therefore in dBFS/dBov whatever the bit depth.

Rates: P.56 and the 20 ms noise-floor frames work at any rate, but content outside the speech
band must not count: a file above ``MAX_RATE_HZ`` (48 kHz: 96/192 kHz studio recorders) is
resampled to 48 kHz (polyphase, scipy.signal.resample_poly, which low-pass filters at the new
Nyquist frequency), one below ``MIN_RATE_HZ`` (8 kHz) is resampled up to 8 kHz. ``rate`` is the
rate of the returned samples, ``file_rate`` the file's own.

Failure modes, each a ``UserError`` (exit code 1) with one line naming the file: file not found,
unreadable (permission, a directory), not an audio file libsndfile knows, a channel that does not
exist, no samples, longer than ``MAX_SECONDS`` (memory: the whole channel is held as float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

from station.errors import UserError

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 48000
MAX_SECONDS = 600.0
_BLOCK_FRAMES = 65536


@dataclass(frozen=True)
class Recording:
    """One channel of a recording.

    samples: float64, -1..+1 = full scale. rate: Hz of ``samples`` (after resampling).
    file_rate: Hz of the file. channels: channels in the file. channel: the one read (0-based).
    format: libsndfile's container and sample type, e.g. "WAVEX PCM_24", "FLAC PCM_16".
    """

    samples: np.ndarray
    rate: int
    file_rate: int
    channels: int
    channel: int
    format: str

    @property
    def resampled(self) -> bool:
        return self.rate != self.file_rate


def target_rate(file_rate: int) -> int:
    """The rate P.56 runs at for a file of ``file_rate`` Hz (the file's own when in 8..48 kHz)."""
    return min(max(int(file_rate), MIN_RATE_HZ), MAX_RATE_HZ)


def resample(x: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """``x`` (float64) from ``rate`` to ``to_rate`` Hz, polyphase with scipy's default Kaiser
    anti-aliasing filter. Returns ``x`` itself when the rates are equal."""
    if rate == to_rate:
        return x
    from scipy.signal import resample_poly
    ratio = Fraction(to_rate, rate).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def read(path: Path | str, channel: int = 0) -> Recording:
    """Channel ``channel`` (0 = first/left) of the audio file at ``path``; see the module doc."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an audio file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    with fh:
        try:
            f = soundfile.SoundFile(fh)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
            raise UserError(f"{path}: not a WAV, FLAC or other audio file libsndfile can read "
                            f"({_first_line(e)})") from None
        with f:
            fmt = f"{f.format} {f.subtype}"
            if not 0 <= channel < f.channels:
                raise UserError(f"{path}: has {f.channels} channel(s) (0..{f.channels - 1}); "
                                f"channel {channel} does not exist")
            if f.frames > MAX_SECONDS * f.samplerate:
                raise UserError(f"{path}: {f.frames / f.samplerate:.0f} s long; at most "
                                f"{MAX_SECONDS:.0f} s can be measured (cut it: `sox in.wav out.wav trim 0 "
                                f"{MAX_SECONDS:.0f}`)")
            try:
                x = np.concatenate([b[:, channel] for b in
                                    f.blocks(_BLOCK_FRAMES, dtype="float64", always_2d=True)] or
                                   [np.zeros(0)])
            except (soundfile.LibsndfileError, RuntimeError) as e:
                raise UserError(f"{path}: damaged {fmt} data ({_first_line(e)})") from None
            file_rate, channels = int(f.samplerate), int(f.channels)
    if len(x) == 0:
        raise UserError(f"{path}: contains no samples")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{path}: channel {channel} holds NaN or infinite float samples")
    rate = target_rate(file_rate)
    return Recording(samples=resample(x, file_rate, rate), rate=rate, file_rate=file_rate,
                     channels=channels, channel=channel, format=fmt)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of float samples (-1..1 = full scale) in dBFS (full-scale sine -3.01); -127 for
    silence, as ``station.vad.SILENCE_DBFS``."""
    from station.vad import SILENCE_DBFS
    ms = float(np.mean(np.square(x))) if len(x) else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else SILENCE_DBFS


def frame_levels_dbfs(x: np.ndarray, frame_len: int) -> np.ndarray:
    """RMS level (dBFS) of each whole frame of ``frame_len`` samples; the tail is dropped."""
    from station.vad import SILENCE_DBFS
    n = len(x) // frame_len
    if n == 0:
        return np.zeros(0)
    ms = np.mean(np.square(x[: n * frame_len].reshape(n, frame_len)), axis=1)
    with np.errstate(divide="ignore"):
        return np.where(ms > 0, 10.0 * np.log10(ms), SILENCE_DBFS)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
