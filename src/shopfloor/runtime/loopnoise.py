"""Keep an MQTT client's harmless teardown races out of the error log.

paho (under aiomqtt) asks the event loop, from its own callbacks, to watch its socket for
writing; when the broker connection drops at that moment the request lands after the
socket was closed, and asyncio logs ``OSError: [Errno 9] Bad file descriptor`` with a
traceback. Likewise a publish or connect future that lost its waiter to a timeout gets
the disconnection error set later and asyncio logs it as "never retrieved". Both happen
only after the connection is already gone — the link's own code has noticed and is
reconnecting — so they are logged at debug level here, and every other loop error goes to
the handler that was there before.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

__all__ = ["quiet_socket_teardown"]

logger = logging.getLogger(__name__)

_WATCHERS = ("add_writer", "add_reader", "remove_writer", "remove_reader")
_MARK = "_shopfloor_quiet_teardown"


def quiet_socket_teardown(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the filter on ``loop`` (the running one by default). Idempotent."""
    loop = loop or asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    if previous is not None and getattr(previous, _MARK, False):
        return

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_teardown_race(context):
            logger.debug("socket teardown race: %s", context.get("exception"))
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    setattr(handler, _MARK, True)
    loop.set_exception_handler(handler)


def _is_teardown_race(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    message = str(context.get("message", ""))
    if isinstance(exc, OSError) and exc.errno == errno.EBADF:
        handle = repr(context.get("handle", ""))
        return any(name in handle for name in _WATCHERS)
    if exc is not None and message.startswith("Future exception was never retrieved"):
        return type(exc).__module__.split(".")[0] in ("aiomqtt", "paho")
    return False
