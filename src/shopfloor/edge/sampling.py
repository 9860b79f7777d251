"""The one place where raw readings become reported points.

Connectors hand over raw values as read from the device; the sampler applies each tag's
linear scaling, then report-by-exception: a point goes on only when its value moved by
more than the tag's deadband, its quality changed, or the tag has been silent for
``max_silence`` (a heartbeat, so a flat line is still known to be alive). Unchanged
values cost nothing on the wire or on disk.

Everything is columnar. Points of the same tag inside one batch are handled in rounds
(first occurrence of every tag, then the second, …), so each round is one set of numpy
operations whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.edge.mapping import TagSpec
from shopfloor.model import PointBatch, Quality


class Sampler:
    """Scaling and report-by-exception for a set of tags.

    Tags the sampler was not told about (metrics a Sparkplug node announces later, say)
    are passed with scale 1, offset 0 and deadband 0.
    """

    def __init__(self, specs: Iterable[TagSpec] = (), *, default_max_silence_ns: int = 0) -> None:
        self._index: dict[str, int] = {}
        self._scale = np.ones(0)
        self._offset = np.zeros(0)
        self._deadband = np.zeros(0)
        self._max_silence = np.zeros(0, dtype=np.int64)
        self._last_value = np.zeros(0)
        self._last_quality = np.zeros(0, dtype=np.uint32)
        self._last_ts = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._last_text: dict[int, str | None] = {}
        self._default_silence = default_max_silence_ns
        self.points_in = 0
        self.points_out = 0
        self.add(specs)

    def add(self, specs: Iterable[TagSpec]) -> None:
        """Add or replace tags."""
        new = [s for s in specs]
        if not new:
            return
        fresh = [s for s in new if s.path not in self._index]
        grow = len(fresh)
        if grow:
            for s in fresh:
                self._index[s.path] = len(self._index)
            self._scale = np.concatenate([self._scale, np.ones(grow)])
            self._offset = np.concatenate([self._offset, np.zeros(grow)])
            self._deadband = np.concatenate([self._deadband, np.zeros(grow)])
            self._max_silence = np.concatenate(
                [self._max_silence, np.full(grow, self._default_silence, dtype=np.int64)]
            )
            self._last_value = np.concatenate([self._last_value, np.full(grow, np.nan)])
            self._last_quality = np.concatenate([self._last_quality, np.zeros(grow, np.uint32)])
            self._last_ts = np.concatenate([self._last_ts, np.zeros(grow, np.int64)])
            self._seen = np.concatenate([self._seen, np.zeros(grow, dtype=bool)])
        for s in new:
            i = self._index[s.path]
            self._scale[i] = s.scale
            self._offset[i] = s.offset
            self._deadband[i] = s.deadband
            self._max_silence[i] = s.max_silence_ns

    def paths(self) -> list[str]:
        """Every tag the sampler knows, configured or discovered."""
        return list(self._index)

    def _lookup(self, tags: Sequence[str]) -> npt.NDArray[np.intp]:
        missing = [
            TagSpec(path=t, max_silence_ns=self._default_silence)
            for t in tags
            if t not in self._index
        ]
        if missing:
            self.add(missing)
        return np.fromiter((self._index[t] for t in tags), dtype=np.intp, count=len(tags))

    def process(self, batch: PointBatch) -> PointBatch:
        """Scale ``batch`` and keep only the points worth reporting (in time order per tag)."""
        n = len(batch)
        self.points_in += n
        if n == 0:
            return batch
        order = np.lexsort((batch.ts, batch.tag_index))
        batch = _take(batch, order)
        ids = self._lookup(batch.tags)[batch.tag_index]
        value = batch.value * self._scale[ids] + self._offset[ids]
        keep = np.zeros(n, dtype=bool)
        # occurrence rank of each point within its tag: 0 for the first, 1 for the second …
        starts = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
        run_len = np.diff(np.r_[starts, n])
        rank = np.arange(n) - np.repeat(starts, run_len)
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            self._decide(sel, ids[sel], value, batch, keep)
        if batch.text is not None:
            self._decide_text(ids, batch, keep)
        self.points_out += int(keep.sum())
        scaled = PointBatch(
            tags=batch.tags,
            tag_index=batch.tag_index,
            ts=batch.ts,
            value=value,
            quality=batch.quality,
            text=batch.text,
        )
        return scaled.select(keep)

    def _decide(
        self,
        sel: npt.NDArray[np.intp],
        ids: npt.NDArray[np.intp],
        value: npt.NDArray[np.float64],
        batch: PointBatch,
        keep: npt.NDArray[np.bool_],
    ) -> None:
        v = value[sel]
        q = batch.quality[sel]
        ts = batch.ts[sel]
        last = self._last_value[ids]
        with np.errstate(invalid="ignore"):
            moved = np.abs(v - last) > self._deadband[ids]
        nan_changed = np.isnan(v) != np.isnan(last)
        silent = self._max_silence[ids]
        heartbeat = (silent > 0) & (ts - self._last_ts[ids] >= silent)
        report = ~self._seen[ids] | moved | nan_changed | (q != self._last_quality[ids]) | heartbeat
        has_text = np.zeros(len(sel), dtype=bool)
        if batch.text is not None:
            has_text = batch.text.is_valid().to_numpy(zero_copy_only=False)[sel]
        report &= ~has_text  # text points are decided separately
        keep[sel] = report
        chosen = ids[report]
        self._last_value[chosen] = v[report]
        self._last_quality[chosen] = q[report]
        self._last_ts[chosen] = ts[report]
        self._seen[chosen] = True

    def _decide_text(
        self, ids: npt.NDArray[np.intp], batch: PointBatch, keep: npt.NDArray[np.bool_]
    ) -> None:
        assert batch.text is not None
        valid = np.flatnonzero(batch.text.is_valid().to_numpy(zero_copy_only=False))
        texts = batch.text.to_pylist()
        for i in valid:  # text tags are rare and slow-changing: one Python step each is fine
            tag = int(ids[i])
            silent = int(self._max_silence[tag])
            heartbeat = silent > 0 and int(batch.ts[i]) - int(self._last_ts[tag]) >= silent
            quality = int(batch.quality[i])
            if (
                not self._seen[tag]
                or self._last_text.get(tag) != texts[i]
                or quality != int(self._last_quality[tag])
                or heartbeat
            ):
                keep[i] = True
                self._last_text[tag] = texts[i]
                self._last_quality[tag] = quality
                self._last_ts[tag] = batch.ts[i]
                self._seen[tag] = True

    def mark_bad(
        self, paths: Sequence[str], *, ts_ns: int, quality: int = Quality.BAD_NOT_CONNECTED
    ) -> PointBatch:
        """Points of Bad ``quality`` for the tags in ``paths`` whose quality was not already it.

        Called when a device stops answering, so its tags turn Bad on the dashboard once,
        not on every retry.
        """
        ids = self._lookup(list(paths))
        fresh = self._last_quality[ids] != quality
        chosen = ids[fresh]
        self._last_quality[chosen] = quality
        self._last_value[chosen] = np.nan
        self._last_ts[chosen] = ts_ns
        self._seen[chosen] = True
        for c in chosen:
            self._last_text.pop(int(c), None)
        n = int(fresh.sum())
        return PointBatch.from_columns(
            [p for p, f in zip(paths, fresh, strict=True) if f],
            np.arange(n),
            np.full(n, ts_ns, dtype=np.int64),
            np.full(n, np.nan),
            np.full(n, quality, dtype=np.uint32),
        )


def _take(batch: PointBatch, order: npt.NDArray[np.intp]) -> PointBatch:
    return PointBatch(
        tags=batch.tags,
        tag_index=batch.tag_index[order],
        ts=batch.ts[order],
        value=batch.value[order],
        quality=batch.quality[order],
        text=None if batch.text is None else batch.text.take(pa.array(order)),
    )
