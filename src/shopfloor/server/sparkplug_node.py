"""The platform's tags as a Sparkplug B edge node, for Ignition or any host application.

One device per equipment (its id: the equipment's name, or its path within the site
with ``.`` where names repeat), one metric per tag with its unit, range and description
in the births. Live values (not backlog batches) go out as report-by-exception DDATA.
A tag first seen after the births makes the node publish its births anew (at most every
10 s), as Sparkplug requires every metric to be born. The session machinery — bdSeq,
NDEATH will, Rebirth command, primary host STATE — is :class:`EdgeNode`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.sparkplug_node import SparkplugNodeSection
from shopfloor.errors import ShopfloorError
from shopfloor.model import LiveBatch, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.sparkplug.node import SP_TYPES, EdgeNode, MetricEntry

__all__ = ["PlatformSparkplugNode", "device_ids", "metric_entries"]

logger = logging.getLogger(__name__)

REBIRTH_EVERY_S = 10.0


def device_ids(assets: Sequence[str]) -> dict[str, str]:
    """A Sparkplug device id per asset path: its last segment, or, where two assets share
    it, the path below the site with ``.`` between segments."""
    last = [a.rsplit("/", 1)[-1] for a in assets]
    return {
        a: name if last.count(name) == 1 else ".".join(a.split("/")[2:]) or name
        for a, name in zip(assets, last, strict=True)
    }


def metric_entries(metas: Sequence[TagMeta]) -> list[MetricEntry]:
    """One metric per tag, by device, aliases from 1."""
    ordered = sorted(metas, key=lambda m: m.path)
    devices = device_ids(list(dict.fromkeys(m.asset or m.path for m in ordered)))
    return [
        MetricEntry(
            meta=m,
            device=devices[m.asset or m.path],
            name=m.name,
            alias=i + 1,
            datatype=SP_TYPES[m.data_type],
            position=i,
        )
        for i, m in enumerate(ordered)
    ]


class PlatformSparkplugNode(EdgeNode):
    """Publishes ``live`` values of the tags ``metadata`` names.

    Args:
        settings: the ``[sparkplug_node]`` section (enabled).
        live: the live channel.
        metadata: every tag's metadata (called at start and when a new tag appears).
    """

    def __init__(
        self,
        settings: SparkplugNodeSection,
        live: Channel[LiveBatch],
        metadata: Callable[[], Awaitable[Sequence[TagMeta]]],
    ) -> None:
        super().__init__(
            [],
            host=settings.host,
            port=settings.broker_port,
            group_id=settings.group_id,
            node_id=settings.node_id,
            username=settings.username,
            password=settings.password(),
            tls_context=settings.ssl_context() if settings.tls is not None else None,
            primary_host_id=settings.primary_host_id,
            keepalive_s=max(1, round(parse_duration_s(settings.keepalive))),
        )
        self._live = live
        self._metadata = metadata
        self._positions: dict[str, int] = {}
        self._unknown: set[str] = set()
        self._reborn_at = 0.0

    async def run(self) -> None:
        """Publish until cancelled (then NDEATH)."""
        await self._load(await self._metadata())
        try:
            async with self._live.subscribe("sparkplug-node") as values:
                await self.start_session()
                async for item in values:
                    if not item.historical:
                        await self._take(item)
        finally:
            await self.stop()

    async def _load(self, metas: Sequence[TagMeta]) -> None:
        known = {m.path: m for m in metas}
        for path in self._unknown - set(known):
            known[path] = TagMeta(path)
        entries = metric_entries(list(known.values()))
        self.set_entries(entries)
        self._positions = {e.meta.path: e.position for e in entries}
        self._unknown.clear()

    async def _take(self, live: LiveBatch) -> None:
        batch = live.batch
        positions = np.array([self._positions.get(t, -1) for t in batch.tags], np.intp)
        if (positions < 0).any():
            self._unknown.update(t for t, p in zip(batch.tags, positions, strict=True) if p < 0)
            if time.monotonic() - self._reborn_at >= REBIRTH_EVERY_S:
                self._reborn_at = time.monotonic()
                with contextlib.suppress(ShopfloorError):  # metadata is best effort here
                    await self._load(await self._metadata())
                await self.rebirth()
                positions = np.array([self._positions.get(t, -1) for t in batch.tags], np.intp)
        at = positions[batch.tag_index]
        keep = np.flatnonzero(at >= 0)
        keep = keep[np.argsort(batch.ts[keep], kind="stable")]
        newest_first = keep[::-1]
        _, first = np.unique(at[newest_first], return_index=True)  # each tag's newest point
        keep = newest_first[first]
        self.set_values(at[keep], batch.value[keep], batch.quality[keep], batch.ts[keep])
        await self.publish_changes()
        await asyncio.sleep(0)
