"""The console store's recent log (``console.sqlite-recent``): its record format and its reader.

The console's I/O thread appends the messages it stores to this file, one ``write()`` per
wake-up, and moves them into the SQLite database every 50 ms (``station.console.store``). Shared
(not in ``station.console``) because verification reads console stores too
(``station.anchors``: ``station sessions verify --anchors``, ``station report --against``).

Record: ``<u32 payload length><u32 CRC-32 of the payload>`` then the payload, a msgpack array
``[station, session, seq, kind, t_ns, wall_ns, recv_wall_ns, body]`` (a ``messages`` row).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import msgpack

from station import protocol

RECENT_SUFFIX = "-recent"
_RECORD_HEAD = struct.Struct("<II")   # payload length, CRC-32 of the payload
Row = tuple   # (station, session, seq, kind, t_ns, wall_ns, recv_wall_ns, body): a messages row


def encode_records(rows: list[Row]) -> bytes:
    """The records of rows, concatenated (what one store write appends)."""
    out = []
    for r in rows:
        payload = protocol.packb(list(r))
        out.append(_RECORD_HEAD.pack(len(payload), zlib.crc32(payload)) + payload)
    return b"".join(out)


def parse_records(data: bytes) -> list[Row]:
    """The rows of a recent log, up to its end or to the first record that is incomplete or fails
    its CRC (a write cut short, or a read that met the writer's truncation: what follows it is in
    the database or newer than the read)."""
    rows, pos, n = [], 0, len(data)
    while pos + _RECORD_HEAD.size <= n:
        size, crc = _RECORD_HEAD.unpack_from(data, pos)
        payload = data[pos + _RECORD_HEAD.size:pos + _RECORD_HEAD.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            break
        try:
            r = msgpack.unpackb(payload, raw=False)
        except Exception:    # (passed its CRC: written by other software)
            break
        if not isinstance(r, list) or len(r) != 8:
            break
        rows.append(tuple(r))
        pos += _RECORD_HEAD.size + size
    return rows


def recent_path(path: Path) -> Path:
    return Path(str(path) + RECENT_SUFFIX)


def recent_rows(path: Path) -> list[Row]:
    """The messages of a store's recent log, not yet moved into its database (none when the file
    is missing). Read it *before* querying the database: the writer commits the move before it
    empties the log, so a message is always in one of the two for a reader in that order."""
    try:
        return parse_records(recent_path(path).read_bytes())
    except FileNotFoundError:
        return []
