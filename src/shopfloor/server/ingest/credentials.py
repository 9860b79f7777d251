"""Per-edge credentials: the file of token hashes, read by the platform and written by the CLI.

One line per edge, ``<edge id> sha256:<64 hex digits>``, ``#`` starts a comment::

    # issued with: shopfloor edge credential press-1 --file edge-credentials.txt
    press-1 sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

Only hashes are stored. A token is 32 random bytes (``secrets.token_urlsafe(32)``), so a
plain SHA-256 is enough: there is nothing to brute-force, unlike a password, and a
stolen file lets nobody send.

:class:`EdgeCredentials` re-reads the file when it changes (checked at most once a
second), so adding or revoking an edge needs no restart. A malformed line is logged with
its line number and skipped: one typo never locks every edge out. ``shopfloor config
check`` reports the same lines as errors (:func:`read_credentials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shopfloor.errors import ConfigError, ShopfloorError
from shopfloor.wire import EDGE_ID_PATTERN

__all__ = [
    "CredentialExists",
    "CredentialProblem",
    "CredentialTable",
    "EdgeCredentials",
    "issue_credential",
    "parse_credentials",
    "read_credentials",
    "token_digest",
]

logger = logging.getLogger(__name__)

_EDGE_ID = re.compile(EDGE_ID_PATTERN)
_HASH = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_FORM = '"<edge id> sha256:<64 hex digits>"'
_CHECK_INTERVAL_S = 1.0


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token, as the file stores it (hex after ``sha256:``)."""
    return hashlib.sha256(token.encode()).digest()


def credential_line(edge_id: str, token: str) -> str:
    """The file's line for ``edge_id`` holding ``token`` (hashed)."""
    return f"{edge_id} sha256:{token_digest(token).hex()}"


@dataclass(frozen=True, slots=True)
class CredentialProblem:
    """A line of the credentials file that was skipped.

    Attributes:
        line: 1-based line number.
        message: what is wrong with it.
    """

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class CredentialTable:
    """The usable lines of a credentials file.

    Attributes:
        by_digest: edge id per token digest.
        digests: token digest per edge id.
        lines: the line of each edge id.
        problems: the skipped lines.
    """

    by_digest: dict[bytes, str] = field(default_factory=dict)
    digests: dict[str, bytes] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    problems: tuple[CredentialProblem, ...] = ()

    def edge_of(self, token: str) -> str | None:
        """The edge ``token`` belongs to, or None."""
        digest = token_digest(token)
        # The lookup is keyed by the digest of what the caller sent, which the caller
        # cannot steer towards a stored one; compare_digest confirms it in constant time.
        edge = self.by_digest.get(digest)
        if edge is None or not hmac.compare_digest(self.digests[edge], digest):
            return None
        return edge


def parse_credentials(text: str) -> CredentialTable:
    """Parse a credentials file; malformed lines become problems, the rest is kept."""
    by_digest: dict[bytes, str] = {}
    digests: dict[str, bytes] = {}
    lines: dict[str, int] = {}
    problems: list[CredentialProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if not content:
            continue
        parts = content.split()
        if len(parts) != 2:
            problems.append(
                CredentialProblem(
                    number,
                    f"expected {_FORM}, got {len(parts)} field{'' if len(parts) == 1 else 's'}",
                )
            )
            continue
        edge, hashed = parts
        match = _HASH.match(hashed)
        if not _EDGE_ID.match(edge):
            problems.append(
                CredentialProblem(
                    number,
                    f"{edge[:80]!r} is not an edge id (letters, digits, '_', '.', '-'; at most 64)",
                )
            )
        elif match is None:
            # never echo it: it may be a token pasted in by mistake
            problems.append(
                CredentialProblem(
                    number,
                    f"the second field must be sha256: and 64 hex digits (the hash of the "
                    f"token, never the token itself), got {len(hashed)} characters",
                )
            )
        elif edge in lines:
            problems.append(
                CredentialProblem(
                    number, f"edge {edge!r} already has a credential on line {lines[edge]}"
                )
            )
        elif (digest := bytes.fromhex(match.group(1))) in by_digest:
            problems.append(
                CredentialProblem(
                    number,
                    f"the same token as edge {by_digest[digest]!r} (line "
                    f"{lines[by_digest[digest]]}): every edge needs a token of its own",
                )
            )
        else:
            by_digest[digest] = edge
            digests[edge] = digest
            lines[edge] = number
    return CredentialTable(by_digest, digests, lines, tuple(problems))


def read_credentials(path: Path) -> CredentialTable:
    """Read and parse ``path``.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"ingest.edge_credentials: cannot read {path}: {reason}") from err
    return parse_credentials(text)


_Signature = tuple[int, int, int]


class EdgeCredentials:
    """The platform's edge credentials, re-read when the file changes.

    Args:
        path: the credentials file.
        check_interval_s: the file's mtime is looked at no more often than this.
        monotonic: for tests.
    """

    def __init__(
        self,
        path: Path,
        *,
        check_interval_s: float = _CHECK_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = check_interval_s
        self._monotonic = monotonic
        self._table = CredentialTable()
        self._signature: _Signature | None = None
        self._checked = -float("inf")
        self._unreadable = False

    def load(self) -> None:
        """Read the file for the first time.

        Raises:
            ConfigError: it cannot be read (the server does not start without it).
        """
        try:
            self._reload()
        except OSError as err:
            raise ConfigError(
                f"ingest.edge_credentials: cannot read {self.path}: {err.strerror}"
            ) from err
        self._checked = self._monotonic()
        if not self._table.by_digest:
            logger.warning(
                "edge credentials %s hold no edge yet: every edge is refused until one is "
                "added (shopfloor edge credential EDGE_ID --file %s)",
                self.path,
                self.path,
            )

    @property
    def edges(self) -> int:
        """How many edges hold a credential now."""
        return len(self._table.by_digest)

    async def identify(self, token: str) -> str | None:
        """The edge whose token this is (None: no edge's), after picking up file changes."""
        now = self._monotonic()
        if now - self._checked >= self._interval:
            self._checked = now  # before awaiting: concurrent requests use the table as is
            await asyncio.to_thread(self.refresh)
        return self._table.edge_of(token)

    def refresh(self) -> None:
        """Re-read the file if it changed; on a read error keep the table read before."""
        try:
            if _signature(os.stat(self.path)) != self._signature:
                self._reload()
        except OSError as err:
            if not self._unreadable:
                self._unreadable = True
                logger.error(
                    "cannot read edge credentials %s (%s): keeping the %d read before",
                    self.path,
                    err.strerror,
                    self.edges,
                )
            return
        if self._unreadable:
            self._unreadable = False
            logger.info("edge credentials %s readable again", self.path)

    def _reload(self) -> None:
        with self.path.open("rb") as file:
            signature = _signature(os.fstat(file.fileno()))
            data = file.read()
        table = parse_credentials(data.decode("utf-8", errors="replace"))
        first = self._signature is None
        self._table, self._signature = table, signature
        for problem in table.problems:
            logger.error("edge credentials %s %s: line skipped", self.path, problem)
        logger.info(
            "edge credentials %s: %d edge(s)%s",
            self.path,
            len(table.by_digest),
            "" if first else " (file changed)",
        )


def _signature(stat: os.stat_result) -> _Signature:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class CredentialExists(ShopfloorError):  # noqa: N818 - reads as the refusal
    """The edge already has a credential and ``replace`` was not asked for."""

    def __init__(self, edge_id: str, line: int) -> None:
        self.edge_id = edge_id
        self.line = line
        super().__init__(f"edge {edge_id!r} already has a credential (line {line})")


def issue_credential(path: Path, edge_id: str, *, replace: bool = False) -> str:
    """Draw a token for ``edge_id``, store its hash in ``path`` and return the token.

    The file is written whole to a temporary file beside it (mode 0600), synced and
    renamed over the old one, so the platform never reads half a file. Other lines,
    comments included, are kept; with ``replace`` the edge's line is replaced in place.

    Raises:
        ValueError: ``edge_id`` is not an edge id.
        CredentialExists: the edge has a credential and ``replace`` is False.
        OSError: the file cannot be read or written.
    """
    if not _EDGE_ID.match(edge_id):
        raise ValueError(
            f"{edge_id!r} is not an edge id: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    owner: tuple[int, int] | None = None
    try:
        with path.open(encoding="utf-8") as file:
            stat = os.fstat(file.fileno())
            text, owner = file.read(), (stat.st_uid, stat.st_gid)
    except FileNotFoundError:
        text = ""
    table = parse_credentials(text)
    existing = table.lines.get(edge_id)
    if existing is not None and not replace:
        raise CredentialExists(edge_id, existing)
    token = secrets.token_urlsafe(32)
    line = credential_line(edge_id, token)
    lines = text.splitlines()
    if existing is not None:
        lines[existing - 1] = line
    else:
        lines.append(line)
    _write_atomically(path, "\n".join(lines) + "\n", owner=owner)
    return token


def _write_atomically(path: Path, text: str, *, owner: tuple[int, int] | None) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            if owner is not None:  # root editing the platform user's file keeps it theirs
                with contextlib.suppress(PermissionError):
                    os.fchown(file.fileno(), *owner)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
