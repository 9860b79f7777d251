"""Password storage and policy: Argon2id hashes only, and no common passwords.

The hash is argon2-cffi's defaults (Argon2id, RFC 9106 low-memory profile); a hash made
with older parameters is re-made at the next successful login (:func:`needs_rehash`).
Common passwords are refused by looking them up in the 30 000 most frequent leaked
passwords that ship with the ``zxcvbn`` package, so no list is kept in this repository.
"""

from __future__ import annotations

from functools import cache

from argon2 import Parameters, PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shopfloor.errors import ShopfloorError

__all__ = [
    "PasswordRejected",
    "check_password",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "use_parameters",
    "verify_password",
]

_hasher = PasswordHasher()
_dummy: list[str] = []
MAX_PASSWORD_LENGTH = 1024
"""Longer passwords are refused: hashing megabytes is a cheap denial of service."""


class PasswordRejected(ShopfloorError):  # noqa: N818 - a refusal, named as one
    """A new password does not meet the policy (too short, too common, too long)."""


@cache
def _common() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

    return frozenset(FREQUENCY_LISTS["passwords"])


MIN_NAME_IN_PASSWORD = 4
"""The shortest user name a password may not contain."""


def check_password(password: str, *, min_length: int, user: str = "") -> None:
    """Refuse a password a user may not choose.

    Raises:
        PasswordRejected: it is shorter than ``min_length``, longer than 1024, among the
            common leaked passwords, or the user's name.
    """
    if len(password) < min_length:
        raise PasswordRejected(f"password: at least {min_length} characters are needed")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"password: at most {MAX_PASSWORD_LENGTH} characters")
    lowered = password.lower()
    # a name of two or three letters ("li") turns up by chance in a random passphrase:
    # refusing it there would refuse good passwords, not guessable ones
    named = len(user) >= MIN_NAME_IN_PASSWORD and user.lower() in lowered
    if lowered in _common() or named:
        raise PasswordRejected(
            "password: too common (it is in the lists of leaked passwords, or holds the "
            "user's name): choose another"
        )


def use_parameters(parameters: Parameters) -> None:
    """Hash with other Argon2 parameters from now on, in this process. For test suites
    only (``argon2.profiles.CHEAPEST``), where hundreds of hashes at the production cost
    would take minutes; a server never calls it."""
    global _hasher  # noqa: PLW0603 - one hasher per process, replaced whole
    _hasher = PasswordHasher.from_parameters(parameters)
    _dummy.clear()


def dummy_hash() -> str:
    """A hash of a random password, checked against when a user does not exist, so that
    the answer takes as long as for a user that does (no user enumeration by timing)."""
    if not _dummy:
        import secrets

        _dummy.append(hash_password(secrets.token_urlsafe(16)))
    return _dummy[0]


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (a PHC string with its salt and parameters)."""
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash (False for a damaged hash)."""
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True
