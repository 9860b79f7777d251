"""Which store a failure is the outage of: those are answered 503, not 500.

When the shared PostgreSQL restarts, or a disk under the historian or the audit log fails,
the request did nothing wrong and may well work in a few seconds: ``503 Service
Unavailable`` with ``Retry-After`` says so (and load balancers and the edges' uplinks know
to try again), where a 500 says the server is broken. The envelope names the store; the
driver's own message, which may name hosts and files, goes to the server log only.

A :class:`~shopfloor.server.security.SecurityError` is an outage only when the store
failed (status 503, see :func:`~shopfloor.server.security.store.store_failure`); the
refusals it also carries (a taken name, an unknown user, the last admin) keep their 4xx.
"""

from __future__ import annotations

from shopfloor.errors import HistorianError, UnknownTagError
from shopfloor.server.analytics.store_base import AnalyticsStoreError
from shopfloor.server.security import AuditError, SecurityError

__all__ = ["OUTAGES", "RETRY_AFTER_S", "unavailable_store"]

RETRY_AFTER_S = 5
"""``Retry-After`` of an outage: about how long a PostgreSQL restart or failover takes."""

OUTAGES: tuple[type[Exception], ...] = (
    HistorianError,
    AnalyticsStoreError,
    AuditError,
    SecurityError,
)
"""The exception types that may report an outage (a handler is installed for each)."""


def unavailable_store(exc: BaseException) -> str | None:
    """The name of the store ``exc`` reports unavailable, or None when it is no outage."""
    if isinstance(exc, UnknownTagError):
        return None
    if isinstance(exc, HistorianError):
        return "the historian"
    if isinstance(exc, AnalyticsStoreError):
        return "the analytics store"
    if isinstance(exc, AuditError):
        return "the audit log"
    if isinstance(exc, SecurityError) and exc.status == 503:
        return "the security store"
    return None
