"""Send batches to the platform's ingest API over HTTP(S).

A batch travels as an Arrow IPC stream with the edge's id and a batch sequence number.
While the platform is unreachable or answers 429/5xx, ``send`` retries with capped,
jittered backoff (honouring Retry-After) and logs the outage once; the poll loops wait
meanwhile. A 4xx answer other than 429 means the platform refuses this batch for good:
it is logged with the platform's reason and dropped. (Durable store-and-forward with an
on-disk outbox is the next layer and sits in front of this transport.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx

from shopfloor.model import PointBatch, TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HttpUplink:
    """The platform's REST ingest as an :class:`~shopfloor.edge.uplink.base.Uplink`.

    Args:
        base_url: the platform, e.g. ``https://platform.plant.local:8000``.
        edge_id: this edge's identity, sent with every batch.
        timeout_s: per request.
        retry: first and longest delay between attempts, seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        edge_id: str,
        timeout_s: float = 10.0,
        retry: tuple[float, float] = (0.5, 30.0),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport
        )
        self._edge_id = edge_id
        self._retry = retry
        self._seq = 0
        self._down = False
        self.batches_sent = 0
        self.points_sent = 0
        self.batches_refused = 0

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        """Register tag metadata with the platform."""
        body = {
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
        await self._deliver("PUT", "/api/v1/tags", json=body, what=f"{len(tags)} tags")

    async def send(self, batch: PointBatch) -> None:
        """Deliver one batch; returns once the platform accepted or refused it."""
        self._seq += 1
        body = encode_arrow(batch, edge=self._edge_id, seq=self._seq)
        accepted = await self._deliver(
            "POST",
            "/api/v1/ingest",
            content=body,
            headers={"content-type": ARROW_MEDIA_TYPE},
            what=f"batch {self._seq}",
        )
        if accepted:
            self.batches_sent += 1
            self.points_sent += len(batch)

    async def _deliver(self, method: str, url: str, *, what: str, **kwargs: object) -> bool:
        backoff = Backoff(initial=self._retry[0], maximum=self._retry[1])
        while True:
            try:
                response = await self._client.request(method, url, **kwargs)  # type: ignore[arg-type]
            except httpx.HTTPError as err:
                delay = backoff.next_delay()
                self._mark_down(f"{type(err).__name__}: {err}")
            else:
                if response.status_code < 300:
                    self._mark_up()
                    return True
                if response.status_code not in _RETRY_STATUS:
                    self.batches_refused += 1
                    logger.error(
                        "platform refused %s (%d): %s", what, response.status_code, response.text
                    )
                    return False
                delay = _retry_after(response) or backoff.next_delay()
                self._mark_down(f"HTTP {response.status_code}")
            await asyncio.sleep(delay)

    def _mark_down(self, reason: str) -> None:
        if not self._down:
            logger.warning("platform unreachable (%s): retrying with backoff", reason)
        self._down = True

    def _mark_up(self) -> None:
        if self._down:
            logger.info("platform reachable again")
        self._down = False

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(300.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None
