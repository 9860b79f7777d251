"""Where a secret comes from: an environment variable or a file, never the config file.

Every password, token and key password of the configuration is given by one of two keys
(``password_env`` / ``password_file`` and the like), so a secret can come from a systemd
credential, a container secret or a root-only file, and the configuration can be
committed. This one function reads them, so every secret fails the same way: the error
names who needs it and the variable or file, and never the secret itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from shopfloor.errors import ConfigError

__all__ = ["read_secret"]


def read_secret(*, env: str | None, file: Path | None, what: str) -> str | None:
    """The secret in environment variable ``env``, else the first line of ``file``.

    Args:
        env: the name of the environment variable holding it.
        file: the file holding it (its first line; the line end is not part of it).
        what: who needs it, for the error (``historian``, ``connector line-1 broker``).

    Returns:
        The secret, or None when neither is given.

    Raises:
        ConfigError: the variable is unset, or the file cannot be read or is not text.
    """
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return value
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise ConfigError(f"{what}: cannot read {file}: {reason}") from err
        return text.splitlines()[0] if text else ""
    return None
