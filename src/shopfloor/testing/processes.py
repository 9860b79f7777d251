"""Run shopfloor as a real subprocess in tests, and always stop it."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago.

    Chosen below the kernel's ephemeral range: a port handed out by ``bind(0)``
    can be taken, before our process binds it, by the local end of any outgoing
    connection (a server dialling its broker), which made tests fail at random.
    """
    low = _ephemeral_range_start()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free TCP port below the ephemeral range")


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass
class RunningProcess:
    """A shopfloor subprocess serving HTTP on ``base_url``."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    token_file: Path | None = None

    @property
    def token(self) -> str:
        """The admin API token the server wrote at start (``SHOPFLOOR_BOOTSTRAP_TOKEN_FILE``)."""
        if self.token_file is None or not self.token_file.exists():
            raise RuntimeError(f"the process wrote no API token:\n{self.log()}")
        return self.token_file.read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        """The admin API token as the header that sends it."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``GET`` ``path`` of the server with its admin API token."""
        return httpx.get(f"{self.base_url}{path}", headers=self.headers, **kwargs)

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for exit; kill after ``timeout_s``. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@contextmanager
def shopfloor_process(
    args: Sequence[str],
    *,
    port: int,
    workdir: Path,
    ready_timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[RunningProcess]:
    """Start ``python -m shopfloor ARGS``, wait for ``/healthz``, stop it on exit.

    A server or demo writes an admin API token to ``workdir/admin.token`` at start
    (``SHOPFLOOR_BOOTSTRAP_TOKEN_FILE``): send :attr:`RunningProcess.headers`.

    Args:
        env: added to the environment.
        preexec_fn: run in the child before it starts, e.g. to restrict it.
        tls: the process serves HTTPS: the context that trusts its certificate.
    """
    log_path = workdir / "process.log"
    token_file = workdir / "admin.token"
    token_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SHOPFLOOR_BOOTSTRAP_TOKEN_FILE": str(token_file),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", *args],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # the callers' functions are one system call (prctl), safe after fork
            preexec_fn=preexec_fn,  # noqa: PLW1509
        )
    scheme = "http" if tls is None else "https"
    running = RunningProcess(proc, f"{scheme}://127.0.0.1:{port}", log_path, token_file)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"shopfloor exited with {proc.returncode}:\n{running.log()}")
            try:
                health = httpx.get(f"{running.base_url}/healthz", timeout=1, verify=tls or True)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /healthz within {ready_timeout_s} s:\n{running.log()}")
            time.sleep(0.2)
        yield running
    finally:
        running.stop()
