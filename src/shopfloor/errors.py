"""The one exception tree of shopfloor.

Third-party exceptions are wrapped where they enter (``raise ... from err``) so callers
only ever catch these::

    ShopfloorError
    ├── ConfigError              invalid configuration file (names key path and line)
    │   └── TlsFileError         (shopfloor.config.tls) a [server.tls] file cannot be used
    ├── PayloadError             a malformed batch or query from outside (names the field)
    ├── ConnectorError
    │   ├── ConnectorUnavailable a device does not answer; its tags turn Bad
    │   └── WriteRefused         a write to equipment was refused (read-only tag, bad value)
    ├── IngestBusy               the platform is behind: send again later (HTTP 429/503)
    ├── OutboxError              (shopfloor.edge.buffer.base) the edge's durable outbox
    │   ├── OutboxFailed         durability can no longer be promised: the edge stops
    │   ├── CorruptRecord        a damaged record (skipped and counted)
    │   └── StorageUnavailable   disk full or unwritable: collection waits and recovers
    ├── HistorianError           the historian failed to write or read
    │   └── UnknownTagError      a query names a tag the historian does not know
    ├── JournalError             (shopfloor.server.rules.journal) the alarm journal failed
    ├── PkiError                 (shopfloor.pki) a certificate or key cannot be made or read
    └── ShutdownError            work submitted after a component was closed
"""

from __future__ import annotations

import math


class ShopfloorError(Exception):
    """Base of every error shopfloor raises on purpose."""


class ConfigError(ShopfloorError):
    """A configuration file is invalid.

    Attributes:
        problems: one human-readable line per problem, each naming the key path and,
            where known, the line in the file.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message if problems is None else message + "\n" + "\n".join(problems))


class PayloadError(ShopfloorError):
    """Input from outside (an ingest batch, a query parameter) is malformed.

    Attributes:
        field: the name of the offending field, so API answers can point at it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConnectorError(ShopfloorError):
    """A connector failed."""


class ConnectorUnavailable(ConnectorError):  # noqa: N818 - name fixed by DESIGN.md
    """A device does not answer; the sampler marks its tags Bad."""


class WriteRefused(ConnectorError):  # noqa: N818 - reads as what happened
    """A write to equipment was refused before or by the device; nothing was written."""


class IngestBusy(ShopfloorError):  # noqa: N818 - reads as the answer (HTTP 429)
    """The platform is behind with storing: send again after ``retry_after_s``.

    Attributes:
        reason: a sentence for the edge's log.
        retry_after_s: when to try again (whole seconds, at least 1).
    """

    def __init__(self, reason: str, retry_after_s: float) -> None:
        self.reason = reason
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(reason)


class HistorianError(ShopfloorError):
    """The historian failed to write or read."""


class UnknownTagError(HistorianError):
    """A query names a tag that the historian does not know."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"unknown tag: {path}")


class ShutdownError(ShopfloorError):
    """Work was submitted to a component that is already closed."""
