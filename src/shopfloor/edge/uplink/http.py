"""Talk to the platform's HTTP API: one request, one classified answer (docs/wire.md).

:class:`HttpTransport` POSTs one encoded batch (compressed, ``Content-Encoding``) and
says what the answer means for the outbox: committed (``200``, duplicate or not), try
later (``429``/``503`` with ``Retry-After``), unreachable (transport errors, other
``5xx``), refused as invalid (``400``/``413``/``415``/``422``: retried a few times, then
quarantined) or not authorised (``401``/``403``: the edge's token or client certificate
is wrong or missing; the sender backs off and keeps every batch). It never retries by
itself: the sender decides, because only the sender knows what else is waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from shopfloor.model import TagMeta
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.wire import ARROW_MEDIA_TYPE

from .framing import COMPRESSIONS, compress

__all__ = ["Answer", "HttpTransport", "Verdict", "classify", "tags_body"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_REFUSED = {400, 413, 415, 422}
_UNAUTHORIZED = {401, 403}
_MAX_RETRY_AFTER_S = 300.0
_INLINE_COMPRESS_BYTES = 256 * 1024


class Verdict(StrEnum):
    """What an answer means for the batches in the request."""

    ACKED = "acked"
    """``200``: committed now; remove from the outbox."""
    DUPLICATE = "duplicate"
    """``200`` with ``duplicate: true``: committed before; remove from the outbox."""
    RETRY_LATER = "retry-later"
    """``429``/``503``: overloaded or shutting down; wait ``Retry-After`` (with jitter)."""
    UNAVAILABLE = "unavailable"
    """No answer, or another server error: back off and try again."""
    REFUSED = "refused"
    """``400``/``413``/``415``/``422``: the batch is invalid and will stay so."""
    UNAUTHORIZED = "unauthorized"
    """``401``/``403``: the edge's credential is wrong; back off, keep everything."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A classified answer.

    Attributes:
        verdict: what to do.
        status: the HTTP status, None when no answer came.
        retry_after_s: the server's ``Retry-After``, when it sent one.
        detail: for logs: the error envelope or the transport error.
        body: the parsed JSON body of a successful answer.
    """

    verdict: Verdict
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""
    body: Mapping[str, Any] | None = None

    @property
    def committed(self) -> bool:
        """Whether the platform holds the batch (now or from before)."""
        return self.verdict in (Verdict.ACKED, Verdict.DUPLICATE)


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Answer:
    """Classify an HTTP answer to a batch per the wire contract (docs/wire.md)."""
    text = body[:2000].decode(errors="replace")
    if 200 <= status < 300:
        doc: Mapping[str, Any] = {}
        try:
            parsed = json.loads(body) if body else {}
            doc = parsed if isinstance(parsed, dict) else {}
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            pass
        verdict = Verdict.DUPLICATE if doc.get("duplicate") is True else Verdict.ACKED
        return Answer(verdict, status, body=doc)
    retry_after = _retry_after(headers.get("retry-after"))
    if status in (429, 503):
        return Answer(Verdict.RETRY_LATER, status, retry_after, f"HTTP {status}: {text}")
    if status in _REFUSED:
        return Answer(Verdict.REFUSED, status, None, f"HTTP {status}: {text}")
    if status in _UNAUTHORIZED:
        # never quarantine on it: the batch is fine, the credential is not
        # the platform's own message first: the sender keeps only the start of a detail
        detail = (
            f"HTTP {status}: {_error_message(body) or text} (the edge's credential: "
            "uplink.token_env/token_file or uplink.cert_file/key_file)"
        )
        return Answer(Verdict.UNAUTHORIZED, status, retry_after, detail)
    # Anything else (404 from a proxy, 502 …) may well pass: never give up a batch on it.
    return Answer(Verdict.UNAVAILABLE, status, retry_after, f"HTTP {status}: {text}")


def tags_body(tags: Sequence[TagMeta]) -> dict[str, Any]:
    """The ``PUT /api/v1/tags`` body for ``tags``."""
    return {
        "tags": [
            {
                "path": t.path,
                "unit": t.unit,
                "description": t.description,
                "data_type": t.data_type.value,
                "eng_low": t.eng_low,
                "eng_high": t.eng_high,
                "states": {str(k): v for k, v in t.states},
            }
            for t in tags
        ]
    }


class HttpTransport:
    """One request at a time to the platform, each answer classified, nothing retried.

    Args:
        base_url: the platform, e.g. ``https://platform.plant.local:8000``.
        edge_id: this edge's identity (the status URL names it).
        timeout_s: per request; a blackholed link shows up as a timeout.
        compression: ``zstd`` (default), ``gzip`` or ``none``.
        transport: an httpx transport, for tests.
        clock: for the ``X-Shopfloor-Edge-Time`` header.
        token: this edge's credential, sent as ``Authorization: Bearer`` on every request.
        ssl_context: the CAs to trust for ``https://`` (default: the system's), and the
            client certificate to present.
    """

    def __init__(
        self,
        base_url: str,
        *,
        edge_id: str,
        timeout_s: float = 10.0,
        compression: str = "zstd",
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.edge_id = edge_id
        self.compression = compression
        self._clock = clock or SystemClock()
        self._plain = base_url.startswith("http://")
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            verify=ssl_context if ssl_context is not None else True,
            headers={"authorization": f"Bearer {token}"} if token is not None else None,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )

    async def post_batch(self, body: bytes) -> Answer:
        """POST one request body (from :func:`~.framing.frame`) to ``/api/v1/ingest``."""
        if len(body) > _INLINE_COMPRESS_BYTES and self.compression != "none":
            data, encoding = await asyncio.to_thread(compress, body, self.compression)
        else:
            data, encoding = compress(body, self.compression)
        headers = {
            "content-type": ARROW_MEDIA_TYPE,
            "x-shopfloor-edge-time": str(self._clock.now_ns()),
        }
        if encoding:
            headers["content-encoding"] = encoding
        return await self._request("POST", "/api/v1/ingest", content=data, headers=headers)

    async def put_tags(self, tags: Sequence[TagMeta]) -> Answer:
        """Register tag metadata with the platform."""
        return await self._request("PUT", "/api/v1/tags", json=tags_body(tags))

    async def put_status(self, status: Mapping[str, Any]) -> Answer:
        """Report this edge's status (``PUT /api/v1/edges/{id}/status``)."""
        return await self._request("PUT", f"/api/v1/edges/{self.edge_id}/status", json=status)

    async def _request(self, method: str, url: str, **kwargs: Any) -> Answer:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            detail = f"{type(err).__name__}: {err}"
            if self._plain and isinstance(err, httpx.RemoteProtocolError | httpx.ReadError):
                # what a TLS port does to a plain request: hang up without a word
                detail += " (does the platform serve HTTPS? then uplink.url must be https://)"
            return Answer(Verdict.UNAVAILABLE, None, None, detail)
        return classify(response.status_code, response.headers, response.content)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _error_message(body: bytes) -> str | None:
    """The ``message`` of the platform's error envelope, if the body is one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), capped at 5 minutes."""
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None
