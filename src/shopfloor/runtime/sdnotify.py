"""systemd's notify protocol, so units can be ``Type=notify`` with a ``WatchdogSec=``.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` naming a unix datagram
socket (a path, or ``@name`` in the abstract namespace). The service sends newline-separated
``KEY=value`` assignments to it: ``READY=1`` once it serves (only then does systemd start
the units ordered after it), ``STOPPING=1`` when it begins to shut down, and, when the unit
sets ``WatchdogSec=``, ``WATCHDOG=1`` more often than ``WATCHDOG_USEC`` microseconds, or
systemd kills and restarts it. The protocol is one ``sendto`` per message, so it is done
here rather than with a dependency (libsystemd bindings need a compiler or a system package).

The watchdog is fed by a task on the event loop itself: a loop that is blocked (the thing
DESIGN.md rule 4 forbids) stops feeding it, which is exactly what the watchdog is for.

Usage in a composition root::

    async with systemd_notifier() as notifier:
        ...  # start
        notifier.ready("serving on :8000")
        await stop.wait()

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Final

__all__ = ["SystemdNotifier", "systemd_notifier"]

logger = logging.getLogger(__name__)

_ENV_KEYS: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """Sends notify messages to one socket; a failed send is logged once, never raised:
    a service must not stop serving because its supervisor's socket went away.

    Args:
        address: ``NOTIFY_SOCKET`` as systemd sets it (a path, or ``@`` for the abstract
            namespace); empty for a notifier that sends nothing.
        watchdog_s: the watchdog timeout, or None when the unit has none.
    """

    def __init__(self, address: str, *, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self.sent = 0
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        """The notifier the environment asks for (one that sends nothing without
        ``NOTIFY_SOCKET``). ``WATCHDOG_PID`` naming another process means the watchdog is
        not this process's to feed (a child that inherited the environment)."""
        address = environ.get("NOTIFY_SOCKET", "")
        watchdog_s: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(address, watchdog_s=watchdog_s)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return bool(self.address)

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` assignments in one datagram (nothing when not enabled)."""
        if not self.address:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode()
        try:
            # Non-blocking: a receiver that does not read (its queue holds only
            # net.unix.max_dgram_qlen datagrams, 10 by default) must not stall the event loop;
            # a message that does not fit is dropped and logged.
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.sendto(payload, target)
        except OSError as err:
            if not self._failing:
                logger.warning("systemd notify socket %s: %s", self.address, err)
                self._failing = True
            return
        if self._failing:
            logger.info("systemd notify socket %s reachable again", self.address)
            self._failing = False
        self.sent += 1

    def ready(self, status: str | None = None) -> None:
        """Tell systemd the service is up (``READY=1``), with a status line if given."""
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Feed the watchdog once (``WATCHDOG=1``)."""
        self.notify("WATCHDOG=1")

    async def keep_alive(self) -> None:
        """Feed the watchdog at half its timeout until cancelled (nothing without one)."""
        if self.watchdog_s is None:
            return
        interval = self.watchdog_s / 2
        while True:
            self.watchdog()
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def systemd_notifier(
    environ: MutableMapping[str, str] | None = None,
) -> AsyncIterator[SystemdNotifier]:
    """A notifier from the environment, its watchdog fed for as long as the block runs.

    The variables are removed from the environment (as ``sd_notify(unset_environment=1)``
    does), so processes started by the service (the demo's own Mosquitto, which speaks the
    protocol too) do not report to the service's socket. ``STOPPING=1`` is sent when the
    block is left, however it is left.

    Args:
        environ: the environment to read and clean (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    notifier = SystemdNotifier.from_env(env)
    for key in _ENV_KEYS:
        env.pop(key, None)
    feeder: asyncio.Task[None] | None = None
    if notifier.watchdog_s is not None:
        feeder = asyncio.create_task(notifier.keep_alive(), name="systemd/watchdog")
    try:
        yield notifier
    finally:
        notifier.stopping()
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
