"""The server's secret key: CSRF tokens are derived from it with HMAC.

It comes from the variable ``SHOPFLOOR_SECRET_KEY``, else ``[security] secret_key_file``,
else ``secret.key`` in the data folder, which is generated (mode 0600) on first start.
A key that is empty, shorter than 32 characters or the example from the docs is refused:
the server does not start with a key an attacker can guess.

Scaled out (``historian.shared = true``), every API server must derive the same CSRF
token from a session, or a browser's change sent to another server than the one that
logged it in is refused (403), at random, as the load balancer deals the requests. So a
shared-mode server does not generate a key of its own: it refuses to start unless the key
is given (``SHOPFLOOR_SECRET_KEY`` or ``[security] secret_key_file``, the same on every
server). Refusing rather than warning: a warning scrolls by, while the failures it
announces look like an unrelated bug in the browser, and the fix is one line.
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


def load_secret_key(
    data_dir: Path, configured: Path | None = None, *, shared: bool = False
) -> bytes:
    """The secret key (blocking file I/O: call it off the event loop).

    Args:
        data_dir: the server's data folder, where the default key file lives.
        configured: ``[security] secret_key_file``, if set (it must exist).
        shared: several API servers share the sessions (``historian.shared``): the key
            must be given, not generated per server.

    Raises:
        ConfigError: the key is missing, unreadable, empty, short or the example, or
            not given to a shared-mode server.
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
    if shared:
        raise ConfigError(
            "security.secret_key_file: with historian.shared = true every API server must "
            "use the same secret key (a browser's CSRF token made by one is checked by "
            f"another): set [security] secret_key_file, or {KEY_ENV}, to the same key on "
            "every server; generate one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`"
        )
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
