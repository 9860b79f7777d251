"""A throwaway Mosquitto broker for tests: own config, own port, always stopped.

Tests must never talk to a broker that happens to run on the machine (port 1883 is
someone else's). :class:`Mosquitto` writes a config into a private folder, starts the
installed ``mosquitto`` binary on a free port of 127.0.0.1, waits until it accepts
connections and stops it (SIGTERM, then SIGKILL) at the end. It can also serve TLS
with a freshly generated CA, server and client certificate, require a username and
password, and restart on the same port so reconnect logic can be tested::

    with Mosquitto(tmp_path, tls=True, users={"edge": "s3cret"}) as broker:
        ...  # broker.port (plain), broker.tls_port, broker.ca_file, broker.restart()

Certificates are made with ``cryptography`` on elliptic curve keys (fast to generate);
passwords are hashed the way ``mosquitto_passwd`` does (PBKDF2-SHA512, ``$7$``), so no
other binary is needed. ``extra_config`` appends lines to the broker's config, e.g. the
snippet ``shopfloor broker config`` writes (password file and ACL)::

    Mosquitto(tmp_path, extra_config=(out / "shopfloor.conf").read_text().splitlines())
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from shopfloor.broker.passwords import password_line
from shopfloor.testing.certs import make_ca, make_tls_certificate
from shopfloor.testing.processes import free_port

__all__ = ["Mosquitto", "MosquittoNotFound", "TlsFiles", "broker_for_tests", "find_mosquitto"]

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class MosquittoNotFound(RuntimeError):  # noqa: N818 - reads as a condition, like FileNotFound
    """The ``mosquitto`` binary is not installed (Debian/Ubuntu package ``mosquitto``)."""


def find_mosquitto() -> str | None:
    """Path of the installed broker binary, or None."""
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a test PKI: one CA that signed the broker's and a client's certificate."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path, *, hostname: str = "localhost") -> TlsFiles:
    """Write a CA, a server certificate for ``hostname``/127.0.0.1 and a client certificate."""
    ca = make_ca(folder)
    server = make_tls_certificate(
        folder, "server", issuer=ca, server=True, hosts=(hostname, "127.0.0.1")
    )
    client = make_tls_certificate(folder, "shopfloor-test-client", issuer=ca, server=False)
    return TlsFiles(
        ca_file=ca.certificate,
        server_cert=server.certificate,
        server_key=server.private_key,
        client_cert=client.certificate,
        client_key=client.private_key,
    )


class Mosquitto:
    """A private Mosquitto broker on 127.0.0.1.

    Args:
        workdir: folder for the config, certificates, password file and log (must exist or
            be creatable; the caller removes it, e.g. pytest's ``tmp_path``).
        tls: also open a TLS listener on :attr:`tls_port` (certificates in :attr:`tls`).
        require_client_cert: the TLS listener accepts only clients with a certificate
            signed by the test CA.
        users: user name → password; when given, every listener requires one of them.
        extra_config: lines appended to the broker's config (Mosquitto's last value of a
            setting wins); with an ``allow_anonymous`` line among them the broker does not
            set its own.
        binary: the broker executable; default: the installed one.

    Raises:
        MosquittoNotFound: no broker binary is installed.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        tls: bool = False,
        require_client_cert: bool = False,
        users: dict[str, str] | None = None,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        found = binary if binary is not None else find_mosquitto()
        if found is None or not os.access(found, os.X_OK):
            raise MosquittoNotFound(
                "mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)"
            )
        self.binary = found
        self.workdir = workdir
        self.port = free_port()
        self.tls: TlsFiles | None = None
        self.tls_port: int | None = None
        self._want_tls = tls
        self._require_client_cert = require_client_cert
        self._users = dict(users or {})
        self._extra_config = list(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    # ------------------------------------------------------------------ config
    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "per_listener_settings false",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            # as root Mosquitto would switch to user `mosquitto`, who cannot read our folder
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} {self.host}",
        ]
        if self._want_tls:
            if self.tls is None:
                self.tls = make_tls_files(self.workdir / "tls")
                self.tls_port = free_port()
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self._require_client_cert else 'false'}",
            ]
        if self._users:
            pw_file = self.workdir / "passwords"
            pw_file.write_text(
                "\n".join(password_line(u, p) for u, p in self._users.items()) + "\n"
            )
            pw_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        elif not any(line.strip().startswith("allow_anonymous") for line in self._extra_config):
            lines.append("allow_anonymous true")
        lines += self._extra_config
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until every listener accepts TCP connections.

        Raises:
            RuntimeError: the broker exited or did not listen in time; the message holds
                its log.
        """
        if self.running:
            return
        conf = self._write_config()
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        finally:
            log.close()
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + timeout_s
        for port in ports:
            while not _accepts(self.host, port):
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto exited with {self._proc.returncode}:\n{self.log()}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {port}:\n{self.log()}")
                time.sleep(0.02)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash or power loss would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self, *, timeout_s: float = 10.0) -> None:
        """Stop and start again on the same ports (retained messages are lost)."""
        self.stop()
        self.start(timeout_s=timeout_s)

    def log(self) -> str:
        """Everything the broker logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def broker_for_tests(make: Callable[[], Mosquitto]) -> Mosquitto:
    """Make a broker with ``make`` and start it, for a pytest fixture.

    Without the binary the test is skipped, except under ``CI=true``, where a missing
    broker is a failure: CI must run the broker tests.
    """
    import pytest  # the shipped kit needs pytest only when used from tests

    try:
        broker = make()
    except MosquittoNotFound as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{err}; CI must run the broker tests")
        pytest.skip(str(err))
    broker.start()
    return broker
