"""Mosquitto's password file format, written here so no broker tool is needed.

Mosquitto 2 stores each user as ``user:$7$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA512
over the UTF-8 password with a 12-byte random salt, salt and 64-byte hash in standard
base64 with padding (``mosquitto_passwd``'s default, 101 iterations; the broker reads the
iteration count from the line). We compute it with :func:`hashlib.pbkdf2_hmac` instead of
calling ``mosquitto_passwd`` because the configuration is often made on another machine
than the broker's, and because ``mosquitto_passwd -b`` would put the password on a command
line that other users of the machine can read (``ps``). A test checks the result against
the installed ``mosquitto_passwd`` and a real broker.

The iteration count stays at Mosquitto's default: it slows every CONNECT on the broker,
and the passwords :func:`new_password` makes are 256 random bits, which no amount of
stretching makes harder or easier to guess.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["ITERATIONS", "hash_password", "new_password", "password_line", "verify_password"]

ITERATIONS: Final = 101
"""``mosquitto_passwd``'s default iteration count for ``$7$``."""
_SALT_BYTES: Final = 12


def new_password() -> str:
    """A fresh random password: 32 bytes, URL-safe base64 (no ``:`` or line breaks)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$…`` hash Mosquitto checks ``password`` against."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    encode = base64.b64encode
    return f"$7${iterations}${encode(salt).decode()}${encode(digest).decode()}"


def password_line(user: str, password: str) -> str:
    """One line of a Mosquitto password file (without the line break).

    Raises:
        ValueError: the user name cannot be written in the file (``:``, a line break, empty).
    """
    if not user or ":" in user or any(c in user for c in "\r\n\x00"):
        raise ValueError(f"user: a Mosquitto user name has no ':' or line break, got {user!r}")
    return f"{user}:{hash_password(password)}"


def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (as Mosquitto would decide).

    Raises:
        ValueError: ``hashed`` is not a ``$7$`` hash.
    """
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError("hash: not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except binascii.Error as err:
        raise ValueError(f"hash: bad base64 ({err})") from err
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, want)
