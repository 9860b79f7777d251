"""What readers may see without touching DuckDB: the tag catalog and every tag's last value.

Both are immutable. The writer builds new ones beside the old and swaps them in, in one
assignment, only after DuckDB's commit returned, so readers never see uncommitted tags or
values and never a half-updated snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import UnknownTagError
from shopfloor.model import TagMeta
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.server.historian import schema

__all__ = ["LatestValues", "ObjectArray", "Snapshot", "TagCatalog"]

ObjectArray = npt.NDArray[np.object_]


class TagCatalog:
    """Known tags: path to id and path to metadata. Immutable; replaced on change."""

    def __init__(self, ids: Mapping[str, int], metas: Mapping[str, TagMeta]) -> None:
        self.ids: Mapping[str, int] = ids
        self.metas: Mapping[str, TagMeta] = metas
        self.next_id = max(ids.values(), default=0) + 1

    @cached_property
    def sorted_paths(self) -> list[str]:
        """Every known path in sort order (computed once per catalog)."""
        return sorted(self.ids)

    @cached_property
    def sorted_ids(self) -> npt.NDArray[np.int64]:
        """The ids of :attr:`sorted_paths`, in the same order."""
        return np.fromiter((self.ids[p] for p in self.sorted_paths), np.int64, len(self.ids))

    @cached_property
    def sorted_paths_arrow(self) -> pa.StringArray:
        """:attr:`sorted_paths` as an Arrow array, so latest() need not rebuild it."""
        return pa.array(self.sorted_paths, type=pa.string())

    def id_of(self, path: str) -> int:
        """The id of ``path``.

        Raises:
            UnknownTagError: no such tag.
        """
        try:
            return int(self.ids[path])
        except KeyError:
            raise UnknownTagError(path) from None

    def ids_of(self, paths: Sequence[str]) -> npt.NDArray[np.int64]:
        """The ids of ``paths``, in their order.

        Raises:
            UnknownTagError: the first path that is no tag.
        """
        return np.fromiter((self.id_of(p) for p in paths), dtype=np.int64, count=len(paths))

    def with_tags(self, ids: Mapping[str, int], metas: Mapping[str, TagMeta]) -> TagCatalog:
        """Return a catalog with ``ids`` and ``metas`` added or replaced."""
        return TagCatalog({**self.ids, **ids}, {**self.metas, **metas})


class LatestValues:
    """The last point of every tag, as dense arrays indexed by tag id. Immutable."""

    def __init__(
        self,
        has: npt.NDArray[np.bool_],
        ts: Int64Array,
        value: Float64Array,
        quality: UInt32Array,
        text: ObjectArray,
    ) -> None:
        self.has = has
        self.ts = ts
        self.value = value
        self.quality = quality
        self.text = text

    @classmethod
    def empty(cls, size: int) -> LatestValues:
        """Return values for ids below ``size``, none of which has a point yet."""
        return cls(
            np.zeros(size, dtype=np.bool_),
            np.zeros(size, dtype=np.int64),
            np.full(size, np.nan),
            np.zeros(size, dtype=np.uint32),
            np.full(size, None, dtype=object),
        )

    def grown(self, size: int) -> LatestValues:
        """Return a copy with room for ids below ``size`` (the arrays are copied either way)."""
        size = max(size, len(self.has))
        out = LatestValues.empty(size)
        n = len(self.has)
        out.has[:n] = self.has
        out.ts[:n] = self.ts
        out.value[:n] = self.value
        out.quality[:n] = self.quality
        out.text[:n] = self.text
        return out

    def newer(self, tag_id: Int32Array, ts: Int64Array) -> npt.NDArray[np.bool_]:
        """Mask of candidates at least as new as what is stored (a tie goes to the newcomer)."""
        mask: npt.NDArray[np.bool_] = ~self.has[tag_id] | (ts >= self.ts[tag_id])
        return mask


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What readers may see: committed tags and committed last values, swapped together."""

    catalog: TagCatalog
    latest: LatestValues

    def latest_table(self, paths: Sequence[str] | None = None) -> pa.Table:
        """The last committed point of every tag, or of ``paths`` in the order given, as
        :data:`~.schema.LATEST_SCHEMA`; tags without points are left out.

        Raises:
            UnknownTagError: one of ``paths`` names no committed tag.
        """
        catalog, values = self.catalog, self.latest
        if paths is None:
            ids = catalog.sorted_ids
            names = catalog.sorted_paths_arrow
        else:
            ids = catalog.ids_of(paths)
            names = pa.array(paths, type=pa.string())
        keep = values.has[ids]
        ids = ids[keep]
        return pa.Table.from_arrays(
            [
                names.filter(pa.array(keep)),
                pa.array(values.ts[ids], type=pa.int64()).view(schema.TS_TYPE),
                pa.array(values.value[ids], type=pa.float64()),
                pa.array(values.quality[ids], type=pa.uint32()),
                pa.array(values.text[ids], type=pa.string()),
            ],
            schema=schema.LATEST_SCHEMA,
        )
