"""The loop filter hides only the MQTT client's socket-teardown races."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

import pytest

from shopfloor.runtime.loopnoise import quiet_socket_teardown


async def test_a_closed_socket_watch_is_quiet_and_other_errors_still_reach_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _lp, ctx: seen.append(ctx))
    try:
        quiet_socket_teardown()
        quiet_socket_teardown()  # idempotent: one filter, not two
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
        # what paho's callback does after the connection dropped: watch a closed fd
        loop.call_soon(loop.add_writer, fd, lambda: None)
        failed: asyncio.Future[None] = loop.create_future()

        class MqttCodeError(Exception):  # raised by aiomqtt; recognised by its module
            __module__ = "aiomqtt.exceptions"

        failed.set_exception(MqttCodeError("Unexpected disconnection"))
        loop.call_exception_handler(
            {"message": "Future exception was never retrieved", "exception": failed.exception()}
        )
        loop.call_exception_handler({"message": "real bug", "exception": ValueError("x")})
        bad_fd = OSError(errno.EBADF, os.strerror(errno.EBADF))
        loop.call_exception_handler({"message": "elsewhere", "exception": bad_fd})
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert [ctx["message"] for ctx in seen] == ["real bug", "elsewhere"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
