"""Which connectors may write to equipment: off unless an admin turned them on.

The switches are a small JSON file in the server's data folder (``writes.json``),
replaced atomically on each change, so a restart keeps what the admin decided. A file
that cannot be read fails closed: every connector is off and the error is logged, since
a server that refuses to start over it would leave the plant unmonitored, while writes
off is the default the admin can re-enable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from shopfloor.server.assets.editor import atomic_write

__all__ = ["WRITES_FILE", "WriteSwitches"]

logger = logging.getLogger(__name__)

WRITES_FILE = "writes.json"
"""The switches' file in ``server.data_dir``."""


class WriteSwitches:
    """The per-connector "writes enabled" switches kept in ``path``.

    Args:
        path: the JSON file (``{"enabled": {"<connector>": true}}``); created on the
            first change.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._enabled: dict[str, bool] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the file; a missing one means every connector is off (blocking: at start)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._enabled = {}
            return
        except OSError as err:
            logger.error("%s cannot be read (%s): writes to equipment stay off", self.path, err)
            self._enabled = {}
            return
        try:
            data = json.loads(text)
            enabled = data["enabled"]
            if not isinstance(enabled, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in enabled.items()
            ):
                raise TypeError("`enabled` must map connector names to true or false")
        except (ValueError, KeyError, TypeError) as err:
            logger.error("%s is damaged (%s): writes to equipment stay off", self.path, err)
            self._enabled = {}
            return
        self._enabled = dict(enabled)

    def enabled(self, connector: str) -> bool:
        """Whether writes through ``connector`` are on."""
        return self._enabled.get(connector, False)

    async def refresh(self) -> None:
        """Read the switches again where another process may change them (the file is
        this server's own: nothing to do; :class:`~.pg_switches.PgWriteSwitches` reads)."""

    def close(self) -> None:
        """Let go of the storage (the file: nothing to do)."""

    async def set(self, connector: str, enabled: bool) -> bool:
        """Turn writes through ``connector`` on or off, durably; what it was before.

        Raises:
            OSError: the file cannot be written (the switch is unchanged).
        """
        async with self._lock:
            before = self.enabled(connector)
            after = {**self._enabled, connector: enabled}
            text = json.dumps({"enabled": dict(sorted(after.items()))}, indent=2) + "\n"
            await asyncio.to_thread(atomic_write, self.path, text)
            self._enabled = after
            return before
