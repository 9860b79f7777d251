"""A throwaway PostgreSQL server for tests and benchmarks, started from the installed binaries.

:class:`PostgresServer` runs ``initdb`` into a fresh temporary folder, starts ``postgres``
on a free port of 127.0.0.1 (its Unix socket in the same folder, never the system's),
with trust authentication and, by default, ``fsync``, ``synchronous_commit`` and
``full_page_writes`` off (a test never needs to survive a power cut), waits until it
accepts connections, and stops it at the end (fast shutdown, then SIGKILL) and removes
the folder::

    with PostgresServer() as server:
        dsn = server.create_database()  # a new, empty database per test
        ...

**Running as root.** PostgreSQL refuses to run as root, and CI runs as root. Then
``initdb`` and ``postgres`` run as an unprivileged user (``postgres`` if it exists, as
the Debian package creates it, else ``nobody``) through ``subprocess``'s ``user=`` and
``group=`` (set in the child before exec, no shell, no ``preexec_fn``), and the temporary
folder is handed over to that user. It is made with :func:`tempfile.mkdtemp` directly
under the system temporary folder rather than under pytest's ``tmp_path``, whose parents
are private to root.

The binaries are searched for in ``/usr/lib/postgresql/<newest>/bin`` (Debian and
Ubuntu), then on ``PATH``. Without them :class:`PostgresNotFound` names the package.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from shopfloor.testing.processes import free_port

__all__ = ["PostgresNotFound", "PostgresServer", "find_postgres_bin", "server_for_tests"]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresNotFound(RuntimeError):  # noqa: N818 - reads as a condition, like FileNotFound
    """The PostgreSQL server binaries are not installed (Debian/Ubuntu package ``postgresql``)."""


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (the newest version), or None."""
    versions = sorted(
        (p for p in _DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if os.access(folder / "initdb", os.X_OK) and os.access(folder / "postgres", os.X_OK):
            return folder
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres:
        initdb_dir = Path(initdb).resolve().parent
        if initdb_dir == Path(postgres).resolve().parent:
            return initdb_dir
    return None


def _run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise PostgresNotFound("running as root and neither user postgres nor nobody exists")


class PostgresServer:
    """A private PostgreSQL server on 127.0.0.1, in its own temporary folder.

    Args:
        bindir: folder of ``initdb`` and ``postgres``; default: :func:`find_postgres_bin`.
        durable: keep PostgreSQL's default ``fsync``/``synchronous_commit``/
            ``full_page_writes`` (on) instead of turning them off; for benchmarks.
        settings: more ``postgres -c`` settings, e.g. ``{"shared_buffers": "256MB"}``.

    Raises:
        PostgresNotFound: the binaries are not installed.
    """

    host = "127.0.0.1"
    user = "postgres"

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        found = bindir if bindir is not None else find_postgres_bin()
        if found is None or not os.access(found / "initdb", os.X_OK):
            raise PostgresNotFound(
                "the PostgreSQL server is not installed (Debian/Ubuntu: apt-get install postgresql)"
            )
        self.bindir = found
        self._settings = {**({} if durable else _FAST_SETTINGS), **(settings or {})}
        self._owner = _run_as()
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self.port = 0

    # ---------------------------------------------------------------------- paths
    @property
    def workdir(self) -> Path:
        """The temporary folder (data directory, socket, log); exists while started."""
        if self._workdir is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self._workdir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (for measuring sizes on disk)."""
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.workdir / "postgres.log"

    def log(self) -> str:
        """Everything the server logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, RuntimeError):
            return ""

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` (an IP host: no DNS lookup)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    # -------------------------------------------------------------------- control
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Create the cluster (first time only), start the server, wait until it answers.

        After :meth:`kill` this starts the same cluster again on the same port, as a
        server restarting after a crash (it recovers from its write-ahead log).

        Raises:
            RuntimeError: initdb failed, or the server exited or did not answer in time;
                the message holds its log.
        """
        if self.running:
            return
        try:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="shopfloor-pg-"))
                self._initdb()
            if self.port:  # after kill(): the same cluster on the same port
                self._relaunch(timeout_s=timeout_s)
                return
            for attempt in range(3):  # a free port may be taken before the server binds it
                self.port = free_port()
                if self._launch(timeout_s=timeout_s, last=attempt == 2):
                    return
        except BaseException:
            self.stop()
            raise

    def _child_options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "cwd": self.workdir,
            "stdin": subprocess.DEVNULL,
            "env": {**os.environ, "LC_ALL": "C", "TZ": "UTC"},
        }
        if self._owner is not None:
            options.update(user=self._owner[0], group=self._owner[1], extra_groups=[])
        return options

    def _initdb(self) -> None:
        if self._owner is not None:
            os.chown(self.workdir, *self._owner)
        with self.log_path.open("ab") as log:
            done = subprocess.run(  # noqa: PLW1510 - the code is checked below, with the log
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                **self._child_options(),  # type: ignore[call-overload]
            )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed with {done.returncode}:\n{self.log()}")

    def _launch(self, *, timeout_s: float, last: bool) -> bool:
        """Start postgres on :attr:`port`; False if it could not bind it (try another)."""
        args = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.workdir),
            "-c",
            f"listen_addresses={self.host}",
        ]
        for key, value in self._settings.items():
            args += ["-c", f"{key}={value}"]
        offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # type: ignore[call-overload]
                args, stdout=log, stderr=subprocess.STDOUT, **self._child_options()
            )
        deadline = time.monotonic() + timeout_s
        while not self._accepts():
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._proc = None
                text = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if "could not bind" in text and not last:
                    return False
                raise RuntimeError(f"postgres exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections:\n{self.log()}")
            time.sleep(0.05)
        return True

    def _relaunch(self, *, timeout_s: float) -> None:
        """Start again after :meth:`kill`, once the killed server's backends are gone.

        They exit by themselves when they notice their postmaster died; until then the
        new postmaster refuses to start ("pre-existing shared memory block is still in
        use").
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._launch(timeout_s=timeout_s, last=True)
                return
            except RuntimeError:
                if time.monotonic() > deadline or "still in use" not in self.log():
                    raise
                time.sleep(0.2)

    def _accepts(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and remove its folder. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast": roll back sessions, checkpoint, exit
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        workdir, self._workdir = self._workdir, None
        self.port = 0
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server (SIGKILL) as a crash would; :meth:`start` brings the same one back."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # ------------------------------------------------------------------ databases
    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name if None) and return its DSN."""
        name = name or f"test_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            # FILE_COPY: a few ms, where the default WAL_LOG copies template1 through WAL
            con.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                    sql.Identifier(name)
                )
            )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending its sessions first."""
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_for_tests(**kwargs: object) -> PostgresServer:
    """Start a server for a pytest fixture; skip without the binaries, except under CI.

    Under ``CI=true`` a missing PostgreSQL is a failure: CI must run these tests.
    """
    import pytest  # the shipped kit needs pytest only when used from tests

    try:
        server = PostgresServer(**kwargs)  # type: ignore[arg-type]
    except PostgresNotFound as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{err}; CI must run the PostgreSQL tests")
        pytest.skip(str(err))
    server.start()
    return server
