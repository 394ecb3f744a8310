"""Record one sound-server source by name, natively: libpulse's asynchronous API through ctypes,
its main loop run only once per block, by its owner's thread (``read``).

Why not a wrapper: libpulse's simple API (and wrappers of it such as pasimple) and ALSA's pulse
plugin run a main loop thread that wakes for every packet the server pushes; while a softphone
records the same device at 10 ms, that is about 100 packets/s per stream, and the simple API's
reader wakes for each as well (measured: 320 + 210 wake-ups/s per stream, about 1.3 % of a core).
``PulseRecorder`` instead opens a record stream (``pa_stream_connect_record`` on the source name,
``fragsize`` = one block, ``audio.block_ms``) on a plain ``pa_mainloop`` that nobody polls between
blocks: the server's packets wait in the socket, and ``read``, called once per block by the
audio source's worker (no thread of its own: the worker wakes once per block anyway; a reader
thread per stream cost two more wake-ups per block, about 0.1 % of a core for two streams),
dispatches everything that came (``pa_mainloop_iterate``, non-blocking) and peeks all recorded
data out of the stream. No ALSA configuration, no PortAudio. Not thread-safe: one thread opens,
reads and closes a recorder.

Stamps (station clock, ns): after draining, ``pa_stream_get_latency`` is the age of the next
sample not yet recorded-and-read, i.e. the last sample read was taken at ``arrival - latency``
(a monitor's latency is negative: it delivers samples before they are heard; the stamp is
when they are heard). The block's first sample is that minus the block's duration. libpulse's
timing is interpolated between its automatic timing updates (no round trip per block).

Server: libpulse's own rules (``$PULSE_SERVER`` first), as ``station.capture.soundserver``.
The stream's ``media.name`` is ``stream_name``, unique per stream, so that the capture finds its
own source output on the server and follows where the server moves it (``audio_watch``).

Failure modes: ``PulseRecordError`` from the constructor (libpulse missing, no server, no such
source: the server's error text; no answer within ``CONNECT_TIMEOUT_S``); a stream that fails
later (source removed without another to move to, server gone, stream killed): ``read`` raises
``PulseRecordError`` with the reason. Data lost in the server or the client (a hole) is
counted as an overflow; the next block is stamped on its own, so the frames re-anchor.
"""

from __future__ import annotations

import ctypes
import time
from ctypes import POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p

import numpy as np


CONNECT_TIMEOUT_S = 3.0
PA_SAMPLE_S16LE = 3
PA_CONTEXT_NOAUTOSPAWN = 1
PA_CONTEXT_READY, PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED = 4, 5, 6
PA_STREAM_READY, PA_STREAM_FAILED, PA_STREAM_TERMINATED = 2, 3, 4
PA_STREAM_INTERPOLATE_TIMING = 0x0002
PA_STREAM_AUTO_TIMING_UPDATE = 0x0008
PA_STREAM_ADJUST_LATENCY = 0x2000


class PulseRecordError(Exception):
    """The record stream could not be created, or libpulse is missing."""


class _SampleSpec(Structure):
    _fields_ = [("format", c_int), ("rate", c_uint32), ("channels", c_uint8)]


class _BufferAttr(Structure):
    _fields_ = [("maxlength", c_uint32), ("tlength", c_uint32), ("prebuf", c_uint32), ("minreq", c_uint32),
                ("fragsize", c_uint32)]


_lib = None


def _libpulse():
    """libpulse.so.0 with the prototypes used here. Raises PulseRecordError."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libpulse.so.0")
    except OSError as e:
        raise PulseRecordError(f"libpulse cannot be loaded ({e}); install libpulse0") from None
    protos = {
        "pa_mainloop_new": ([], c_void_p), "pa_mainloop_get_api": ([c_void_p], c_void_p),
        "pa_mainloop_prepare": ([c_void_p, c_int], c_int), "pa_mainloop_poll": ([c_void_p], c_int),
        "pa_mainloop_dispatch": ([c_void_p], c_int), "pa_mainloop_iterate": ([c_void_p, c_int, c_void_p], c_int),
        "pa_mainloop_free": ([c_void_p], None),
        "pa_context_new": ([c_void_p, c_char_p], c_void_p),
        "pa_context_connect": ([c_void_p, c_char_p, c_int, c_void_p], c_int),
        "pa_context_get_state": ([c_void_p], c_int), "pa_context_errno": ([c_void_p], c_int),
        "pa_context_disconnect": ([c_void_p], None), "pa_context_unref": ([c_void_p], None),
        "pa_stream_new": ([c_void_p, c_char_p, POINTER(_SampleSpec), c_void_p], c_void_p),
        "pa_stream_connect_record": ([c_void_p, c_char_p, POINTER(_BufferAttr), c_int], c_int),
        "pa_stream_get_state": ([c_void_p], c_int),
        "pa_stream_peek": ([c_void_p, POINTER(c_void_p), POINTER(c_size_t)], c_int),
        "pa_stream_drop": ([c_void_p], c_int),
        "pa_stream_get_latency": ([c_void_p, POINTER(c_uint64), POINTER(c_int)], c_int),
        "pa_stream_disconnect": ([c_void_p], c_int), "pa_stream_unref": ([c_void_p], None),
        "pa_strerror": ([c_int], c_char_p),
    }
    for name, (args, res) in protos.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    _lib = lib
    return lib


def _strerror(lib, code: int) -> str:
    text = lib.pa_strerror(code)
    return text.decode(errors="replace") if text else f"error {code}"


class PulseRecorder:
    """A running record stream on ``source`` (a source name). See the module doc.

    channels, rate (Hz): the sample spec asked for (the server converts). block: frames per
    read (``read`` is meant to be called every block / rate seconds)."""

    def __init__(self, source: str, channels: int, rate: int, block: int, stream_name: str):
        self.lib = lib = _libpulse()
        self.source = source
        self.channels = channels
        self.rate = rate
        self.block = block
        self.stream_name = stream_name
        self.frame_bytes = 2 * channels
        self.overflows = 0
        self._pending = b""     # the bytes of an incomplete sample frame, kept for the next read
        self._ml = lib.pa_mainloop_new()
        self._ctx = self._stream = None
        try:
            self._connect()
        except BaseException:
            self._free()
            raise

    # -- set-up (blocking, bounded) -------------------------------------------------------------

    def _wait(self, ready, what: str) -> None:
        """Run the main loop until ready() is True; PulseRecordError on failure or timeout."""
        lib = self.lib
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise PulseRecordError(f"the sound server did not answer within {CONNECT_TIMEOUT_S:g} s ({what})")
            if (lib.pa_mainloop_prepare(self._ml, int(left * 1e6)) < 0 or lib.pa_mainloop_poll(self._ml) < 0
                    or lib.pa_mainloop_dispatch(self._ml) < 0):
                raise PulseRecordError(f"sound server main loop failed ({what})")

    def _connect(self) -> None:
        lib = self.lib
        self._ctx = lib.pa_context_new(lib.pa_mainloop_get_api(self._ml), b"station-capture")
        if not self._ctx or lib.pa_context_connect(self._ctx, None, PA_CONTEXT_NOAUTOSPAWN, None) < 0:
            raise PulseRecordError(f"no sound server: {self._ctx_error()}")

        def ctx_ready() -> bool:
            st = lib.pa_context_get_state(self._ctx)
            if st in (PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED):
                raise PulseRecordError(f"no sound server: {self._ctx_error()}")
            return st == PA_CONTEXT_READY

        self._wait(ctx_ready, "connecting")
        spec = _SampleSpec(PA_SAMPLE_S16LE, self.rate, self.channels)
        self._stream = lib.pa_stream_new(self._ctx, self.stream_name.encode(), byref(spec), None)
        if not self._stream:
            raise PulseRecordError(f"cannot create a record stream: {self._ctx_error()}")
        frag = self.block * self.frame_bytes
        attr = _BufferAttr(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, frag)
        flags = PA_STREAM_INTERPOLATE_TIMING | PA_STREAM_AUTO_TIMING_UPDATE | PA_STREAM_ADJUST_LATENCY
        if lib.pa_stream_connect_record(self._stream, self.source.encode() if self.source else None,
                                        byref(attr), flags) < 0:
            raise PulseRecordError(f"cannot record {self.source!r}: {self._ctx_error()}")

        def stream_ready() -> bool:
            st = lib.pa_stream_get_state(self._stream)
            if st in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
                raise PulseRecordError(f"cannot record {self.source!r} from the sound server: {self._ctx_error()}")
            return st == PA_STREAM_READY

        self._wait(stream_ready, f"opening {self.source!r}")

    def _ctx_error(self) -> str:
        return _strerror(self.lib, self.lib.pa_context_errno(self._ctx)) if self._ctx else "no context"

    # -- the reader ---------------------------------------------------------------------------

    def _drain(self) -> bytes | None:
        """Dispatch what the server sent and take every recorded byte; None when the stream failed."""
        lib = self.lib
        while True:
            n = lib.pa_mainloop_iterate(self._ml, 0, None)
            if n < 0:
                return None
            if n == 0:
                break
        if lib.pa_stream_get_state(self._stream) != PA_STREAM_READY:
            return None
        chunks = []
        data, size = c_void_p(), c_size_t()
        while True:
            if lib.pa_stream_peek(self._stream, byref(data), byref(size)) < 0:
                return None
            if size.value == 0:
                break
            if data.value is None:          # a hole: data lost
                self.overflows += 1
                chunks.clear()              # what came before it is not contiguous with what follows
            else:
                chunks.append(ctypes.string_at(data.value, size.value))
            lib.pa_stream_drop(self._stream)
        return b"".join(chunks)

    def _latency_ns(self) -> int:
        """Age (ns) of the next sample not yet read; negative for a monitor. 0 when unknown."""
        usec, negative = c_uint64(), c_int()
        if self.lib.pa_stream_get_latency(self._stream, byref(usec), byref(negative)) < 0:
            return 0
        return -int(usec.value) * 1000 if negative.value else int(usec.value) * 1000

    def read(self) -> tuple[np.ndarray, int, int] | None:
        """Everything recorded since the last read, in whole sample frames: (samples: int16,
        shape (n,) for one channel, (n, channels) else; station time (ns) of the first sample;
        arrival time (ns): when it was read), or None when nothing came. Raises
        PulseRecordError when the stream has failed (or was closed)."""
        raw = self._drain() if self._stream else None
        if raw is None:
            raise PulseRecordError(f"sound server stream on {self.source!r} ended: {self._ctx_error()}")
        arrival = time.monotonic_ns()
        end_ns = arrival - self._latency_ns()   # time of the sample after the last one read
        raw = self._pending + raw
        usable = len(raw) // self.frame_bytes * self.frame_bytes
        raw, self._pending = raw[:usable], raw[usable:]
        if not raw:
            return None
        data = np.frombuffer(raw, dtype="<i2")
        if self.channels > 1:
            data = data.reshape(-1, self.channels)
        return data, end_ns - len(raw) // self.frame_bytes * 1_000_000_000 // self.rate, arrival

    def _free(self) -> None:
        lib = self.lib
        if self._stream:
            lib.pa_stream_disconnect(self._stream)
            lib.pa_stream_unref(self._stream)
            self._stream = None
        if self._ctx:
            lib.pa_context_disconnect(self._ctx)
            lib.pa_context_unref(self._ctx)
            self._ctx = None
        if self._ml:
            lib.pa_mainloop_free(self._ml)
            self._ml = None

    def close(self) -> None:
        """Disconnect and free the stream (it never blocks in the server). Safe to call twice."""
        self._free()
