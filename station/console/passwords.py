"""Password hashes for the console's assessor logins: scrypt from the standard library.

Format (one string, safe in TOML): ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``, with a
16-byte random salt and a 32-byte derived key. ``hash_password`` takes about 50-100 ms (n = 2^15,
r = 8, p = 1: 32 MiB of memory), which is what makes guessing slow; ``verify`` compares in
constant time. A string that is not such a hash never verifies (``verify`` returns False;
``check_format`` raises ValueError with the reason, for configuration checks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

LOG2_N, R, P = 15, 8, 1
MAXMEM = 64 * 1024 * 1024


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p,
                          maxmem=MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (not empty: ValueError)."""
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16)
    key = _derive(password, salt, LOG2_N, R, P)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${LOG2_N}${R}${P}${b64(salt)}${b64(key)}"


def check_format(stored: str) -> tuple[bytes, bytes, int, int, int]:
    """(salt, key, log2_n, r, p) of a stored hash; ValueError when it is not one."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt password hash (make one with `station console --hash-password`)")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("malformed scrypt password hash") from None
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8 and len(key) == 32):
        raise ValueError("scrypt password hash with out-of-range parameters")
    return salt, key, log2_n, r, p


def verify(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password or a bad hash."""
    try:
        salt, key, log2_n, r, p = check_format(stored)
    except ValueError:
        return False
    if not isinstance(password, str) or not password:
        return False
    return hmac.compare_digest(_derive(password, salt, log2_n, r, p), key)
