"""The event model: one typed event per observation, all on the station clock.

Every event has ``t_ns``: integer nanoseconds of the station's monotonic clock (``station.clock``).
Events of one stream travel and are stored **columnar** in a ``Batch``: what the recorder received
in one ingestion cycle, grouped by stream. The same ``Batch`` codec is used by the capture ->
recorder hand-over, the journal and replay, so the engine sees byte-for-byte the same input live
and offline.

Privacy: ``KeyEvent.char`` is filled only while a ``typing_task`` window has focus (the input source
decides); no event carries audio samples, only a level and VAD decisions per frame.

Streams (name -> event class):

============  ==============  =========================================================
stream        class           one record is
============  ==============  =========================================================
speech        SpeechFrame     one VAD frame (10/20/30 ms) of one channel
key           KeyEvent        a key press or release (class only; char in typing tasks)
mouse         MouseBin        mouse moves aggregated over a 10 ms bin
click         MouseClick      a button press or release
scroll        MouseScroll     a wheel step
focus         FocusChange     the active window changed (or its title)
contact       ContactMarker   explicit start/end of a contact (assessor command)
mark          AssessorMark    an assessor's observation, verdict, counter or note
exam          ExamControl     candidate assignment, exam start and end
health        SourceHealth    a source's state changed (ok / degraded / lost)
integrity     IntegrityEvent  the recorder refused or dropped something (see INTEGRITY_KINDS)
device        DeviceEvent     an input or audio device appeared, changed or went away (identity)
============  ==============  =========================================================
"""

from __future__ import annotations

import dataclasses
import operator
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Iterable, Iterator

import msgpack
import numpy as np

BATCH_FORMAT = 1  # bump on an incompatible change of the encoded form
DEFAULT_LAG_NS = 1_000_000_000  # how late an event may arrive after its own time (audio, mouse bins)


class FormatError(ValueError):
    """Encoded data that cannot be decoded: corrupt, truncated, or from an unknown format."""


class NewerFormatError(FormatError):
    """Encoded by a newer version of the station software than this one."""


class Channel(IntEnum):
    AGENT = 0      # headset microphone
    CUSTOMER = 1   # far-end signal (earpiece / sink monitor)


class KeyClass(IntEnum):
    PRINTABLE = 1
    BACKSPACE = 2
    DELETE = 3
    ENTER = 4
    NAVIGATION = 5
    MODIFIER = 6
    OTHER = 7


class FrameFlag(IntEnum):
    """Why a frame's final ``speech`` decision differs from webrtcvad's raw ``vad`` (bit flags)."""

    GATED = 1       # below the energy gate (noise floor + margin)
    IMPULSIVE = 2   # high crest factor (click-like)
    CLICK = 4       # impulsive and within the click window of a key press: rejected
    BLEED = 8       # explained by the customer signal leaking from the earpiece: rejected
    DISTANT = 16    # far below the headset wearer's own speech level: another person's voice, rejected
    NOISE = 32      # not far enough above the noise floor tracked over the last seconds: rejected


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    """One VAD frame of one channel.

    t_ns: frame start, station clock, already corrected by the headset's input latency.
    dur_ns: frame length (10, 20 or 30 ms in ns).
    level_dbfs_x10: frame RMS level in tenths of dBFS (-1270 .. 0), an integer so it stores exactly.
    vad: webrtcvad's raw decision. speech: the final decision after gate, click and bleed checks.
    flags: FrameFlag bits.
    """

    STREAM: ClassVar[str] = "speech"
    t_ns: int
    channel: int
    dur_ns: int
    level_dbfs_x10: int
    vad: bool
    speech: bool
    flags: int = 0


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A key press (down=True) or release. key_class: KeyClass. repeat: auto-repeat press.
    injected: NOT from an input device with evidence (XTEST, uinput, a device off the allow-list
    ``input.allow``, a display-server key without its kernel twin): counted and alerted, in no
    figure. char: the character, only inside typing_task windows, else ""."""

    STREAM: ClassVar[str] = "key"
    t_ns: int
    key_class: int
    down: bool
    repeat: bool = False
    injected: bool = False
    char: str = ""


@dataclass(frozen=True, slots=True)
class MouseBin:
    """Mouse moves in one bin starting at t_ns: count of motion events, path length in pixels
    (rounded), and how many of the moves were injected (not from a device with evidence, see
    ``KeyEvent``); the bin counts as activity only for ``count - injected > 0``."""

    STREAM: ClassVar[str] = "mouse"
    t_ns: int
    count: int
    distance_px: int
    injected: int = 0


@dataclass(frozen=True, slots=True)
class MouseClick:
    """A mouse button press/release (X button number). injected: see ``KeyEvent``."""

    STREAM: ClassVar[str] = "click"
    t_ns: int
    button: int
    down: bool
    injected: bool = False


@dataclass(frozen=True, slots=True)
class MouseScroll:
    """Scroll steps (+dy = up, +dx = right). injected: see ``KeyEvent``."""

    STREAM: ClassVar[str] = "scroll"
    t_ns: int
    dx: int
    dy: int
    injected: bool = False


@dataclass(frozen=True, slots=True)
class FocusChange:
    """The active window changed (or its title did). title is already hashed or dropped as the
    privacy config says. category: one of config_schema.CATEGORIES."""

    STREAM: ClassVar[str] = "focus"
    t_ns: int
    window_id: int
    wm_class: str
    title: str
    pid: int
    process: str
    category: str


@dataclass(frozen=True, slots=True)
class ContactMarker:
    """Explicit contact boundary. action: "start" | "end"; kind: "phone" | "chat" | "email".
    contact_ref: identifies the contact across its start and end; assessor_id: who set it;
    key_fp: fingerprint of the console key that sent it (``keys.fingerprint``; "" = none)."""

    STREAM: ClassVar[str] = "contact"
    t_ns: int
    action: str
    kind: str
    contact_ref: str = ""
    assessor_id: str = ""
    key_fp: str = ""


@dataclass(frozen=True, slots=True)
class AssessorMark:
    """An assessor's observation. kind: "observed" | "not_observed" | "counter" | "note".
    competence: an id of STANDARD.md (S1..S4, D1..D7, C1..C8). mark_id: unique, from the console.
    assessor_id/assessor_name: the assessor the sending key is bound to on the station; key_fp:
    that key's fingerprint ("" = no key: plaintext demo, or an old journal)."""

    STREAM: ClassVar[str] = "mark"
    t_ns: int
    assessor_id: str
    assessor_name: str
    competence: str
    kind: str
    text: str = ""
    mark_id: str = ""
    key_fp: str = ""


@dataclass(frozen=True, slots=True)
class ExamControl:
    """action: "assign" (candidate to this station) | "start" | "end" of the exam."""

    STREAM: ClassVar[str] = "exam"
    t_ns: int
    action: str
    candidate_id: str = ""
    candidate_name: str = ""
    assessor_id: str = ""
    key_fp: str = ""


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A source's state changed. state: "ok" | "degraded" | "lost". While a source is "lost" its
    data is unknown (not silence, not inactivity). detail: a short operator-readable reason."""

    STREAM: ClassVar[str] = "health"
    t_ns: int
    source: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class IntegrityEvent:
    """Something the recorder refused, dropped or found wrong about what reached it: journaled
    (so that the report lists it and a replay alerts the same), counted and alerted to consoles.

    kind: one of ``INTEGRITY_KINDS``. detail: operator-readable (who, what, how many).
    count: how many events or connections it stands for (>= 1)."""

    STREAM: ClassVar[str] = "integrity"
    t_ns: int
    kind: str
    detail: str = ""
    count: int = 1


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """An input or audio device the capture reads from appeared, changed or went away, with its
    hardware identity, and whether what comes from it counts as evidence.

    kind: "input" (keyboard, pointer) | "audio" (a sound-server source the capture records).
    device: the capture's id for it, the one its other events and alerts name (an evdev node such as
    "/dev/input/event3", "xi2:12" for an XInput 2 slave device, a sound-server source name).
    state: "present" (in the set at start or plugged in) | "removed" | "changed" (same id, new
    identity or role, e.g. the recorded stream moved to another source).
    name, bus, vendor, product, serial, phys: identity as the kernel or sound server reports it
    ("" = unknown; vendor/product as 4 hex digits). virtual: no hardware behind it (uinput,
    /sys/devices/virtual, XTEST, a null sink's monitor). evidence: False = input or audio from it is
    counted and shown but never counts toward any figure (not on the allow-list, not the calibrated
    headset). detail: an operator-readable reason for ``evidence``.
    role: what the device is to the capture, one of ``DEVICE_ROLES`` (set by the capture, which
    knows; "?" when decoded from a journal written before the field existed)."""

    STREAM: ClassVar[str] = "device"
    t_ns: int
    kind: str
    device: str
    state: str
    name: str = ""
    bus: str = ""
    vendor: str = ""
    product: str = ""
    serial: str = ""
    phys: str = ""
    virtual: bool = False
    evidence: bool = True
    detail: str = ""
    role: str = ""


DEVICE_STATES = ("present", "removed", "changed")
DEVICE_ROLES = {
    "xtest": "input: the X server's own XTEST device (every X session has one pair per master; "
             "what it sends is injected unless input.allow names it)",
    "keyboard": "input: a device that can send keys (a combo with a pointer included)",
    "pointer": "input: a pointer (mouse, touchpad, tablet) that is not a keyboard",
    "agent": "audio: the source of the microphone channel",
    "customer": "audio: the source of the customer-signal channel",
    "agent+customer": "audio: one source carrying both channels",
    "": "not given: an audio source carrying no channel",
    "?": "unknown: decoded from a journal written before roles existed (the engine then applies "
         "that software's rule: an xi2 device named XTEST is the X server's own)",
}
ROLE_BEFORE_ROLES = "?"


INTEGRITY_KINDS = {
    "peer_refused": "a process other than the capture account tried the hand-over socket",
    "second_link": "a second capture connection while one was live",
    "stream_refused": "the capture link carried a stream only consoles may send (exam, marks, contacts)",
    "future_events": "events stamped later than the recorder's clock allows",
    "past_events": "events stamped long before what the capture had declared delivered (a backfill): dropped",
    "rate_exceeded": "more events than the hardware can produce",
    "oversized_frame": "a hand-over frame too large on the wire or when decompressed",
    "malformed_frame": "a hand-over frame that could not be decoded",
    "software_mismatch": "the capture runs other software than the recorder",
    "software_writable": "the station's software can be changed by an account other than root",
    "scenario_refused": "a capture announcing simulated (scenario) sources, refused in exam mode",
    "simulated": "the session is fed by simulated (scenario) sources: demo or test data, not an exam",
}


EVENT_TYPES: tuple[type, ...] = (SpeechFrame, KeyEvent, MouseBin, MouseClick, MouseScroll,
                                 FocusChange, ContactMarker, AssessorMark, ExamControl, SourceHealth,
                                 IntegrityEvent, DeviceEvent)
STREAMS: dict[str, type] = {cls.STREAM: cls for cls in EVENT_TYPES}
HEALTH_STATES = ("ok", "degraded", "lost")


def _columns_of(cls: type) -> list[tuple[str, str]]:
    """(name, kind) per field; kind is "int" (int64), "bool" (uint8) or "str" (list)."""
    kinds = {"int": "int", "bool": "bool", "str": "str"}
    return [(f.name, kinds[f.type]) for f in dataclasses.fields(cls)]


COLUMNS: dict[str, list[tuple[str, str]]] = {name: _columns_of(cls) for name, cls in STREAMS.items()}
# a column added to an event later decodes as its default in batches written before it existed
DEFAULTS: dict[str, dict[str, Any]] = {
    name: {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    for name, cls in STREAMS.items()}
DEFAULTS["device"]["role"] = ROLE_BEFORE_ROLES   # not "": replays of older journals stay exact
# one tuple of an event's field values (every stream has t_ns and more, so always a tuple)
_ROW_OF = {name: operator.attrgetter(*(col for col, _ in cols)) for name, cols in COLUMNS.items()}
assert all(len(cols) >= 2 for cols in COLUMNS.values())
_BY_TIME = operator.attrgetter("t_ns")


class Batch:
    """Events of one ingestion cycle, columnar per stream.

    t_ns: when the recorder took the batch (station clock); the engine's notion of "now".
    watermark_ns: every event with t_ns < watermark_ns has been delivered by now (in this or an
        earlier batch); later-arriving older events are late. Default: t_ns - DEFAULT_LAG_NS.
    streams: stream name -> column name -> numpy array (int64 / bool) or list of str.
    Within a stream, rows keep arrival order, which sources keep in time order.
    """

    __slots__ = ("t_ns", "watermark_ns", "streams")

    def __init__(self, t_ns: int, streams: dict[str, dict[str, Any]] | None = None,
                 watermark_ns: int | None = None):
        self.t_ns = int(t_ns)
        self.watermark_ns = int(watermark_ns) if watermark_ns is not None else self.t_ns - DEFAULT_LAG_NS
        self.streams = streams or {}

    @classmethod
    def from_events(cls, t_ns: int, events: Iterable[Any], watermark_ns: int | None = None) -> "Batch":
        """Group events by stream into columns (stable sort by t_ns within a stream)."""
        grouped: dict[str, list[Any]] = {}
        for ev in events:
            grouped.setdefault(ev.STREAM, []).append(ev)
        streams = {}
        for name, evs in grouped.items():
            evs.sort(key=_BY_TIME)
            spec = COLUMNS[name]
            rows = list(map(_ROW_OF[name], evs))    # one tuple of field values per event
            cols = {}
            for (col, kind), values in zip(spec, zip(*rows)):
                if kind == "int":
                    cols[col] = np.array(values, dtype=np.int64)
                elif kind == "bool":
                    cols[col] = np.array(values, dtype=bool)
                else:
                    cols[col] = list(values)
            streams[name] = cols
        return cls(t_ns, streams, watermark_ns)

    @classmethod
    def concat(cls, batches: list["Batch"]) -> "Batch":
        """One batch holding the events of several, in order; time and watermark of the last."""
        streams: dict[str, dict[str, Any]] = {}
        for name in STREAMS:
            parts = [b.streams[name] for b in batches if name in b.streams and len(b.streams[name]["t_ns"])]
            if not parts:
                continue
            cols = {}
            for col, kind in COLUMNS[name]:
                if kind == "str":
                    cols[col] = [v for p in parts for v in p[col]]
                else:
                    cols[col] = np.concatenate([np.asarray(p[col]) for p in parts])
            streams[name] = cols
        last = batches[-1]
        return cls(last.t_ns, streams, last.watermark_ns)

    @classmethod
    def from_items(cls, t_ns: int, items: list[Any], watermark_ns: int | None = None) -> "Batch":
        """One batch of events and whole batches (``EventQueue.drain``'s items): the batches'
        rows, then the loose events', each stream stably sorted by t_ns, as ``from_events``
        would group the same events (rows with equal t_ns keep batch-then-event order)."""
        parts = [i for i in items if isinstance(i, Batch)]
        if not parts:
            return cls.from_events(t_ns, items, watermark_ns)
        loose = [i for i in items if not isinstance(i, Batch)]
        if loose:
            parts.append(cls.from_events(t_ns, loose))
        streams = cls.concat(parts).streams
        for name, cols in streams.items():
            t = cols["t_ns"]
            if len(t) > 1 and bool(np.any(t[1:] < t[:-1])):
                order = np.argsort(t, kind="stable")
                for col, kind in COLUMNS[name]:
                    cols[col] = [cols[col][i] for i in order] if kind == "str" else cols[col][order]
        return cls(t_ns, streams, watermark_ns)

    def count(self, stream: str | None = None) -> int:
        if stream is not None:
            cols = self.streams.get(stream)
            return len(cols["t_ns"]) if cols else 0
        return sum(len(c["t_ns"]) for c in self.streams.values())

    def events(self, stream: str | None = None) -> Iterator[Any]:
        """Yield dataclass events (all streams in stream order, or one stream)."""
        names = [stream] if stream is not None else list(self.streams)
        for name in names:
            cols = self.streams.get(name)
            if not cols:
                continue
            cls = STREAMS[name]
            spec = COLUMNS[name]
            n = len(cols["t_ns"])
            for i in range(n):
                kw = {}
                for col, kind in spec:
                    v = cols[col][i]
                    kw[col] = int(v) if kind == "int" else bool(v) if kind == "bool" else v
                yield cls(**kw)

    def time_range(self) -> tuple[int, int] | None:
        """(first, last) event time over all streams, or None when empty."""
        lo = hi = None
        for cols in self.streams.values():
            t = cols["t_ns"]
            if len(t):
                a, b = int(np.min(t)), int(np.max(t))
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        return None if lo is None else (lo, hi)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch) or self.t_ns != other.t_ns or self.watermark_ns != other.watermark_ns:
            return False
        mine = {k: v for k, v in self.streams.items() if len(v["t_ns"])}
        theirs = {k: v for k, v in other.streams.items() if len(v["t_ns"])}
        if mine.keys() != theirs.keys():
            return False
        for name, cols in mine.items():
            for col, kind in COLUMNS[name]:
                a, b = cols[col], theirs[name][col]
                if kind == "str":
                    if list(a) != list(b):
                        return False
                elif not np.array_equal(np.asarray(a), np.asarray(b)):
                    return False
        return True

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v['t_ns'])}" for k, v in self.streams.items())
        return f"Batch(t_ns={self.t_ns}, {counts})"


def encode_batch(batch: Batch, level: int = 6) -> bytes:
    """Serialize a batch: msgpack of columns (time delta-encoded, int64 little-endian), zlib'd."""
    streams = {}
    for name, cols in batch.streams.items():
        if name not in COLUMNS:
            raise ValueError(f"unknown stream {name!r}")
        n = len(cols["t_ns"])
        if n == 0:
            continue
        out = {}
        for col, kind in COLUMNS[name]:
            values = cols[col]
            if len(values) != n:
                raise ValueError(f"stream {name}: column {col} has {len(values)} rows, t_ns has {n}")
            if kind == "str":
                out[col] = [str(v) for v in values]
                continue
            arr = np.asarray(values, dtype=np.int64)
            if col == "t_ns":
                arr = np.diff(arr, prepend=np.int64(0))
            out[col] = arr.astype("<i8").tobytes()
        streams[name] = out
    packed = msgpack.packb({"v": BATCH_FORMAT, "t": batch.t_ns, "w": batch.watermark_ns, "s": streams}, use_bin_type=True)
    return zlib.compress(packed, level)


MAX_DECODED_BYTES = 256 * 1024 * 1024


class TooLargeError(FormatError):
    """A batch that decompresses to more bytes, or holds more rows, than the caller allows."""


def decode_batch(data: bytes, *, max_decoded_bytes: int = MAX_DECODED_BYTES, max_rows: int | None = None) -> Batch:
    """Inverse of encode_batch. Raises FormatError (or NewerFormatError) on anything malformed,
    TooLargeError when it decompresses to more than ``max_decoded_bytes`` or a stream has more
    than ``max_rows`` rows (checked before any column is built: a decompression bomb costs at most
    ``max_decoded_bytes`` of memory)."""
    try:
        d = zlib.decompressobj()
        packed = d.decompress(data, max_decoded_bytes)
        if d.unconsumed_tail:
            raise TooLargeError(f"batch decompresses to more than {max_decoded_bytes} bytes")
        obj = msgpack.unpackb(packed, raw=False, strict_map_key=True)
    except FormatError:
        raise
    except Exception as e:  # zlib.error, msgpack errors, ...
        raise FormatError(f"batch cannot be decoded: {type(e).__name__}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("v"), int):
        raise FormatError("batch has no format version")
    if obj["v"] > BATCH_FORMAT:
        raise NewerFormatError(f"batch format {obj['v']} is newer than this software ({BATCH_FORMAT})")
    if (obj["v"] != BATCH_FORMAT or not isinstance(obj.get("t"), int) or not isinstance(obj.get("s"), dict)
            or not isinstance(obj.get("w", 0), int)):
        raise FormatError("batch header malformed")
    streams = {}
    for name, cols in obj["s"].items():
        if name not in COLUMNS or not isinstance(cols, dict):
            raise FormatError(f"batch has unknown stream {name!r}")
        out: dict[str, Any] = {}
        n = None
        for col, kind in COLUMNS[name]:
            raw = cols.get(col)
            if raw is None and n is not None and col in DEFAULTS[name]:
                dflt = DEFAULTS[name][col]   # written before this column existed
                out[col] = [dflt] * n if kind == "str" else np.full(n, dflt, dtype=bool if kind == "bool" else np.int64)
                continue
            rows = len(raw) if isinstance(raw, list) else len(raw) // 8 if isinstance(raw, bytes) else 0
            if max_rows is not None and rows > max_rows:
                raise TooLargeError(f"batch stream {name} has {rows} rows (at most {max_rows} allowed)")
            if kind == "str":
                if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
                    raise FormatError(f"batch stream {name}: column {col} malformed")
                values: Any = raw
            else:
                if not isinstance(raw, bytes) or len(raw) % 8:
                    raise FormatError(f"batch stream {name}: column {col} malformed")
                arr = np.frombuffer(raw, dtype="<i8").astype(np.int64)
                if col == "t_ns":
                    arr = np.cumsum(arr, dtype=np.int64)
                values = arr.astype(bool) if kind == "bool" else arr
            if n is None:
                n = len(values)
            elif len(values) != n:
                raise FormatError(f"batch stream {name}: columns differ in length")
            out[col] = values
        streams[name] = out
    return Batch(obj["t"], streams, obj.get("w"))
