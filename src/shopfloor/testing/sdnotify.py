"""systemd's side of the notify protocol, for tests of ``Type=notify`` services.

:class:`NotifyListener` binds a unix datagram socket (what ``NOTIFY_SOCKET`` names) and a
thread reads every datagram as it comes: a reader that falls behind would make the
service drop messages (the kernel queues only ``net.unix.max_dgram_qlen`` of them, 10 by
default), and the test would see a gap that the service did not make.

    with NotifyListener.in_temporary_folder() as listener:
        env = {"NOTIFY_SOCKET": listener.path}
        ...
        listener.wait_for(lambda m: "READY=1" in m, "READY=1")
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator

__all__ = ["NotifyListener"]

RECV_TIMEOUT_S = 30.0
"""How long :meth:`NotifyListener.wait_for` waits: a guard against a hang, not a measurement."""


class NotifyListener:
    """systemd's side of the notify socket: a thread reads every datagram as it comes (a
    reader that falls behind would make the service drop messages)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            with self._changed:
                self.messages.append(data.decode())
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], what: str) -> list[str]:
        """Wait until ``predicate(messages)``; fail naming ``what`` after RECV_TIMEOUT_S.

        Returns:
            every message so far, oldest first.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.messages), RECV_TIMEOUT_S):
                raise AssertionError(f"no {what} on the notify socket: {self.messages}")
            return list(self.messages)

    @classmethod
    @contextlib.contextmanager
    def in_temporary_folder(cls) -> Iterator[NotifyListener]:
        """A listener on a socket in a new temporary folder (a short path: unix socket
        paths are limited to 108 bytes), closed and removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
            listener = cls(os.path.join(folder, "notify"))
            try:
                yield listener
            finally:
                listener.close()

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._stopping.set()
        self._thread.join()
        self._sock.close()
