"""What every backend's query methods share: argument checks, plans and result tables.

A backend's :meth:`read_buckets`, :meth:`read_at` and :meth:`read_aggregates` check their
arguments here (:func:`plan_buckets`, :func:`plan_at`), fetch the points the plan asks
for, let :mod:`~shopfloor.server.historian.aggregate` compute, and build the Arrow answer
here, so the two backends answer in the same shape with the same errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import PayloadError
from shopfloor.model.points import Int64Array
from shopfloor.server.historian.aggregate import (
    Column,
    Following,
    Points,
    Prior,
    Summary,
    interpolate,
    summarize,
)
from shopfloor.server.historian.base import Aggregate, BucketSize, Interpolation
from shopfloor.server.historian.buckets import Buckets, make_buckets

__all__ = [
    "MAX_CELLS",
    "MAX_POINTS",
    "TS_TYPE",
    "AtPlan",
    "BucketPlan",
    "check_fetched",
    "plan_at",
    "plan_buckets",
    "unique_paths",
]

MAX_CELLS = 2_000_000
"""The most rows one :meth:`read_buckets` or :meth:`read_at` answers (tags x buckets)."""

MAX_POINTS = 20_000_000
"""The most points one query fetches (about 600 MB while it computes); more is refused."""

TS_TYPE = pa.timestamp("ns", tz="UTC")


def check_fetched(count: int) -> None:
    """Refuse a query whose range holds more than :data:`MAX_POINTS` points.

    Backends fetch with ``LIMIT MAX_POINTS + 1`` and call this with what came back.

    Raises:
        PayloadError: too many points (field ``end``: the range is the thing to shrink).
    """
    if count > MAX_POINTS:
        raise PayloadError(
            "end",
            f"the range holds more than {MAX_POINTS} points of these tags: "
            "ask for a shorter range or fewer tags",
        )


def unique_paths(paths: Sequence[str]) -> list[str]:
    """``paths`` without repeats, in the order given.

    Raises:
        PayloadError: ``paths`` is a single string rather than a list of them.
    """
    if isinstance(paths, str):
        raise PayloadError("paths", "must be a list of tag paths, not one string")
    return list(dict.fromkeys(paths))


def _aggregates(aggregates: Sequence[Aggregate | str]) -> list[Aggregate]:
    out: list[Aggregate] = []
    for a in aggregates:
        try:
            out.append(Aggregate(a))
        except ValueError:
            choices = ", ".join(x.value for x in Aggregate)
            raise PayloadError(
                "aggregates", f"unknown aggregate {a!r:.30}; use {choices}"
            ) from None
    return list(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """A checked bucketed query: what to fetch and how to answer.

    Attributes:
        paths: the tags, without repeats, in the order asked.
        start_ns, end_ns: the range.
        buckets: the buckets of the range.
        aggregates: the distinct aggregates, in the order asked.
        dense: every bucket (``read_buckets``) or only those with a usable point.
        prior_last: the last point of any quality before the range is needed (``twa``).
        prior_good: the last usable point before the range is needed (``delta``).
    """

    paths: list[str]
    start_ns: int
    end_ns: int
    buckets: Buckets
    aggregates: list[Aggregate]
    dense: bool

    @property
    def prior_last(self) -> bool:
        """Whether ``twa`` needs the value in force at the start."""
        return Aggregate.TWA in self.aggregates

    @property
    def prior_good(self) -> bool:
        """Whether ``delta`` needs the counter's value before the start."""
        return Aggregate.DELTA in self.aggregates

    @property
    def empty(self) -> bool:
        """Nothing to fetch: no tags or no buckets."""
        return not self.paths or not self.buckets.count

    def summarize(self, points: Points, prior: Prior | None) -> Summary:
        """Compute the plan's aggregates from fetched points (CPU-bound: not on the loop)."""
        return summarize(
            points,
            self.buckets,
            n_tags=len(self.paths),
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            aggregates=self.aggregates,
            prior=prior,
            dense=self.dense,
        )

    def answer(self, points: Points, prior: Prior | None) -> pa.Table:
        """The plan's result table from fetched points."""
        return self.table(self.summarize(points, prior))

    def table(self, summary: Summary) -> pa.Table:
        """The plan's result table from its aggregates (however they were computed)."""
        return self._buckets_table(summary) if self.dense else self._legacy_table(summary)

    def _buckets_table(self, summary: Summary) -> pa.Table:
        nb = max(summary.n_buckets, 1)
        tag = (summary.cells // nb).astype(np.int32)
        arrays: list[pa.Array] = [
            pa.DictionaryArray.from_arrays(
                pa.array(tag, pa.int32()), pa.array(self.paths, pa.string())
            ),
            _ts_array(self.buckets.starts(summary.cells % nb)),
        ]
        names = ["path", "ts"]
        for agg, column in summary.columns.items():
            arrays.append(_arrow(agg, column))
            names.append(agg.value)
        arrays.append(pa.array(summary.bad, pa.int64()))
        names.append("bad")
        return pa.Table.from_arrays(arrays, names=names)

    def _legacy_table(self, summary: Summary) -> pa.Table:
        nb = max(summary.n_buckets, 1)
        arrays = [_ts_array(self.buckets.starts(summary.cells % nb))]
        fields = [pa.field("ts", TS_TYPE)]
        for agg, column in summary.columns.items():
            arrays.append(_arrow(agg, column))
            fields.append(pa.field(agg.value, _arrow_type(agg)))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def empty_answer(self) -> pa.Table:
        """The result of a plan with nothing to fetch."""
        return self.answer(Points.empty(), None)


def plan_buckets(
    paths: Sequence[str],
    start_ns: int,
    end_ns: int,
    *,
    bucket: BucketSize,
    aggregates: Sequence[Aggregate | str],
    tz: str | None = None,
    dense: bool = True,
    field: str = "bucket",
) -> BucketPlan:
    """Check a bucketed query and compute its buckets.

    Raises:
        PayloadError: an unknown aggregate or time zone, a bad bucket, or more than
            :data:`MAX_CELLS` rows for a dense answer.
    """
    names = unique_paths(paths)
    wanted = _aggregates(aggregates)
    buckets = make_buckets(int(start_ns), int(end_ns), bucket, tz=tz, field=field)
    cells = len(names) * buckets.count
    if dense and cells > MAX_CELLS:
        raise PayloadError(
            field,
            f"{buckets.count} buckets for {len(names)} tags make {cells} rows, more than "
            f"{MAX_CELLS}: choose wider buckets, a shorter range or fewer tags",
        )
    return BucketPlan(names, int(start_ns), int(end_ns), buckets, wanted, dense)


@dataclass(frozen=True, slots=True)
class AtPlan:
    """A checked :meth:`read_at` query.

    Attributes:
        paths: the tags, without repeats, in the order asked.
        times: the times asked, in their order (int64 UTC ns).
        method: how to interpolate.
        start_ns, end_ns: the range of points to fetch (the earliest time to just after
            the latest).
    """

    paths: list[str]
    times: Int64Array
    method: Interpolation

    @property
    def start_ns(self) -> int:
        """The earliest time asked."""
        return int(self.times.min())

    @property
    def end_ns(self) -> int:
        """Just after the latest time asked."""
        return int(self.times.max()) + 1

    @property
    def following(self) -> bool:
        """Whether the first usable point after the range is needed (``linear``)."""
        return self.method is Interpolation.LINEAR

    @property
    def empty(self) -> bool:
        """Nothing to fetch: no tags or no times."""
        return not self.paths or not len(self.times)

    def answer(self, points: Points, prior: Prior | None, following: Following | None) -> pa.Table:
        """The result table from fetched points (CPU-bound: not on the loop)."""
        n, m = len(self.paths), len(self.times)
        column = (
            interpolate(
                points,
                n_tags=n,
                times=self.times,
                method=self.method,
                prior=prior,
                following=following,
            )
            if n and m
            else Column(np.zeros(0), np.zeros(0, np.bool_))
        )
        tag = np.repeat(np.arange(n, dtype=np.int32), m)
        return pa.Table.from_arrays(
            [
                pa.DictionaryArray.from_arrays(
                    pa.array(tag, pa.int32()), pa.array(self.paths, pa.string())
                ),
                _ts_array(np.tile(self.times, n)),
                pa.array(column.values, pa.float64(), mask=~column.valid),
            ],
            names=["path", "ts", "value"],
        )


def plan_at(
    paths: Sequence[str],
    times_ns: Sequence[int] | npt.NDArray[np.int64],
    *,
    method: Interpolation | str,
) -> AtPlan:
    """Check a :meth:`read_at` query.

    Raises:
        PayloadError: an unknown method, times that are not integers, or more than
            :data:`MAX_CELLS` values asked for.
    """
    names = unique_paths(paths)
    try:
        chosen = Interpolation(method)
    except ValueError:
        choices = ", ".join(x.value for x in Interpolation)
        raise PayloadError("method", f"unknown method {method!r:.30}; use {choices}") from None
    try:
        times = np.asarray(times_ns)
        if times.size and not np.issubdtype(times.dtype, np.integer):
            raise TypeError(f"got {times.dtype}")
        times = np.ascontiguousarray(times.astype(np.int64).reshape(-1))
    except (TypeError, ValueError, OverflowError) as err:
        raise PayloadError("times", f"must be integer UTC nanoseconds: {err}") from None
    if len(names) * len(times) > MAX_CELLS:
        raise PayloadError(
            "times",
            f"{len(times)} times for {len(names)} tags make more than {MAX_CELLS} values",
        )
    return AtPlan(names, times, chosen)


def _arrow_type(agg: Aggregate) -> pa.DataType:
    return pa.int64() if agg is Aggregate.COUNT else pa.float64()


def _arrow(agg: Aggregate, column: Column) -> pa.Array:
    if agg is Aggregate.COUNT:
        return pa.array(column.values, pa.int64())
    return pa.array(column.values, pa.float64(), mask=~column.valid)


def _ts_array(ts: Int64Array) -> pa.Array:
    # a view reinterprets the int64 buffer; a cast to a zoned timestamp costs real time
    return pa.array(np.asarray(ts, np.int64), pa.int64()).view(TS_TYPE)
