"""Journal anchors kept where the candidate is not: chain heads on the consoles, signed at exam end.

A journal's hash chains (``docs/journal.md``) detect an edit only if someone holds an earlier
head: a journal cut to a prefix, or rewritten and re-chained, verifies as intact on its own. So:

- every ``health`` message (1 Hz) carries ``chain_heads`` = {"blocks": n, "blocks_chain": hex,
  "last_seq": s, "messages_chain": hex}, the journal's committed heads; consoles store every
  message, so each console holds a dense trail of heads of every session it followed;
- at exam end the station journals and publishes an ``anchor`` message: the final heads signed
  with Ed25519 (``sign_anchor``); each web console countersigns it (``countersign``) and keeps the
  pair in its store (table ``anchors``);
- ``check(journal_reader, anchors)`` compares a journal with such heads: a journal with fewer
  blocks or messages than an anchor (truncated), or whose chain value at an anchored position
  differs (rewritten, even when re-chained consistently), fails; a session the anchors know and
  the station no longer has is reported by ``station sessions verify --against`` (deleted).

Signing keys: an Ed25519 key derived from the party's CURVE secret key
(``sha256("station-anchor-sign\\0" + secret)`` as the seed), so no new key file is needed; the
public signing key travels inside the anchor. Anchors and countersignatures are canonical JSON
(sorted keys, no spaces) of the fields below; signatures are hex.

Anchor sources (``load``): a console store (SQLite file: health and anchor messages, and the
countersigned anchors) or an exported anchor file (JSON, ``export``). Failure modes: an
unreadable source raises ``UserError`` with the path; a bad signature is a problem in ``check``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import zmq.utils.z85
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from station.errors import UserError
from station.recent_log import recent_rows

ANCHOR_FORMAT = 1
EXPORT_FORMAT = 1
HEAD_FIELDS = ("blocks", "blocks_chain", "last_seq", "messages_chain")


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signing_key(curve_secret_z85: bytes | None) -> Ed25519PrivateKey | None:
    """The Ed25519 key derived from a CURVE secret key (Z85), or None without one."""
    if not curve_secret_z85:
        return None
    raw = zmq.utils.z85.decode(curve_secret_z85)
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"station-anchor-sign\0" + raw).digest())


def _pub_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign_anchor(key: Ed25519PrivateKey | None, station: str, session: str, heads: dict, t_ns: int,
                wall_ns: int) -> dict:
    """The ``anchor`` message body: final heads of a session, signed (unsigned without a key:
    ``signature`` = "")."""
    body = {"format": ANCHOR_FORMAT, "station": station, "session": session, "t_ns": int(t_ns),
            "wall_ns": int(wall_ns), **{k: heads[k] for k in HEAD_FIELDS},
            "sign_key": _pub_hex(key) if key else ""}
    body["signature"] = key.sign(canonical(body)).hex() if key else ""
    return body


def _verify(pub_hex: str, sig_hex: str, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)).verify(bytes.fromhex(sig_hex), data)
        return True
    except (InvalidSignature, ValueError):
        return False


def anchor_signature_ok(anchor: dict) -> bool:
    """True when the station's signature over the anchor verifies (False when unsigned)."""
    if not anchor.get("signature") or not anchor.get("sign_key"):
        return False
    body = {k: v for k, v in anchor.items() if k != "signature"}
    return _verify(anchor["sign_key"], anchor["signature"], canonical(body))


def countersign(key: Ed25519PrivateKey | None, anchor: dict, console: str, wall_ns: int) -> dict:
    """A console's countersignature over the station's signed anchor: {anchor, console,
    wall_ns, station_signature_ok, console_key, console_signature}."""
    rec = {"anchor": anchor, "console": console, "wall_ns": int(wall_ns),
           "station_signature_ok": anchor_signature_ok(anchor), "console_key": _pub_hex(key) if key else ""}
    rec["console_signature"] = key.sign(canonical(rec)).hex() if key else ""
    return rec


def countersignature_ok(rec: dict) -> bool:
    if not rec.get("console_signature") or not rec.get("console_key"):
        return False
    body = {k: v for k, v in rec.items() if k != "console_signature"}
    return _verify(rec["console_key"], rec["console_signature"], canonical(body))


# ------------------------------------------------------------------------------ sources

def load(path: Path, station: str | None = None) -> dict[str, dict]:
    """Anchors by session from a console store (SQLite) or an exported anchor file (JSON):
    {session: {"station", "heads": [heads...], "final": [countersigned records...]}}, only of
    ``station`` when given. UserError when the file cannot be read."""
    path = Path(path).expanduser()
    try:
        head = path.read_bytes()[:16]
    except OSError as e:
        raise UserError(f"{path}: cannot read the anchors: {e.strerror}") from None
    if head.startswith(b"SQLite format 3"):
        out = _from_store(path)
    else:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a console store nor an anchor file ({e})") from None
        if not isinstance(d, dict) or d.get("type") != "station-anchors" or not isinstance(d.get("sessions"), dict):
            raise UserError(f"{path}: not an anchor file (written by `station console anchors --out`)")
        out = d["sessions"]
    if station is not None:
        out = {s: v for s, v in out.items() if v.get("station") == station}
    return out


def _from_store(path: Path) -> dict[str, dict]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise UserError(f"{path}: cannot open the console store: {e}") from None
    out: dict[str, dict] = {}
    recent = [r for r in recent_rows(path) if r[3] in ("health", "anchor")]  # read before the database
    try:
        rows = db.execute("SELECT station, session, kind, body, seq FROM messages "
                          "WHERE kind IN ('health', 'anchor')").fetchall()
        rows = sorted({(r[0], r[1], r[4]): r for r in rows + [(r[0], r[1], r[3], r[7], r[2]) for r in recent]}
                      .values(), key=lambda r: (r[0], r[1], r[4]))
        finals = []
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'anchors'").fetchone():
            finals = db.execute("SELECT station, session, record FROM anchors ORDER BY rowid").fetchall()
    except sqlite3.Error as e:
        raise UserError(f"{path}: not a console store ({e})") from None
    finally:
        db.close()
    for station, session, kind, body, _seq in rows:
        try:
            d = msgpack.unpackb(body, raw=False)
        except Exception:
            continue
        add_message(out.setdefault(session, {"station": station, "heads": [], "final": []}), kind, d)
    for station, session, record in finals:
        try:
            rec = json.loads(record)
        except ValueError:
            continue
        e = out.setdefault(session, {"station": station, "heads": [], "final": []})
        e["final"] = [f for f in e["final"] if f["anchor"] != rec.get("anchor")] + [rec]
    return out


def add_message(entry: dict, kind: str, d) -> None:
    """Fold one stored message (decoded body) into a session's anchor entry: a health beat's
    chain heads, or an exam-end anchor (not yet countersigned)."""
    if not isinstance(d, dict):
        return
    heads = d.get("chain_heads") if kind == "health" else d if kind == "anchor" else None
    if isinstance(heads, dict) and _heads_ok(heads):
        entry["heads"].append({k: heads[k] for k in HEAD_FIELDS})
    if kind == "anchor" and not any(f["anchor"] == d for f in entry["final"]):
        entry["final"].append({"anchor": d, "console": "", "console_signature": ""})


def _heads_ok(h: dict) -> bool:
    return (isinstance(h.get("blocks"), int) and isinstance(h.get("last_seq"), int)
            and isinstance(h.get("blocks_chain"), str) and isinstance(h.get("messages_chain"), str))


def export(path: Path, sessions: dict[str, dict]) -> None:
    """Write an anchor file (JSON) with the given ``load``-shaped sessions."""
    Path(path).write_text(json.dumps({"type": "station-anchors", "format": EXPORT_FORMAT, "sessions": sessions},
                                     indent=1, sort_keys=True) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------ checking

def check(reader, entry: dict) -> list[str]:
    """Problems of a journal against one session's anchors (``load`` entry); [] when it agrees.

    ``reader`` needs ``block_chain_at(idx) -> hex | None``, ``message_chain_at(seq) -> hex | None``,
    ``block_count()`` and ``last_seq()`` (``station.recorder.journal.Journal`` has them)."""
    problems: list[str] = []
    heads = list(entry.get("heads") or [])
    for f in entry.get("final") or []:
        a = f.get("anchor") or {}
        if _heads_ok(a):
            heads.append({k: a[k] for k in HEAD_FIELDS})
        if a.get("signature") and not anchor_signature_ok(a):
            problems.append("the exam-end anchor's station signature does not verify")
        if f.get("console_signature") and not countersignature_ok(f):
            problems.append(f"console {f.get('console', '?')}: countersignature does not verify")
    if not heads:
        return problems
    nb, ns = reader.block_count(), reader.last_seq()
    top_b = max(heads, key=lambda h: h["blocks"])
    top_m = max(heads, key=lambda h: h["last_seq"])
    if nb < top_b["blocks"]:
        problems.append(f"journal has {nb} blocks, the consoles' anchor {top_b['blocks']}: truncated")
    if ns < top_m["last_seq"]:
        problems.append(f"journal ends at message {ns}, the consoles' anchor at {top_m['last_seq']}: truncated")
    bad_b = bad_m = 0
    seen: set[tuple] = set()
    for h in heads:
        key = (h["blocks"], h["blocks_chain"], h["last_seq"], h["messages_chain"])
        if key in seen:
            continue
        seen.add(key)
        if 0 < h["blocks"] <= nb and reader.block_chain_at(h["blocks"] - 1) != h["blocks_chain"]:
            bad_b += 1
        if 0 < h["last_seq"] <= ns and reader.message_chain_at(h["last_seq"]) != h["messages_chain"]:
            bad_m += 1
    if bad_b:
        problems.append(f"{bad_b} anchored block chain value(s) differ: blocks were rewritten")
    if bad_m:
        problems.append(f"{bad_m} anchored message chain value(s) differ: messages were rewritten")
    return problems


def summary(entry: dict) -> dict[str, Any]:
    """What a report shows of a session's anchors: the latest heads, the exam-end anchor and who
    countersigned it."""
    heads = entry.get("heads") or []
    finals = entry.get("final") or []
    last = max(heads, key=lambda h: (h["blocks"], h["last_seq"])) if heads else None
    out: dict[str, Any] = {"heads_received": len(heads), "latest": last, "final": None}
    if finals:
        a = finals[-1]["anchor"]
        out["final"] = {**{k: a.get(k) for k in (*HEAD_FIELDS, "wall_ns", "sign_key")},
                        "station_signature_ok": anchor_signature_ok(a),
                        "countersigned_by": [f.get("console") for f in finals if countersignature_ok(f)]}
    return out
