"""systemd's notify protocol against a real unix datagram socket, as systemd listens."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.runtime.sdnotify import SystemdNotifier, systemd_notifier

RECV_TIMEOUT_S = 10.0  # a guard against a hang, not a measurement


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket at a short path (unix socket paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(RECV_TIMEOUT_S)
            yield path, sock


def _messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    notifier.ready("up")
    notifier.watchdog()
    assert notifier.sent == 0


def test_ready_status_and_stopping_reach_the_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready("serving http://127.0.0.1:8000")
    notifier.stopping()
    assert _messages(sock, 2) == ["READY=1\nSTATUS=serving http://127.0.0.1:8000", "STOPPING=1"]


def test_abstract_namespace_address() -> None:
    name = f"shopfloor-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_watchdog_belongs_to_the_process_it_names() -> None:
    mine = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_s == 30.0
    inherited = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    )
    assert inherited.watchdog_s is None
    assert (
        SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "x"}).watchdog_s
        is None
    )


async def test_block_feeds_the_watchdog_and_cleans_the_environment(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "PATH": "/usr/bin"}
    async with systemd_notifier(environ) as notifier:
        # children started from here on do not inherit the service's socket
        assert environ == {"PATH": "/usr/bin"}
        notifier.ready()
        got = await asyncio.to_thread(_messages, sock, 4)
    assert "READY=1" in got
    assert got.count("WATCHDOG=1") >= 3
    rest = sock.recv(4096).decode()
    while rest == "WATCHDOG=1":  # pings sent before the block ended
        rest = sock.recv(4096).decode()
    assert rest == "STOPPING=1"
    assert [t for t in asyncio.all_tasks() if t.get_name() == "systemd/watchdog"] == []


async def test_an_unreachable_socket_is_logged_once_and_does_not_stop_the_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "10000"}
    with caplog.at_level(logging.WARNING, logger="shopfloor.runtime.sdnotify"):
        async with systemd_notifier(environ) as notifier:
            notifier.ready()
            notifier.watchdog()
            notifier.watchdog()
    assert notifier.sent == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gone" in warnings[0].getMessage()


def test_a_receiver_that_does_not_read_never_blocks_the_sender(
    listener: tuple[str, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    path, sock = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    with caplog.at_level(logging.WARNING, logger="shopfloor.runtime.sdnotify"):
        for _ in range(2000):  # far beyond any datagram queue
            notifier.watchdog()
    assert 0 < notifier.sent < 2000
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    # once the receiver reads again, messages go through (and that is logged once)
    sock.setblocking(False)
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    sent = notifier.sent
    notifier.ready()
    assert notifier.sent == sent + 1
