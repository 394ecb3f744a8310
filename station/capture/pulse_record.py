"""Record one sound-server source by name, natively (libpulse's simple API through pasimple).

``PulseRecorder`` opens a record stream on a named source (``pa_simple_new`` with the source name;
no ALSA configuration, no PortAudio) at the station's rate, int16, N channels, with
``fragsize`` = one block (``audio.block_ms``): the server sends one fragment per block, and the
reader thread wakes once per block (``pa_simple_read`` blocks until a whole block is there),
instead of the 100 wake-ups/s the ALSA pulse plugin's threads make for a softphone at 10 ms.

Stamps (station clock, ns): after a block is read, ``pa_simple_get_latency`` (µs) is the age of
the next unread sample (source latency + what waits in the client's buffer); the block's first
sample was therefore captured at ``arrival - latency - block duration``. libpulse's timing is
interpolated (no round trip per block). A sink's monitor has a negative latency (it delivers
samples when the sink renders them, before they are heard), which the simple API reports as 0:
``ahead_ns`` (the sink's configured latency, ``SourceInfo.ahead_us``) is added back, so that a
monitor's stamp is when the sample is heard.

Server: libpulse's own rules (``$PULSE_SERVER`` first), exactly as ``station.capture.soundserver``.
Each stream gets a unique ``media.name`` (``stream_name``) so that the capture can find its own
source output on the server and follow where the server moves it.

Threads: one reader thread per stream; it alone touches the pa_simple handle (reads, and frees it
when it stops), so ``close`` never frees a handle under a blocked read; a reader stuck in a frozen
server is left behind (a daemon thread) and its handle freed if the read ever returns.

Failure modes: ``PulseRecordError`` from the constructor when libpulse-simple is missing or the
stream cannot be created (no such source, server gone: the server's error text); a failing read
(source removed, server gone, stream killed) calls ``on_error(reason)`` once and ends the thread.
"""

from __future__ import annotations

import ctypes
import threading
import time

import numpy as np

from station.osthread import named


class PulseRecordError(Exception):
    """The record stream could not be created or libpulse-simple is missing."""


def _strerror(code: int) -> str:
    try:
        lib = ctypes.CDLL("libpulse.so.0")
        lib.pa_strerror.restype = ctypes.c_char_p
        text = lib.pa_strerror(ctypes.c_int(code))
        return text.decode(errors="replace") if text else f"error {code}"
    except OSError:
        return f"error {code}"


def _code(e: Exception) -> int:
    try:
        return int(str(e).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


class PulseRecorder:
    """A running record stream on ``source`` (a source name). See the module doc.

    channels, rate (Hz): the sample spec asked for (the server converts). block: frames per read.
    on_block(data, first_sample_ns, arrival_ns): called in the reader thread for every block;
    data is int16 of shape (block,) for one channel, (block, channels) else.
    on_error(reason): called once when reading fails (not after ``close``). ahead_ns: added to
    every stamp (a monitor's render-ahead, see the module doc)."""

    def __init__(self, source: str, channels: int, rate: int, block: int, stream_name: str,
                 on_block, on_error, ahead_ns: int = 0):
        try:
            import pasimple
        except (ImportError, OSError) as e:
            raise PulseRecordError(f"pasimple cannot be loaded ({e})") from None
        self.source = source
        self.channels = channels
        self.rate = rate
        self.block = block
        self.stream_name = stream_name
        self._bytes = block * channels * 2
        self.ahead_ns = ahead_ns
        self._on_block = on_block
        self._on_error = on_error
        self._closed = threading.Event()
        try:
            self._pa = pasimple.PaSimple(pasimple.PA_STREAM_RECORD, pasimple.PA_SAMPLE_S16LE, channels, rate,
                                         app_name="station-capture", stream_name=stream_name,
                                         device_name=source or None, fragsize=self._bytes)
        except pasimple.PaSimpleError as e:
            raise PulseRecordError(f"cannot record {source!r} from the sound server: {_strerror(_code(e))}") from None
        self._thread = threading.Thread(target=named(self._run), name=f"audio-rec-{stream_name.split()[1] if ' ' in stream_name else stream_name}"[:15], daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pa = self._pa
        mono = time.monotonic_ns
        dur_ns = self.block * 1_000_000_000 // self.rate
        try:
            while not self._closed.is_set():
                try:
                    raw = pa.read(self._bytes)
                    arrival = mono()
                    latency_ns = int(pa.get_latency()) * 1000
                except Exception as e:  # PaSimpleError: stream killed, source gone, server gone
                    if not self._closed.is_set():
                        self._on_error(f"sound server stream on {self.source!r} failed: {_strerror(_code(e))}")
                    return
                if self._closed.is_set():
                    return
                data = np.frombuffer(raw, dtype="<i2")
                if self.channels > 1:
                    data = data.reshape(-1, self.channels)
                self._on_block(data, arrival - latency_ns - dur_ns + self.ahead_ns, arrival)
        finally:
            try:
                pa.close()
            except Exception:
                pass

    def close(self, wait_s: float = 1.0) -> None:
        """Stop reading; the reader frees the stream after its current read (at most one block)."""
        self._closed.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(wait_s)
