"""The server's secret key: CSRF tokens are derived from it with HMAC.

It comes from the variable ``SHOPFLOOR_SECRET_KEY``, else ``[security] secret_key_file``,
else ``secret.key`` in the data folder, which is generated (mode 0600) on first start.
A key that is empty, shorter than 32 characters or the example from the docs is refused:
the server does not start with a key an attacker can guess.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shopfloor.errors import ConfigError

__all__ = ["EXAMPLE_KEYS", "KEY_ENV", "MIN_KEY_LENGTH", "load_secret_key"]

KEY_ENV = "SHOPFLOOR_SECRET_KEY"
MIN_KEY_LENGTH = 32
DEFAULT_KEY_FILE = "secret.key"
EXAMPLE_KEYS = frozenset(
    {
        "change-me-change-me-change-me-change-me",
        "0123456789abcdef0123456789abcdef",
    }
)
"""Keys printed in the docs and examples: never accepted."""


def _checked(key: str, source: str) -> bytes:
    key = key.strip()
    if not key:
        raise ConfigError(f"{source}: the secret key is empty")
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{source}: the secret key is too short ({len(key)} characters, at least "
            f"{MIN_KEY_LENGTH}): generate one, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`"
        )
    if key in EXAMPLE_KEYS:
        raise ConfigError(f"{source}: the secret key is the example from the docs: generate one")
    return key.encode()


def load_secret_key(data_dir: Path, configured: Path | None = None) -> bytes:
    """The secret key (blocking file I/O: call it off the event loop).

    Args:
        data_dir: the server's data folder, where the default key file lives.
        configured: ``[security] secret_key_file``, if set (it must exist).

    Raises:
        ConfigError: the key is missing, unreadable, empty, short or the example.
    """
    from_env = os.environ.get(KEY_ENV)
    if from_env is not None:
        return _checked(from_env, KEY_ENV)
    if configured is not None:
        try:
            return _checked(configured.read_text(), f"security.secret_key_file ({configured})")
        except OSError as err:
            raise ConfigError(
                f"security.secret_key_file: cannot read {configured}: {err.strerror}"
            ) from err
    path = data_dir / DEFAULT_KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return _checked(path.read_text(), str(path))
        except OSError as err:
            raise ConfigError(f"cannot read the secret key {path}: {err.strerror}") from err
    except OSError as err:
        raise ConfigError(f"cannot create the secret key {path}: {err.strerror}") from err
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key.encode()
