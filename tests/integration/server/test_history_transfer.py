"""Export to Parquet/CSV and import back, on both historian backends.

Expected values come from the numpy arrays the test wrote, never from the code under
test; the CSV files to import are written by Python's own csv module.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.server.historian.import_csv import ImportOptions, file_sha256, read_import
from shopfloor.server.historian.transfer import (
    already_imported,
    export_history,
    match_tags,
    store_import,
)
from shopfloor.testing.postgres import PostgresServer

from .history_backends import Backend

SECOND = 10**9
T0 = 1_718_000_000 * SECOND + 123_456_789  # nanoseconds that must survive every format
END = 2**63 - 1


def sample() -> PointBatch:
    """Three tags: numbers with NaN and Bad points, a text tag, and five points at one time."""
    rng = np.random.default_rng(7)
    n = 40
    ts = T0 + np.arange(n) * SECOND + rng.integers(0, 1000, n)
    same_time = np.full(5, T0 + 1000 * SECOND)
    value = rng.normal(50, 10, n)
    value[3] = np.nan
    quality = np.where(np.arange(n) % 7 == 0, int(Quality.BAD_SENSOR_FAILURE), 0)
    temp = PointBatch.from_columns(["plant/l1/temp"], np.zeros(n), ts, value, quality)
    counts = PointBatch.from_columns(
        ["plant/l2/count"], np.zeros(5), same_time, np.arange(5, dtype=float)
    )
    state = PointBatch.from_points(
        [("plant/l1/state", int(t), s, 0) for t, s in zip(ts[:6], "abcab,", strict=False)]
    )
    return PointBatch.concat([temp, counts, state])


Row = tuple[int, str, int, str | None]


def row(t: object, v: object, q: object, x: object) -> Row:
    """A point as a comparable tuple (the value as its repr: NaN equals NaN)."""
    return (int(t), repr(float(v)), int(q), x)  # type: ignore[call-overload, arg-type]


def expected(batch: PointBatch, path: str) -> list[Row]:
    """One tag's points as sorted tuples, from the batch the test wrote."""
    mask = batch.paths() == path
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    rows = [
        row(t, v, q, x)
        for t, v, q, x, m in zip(batch.ts, batch.value, batch.quality, texts, mask, strict=True)
        if m
    ]
    return sorted(rows, key=repr)


async def stored(h: object, path: str) -> list[Row]:
    table = await h.read_raw(path, -(2**62), END, limit=10**7)  # type: ignore[attr-defined]
    cells = zip(
        table.column("ts").cast("int64").to_pylist(),
        table.column("value").to_pylist(),
        table.column("quality").to_pylist(),
        table.column("text").to_pylist(),
        strict=True,
    )
    return sorted((row(*r) for r in cells), key=repr)


TAGS = ("plant/l1/state", "plant/l1/temp", "plant/l2/count")


class TransferSuite:
    """The same assertions over each backend's ``backend`` fixture."""

    @pytest.mark.parametrize("fmt", ["parquet", "csv"])
    async def test_export_then_import_gives_back_every_point(
        self, backend: Backend, tmp_path: Path, fmt: str
    ) -> None:
        data = sample()
        h = backend.historian()
        await h.start()
        try:
            await h.register_tags([TagMeta("plant/l1/state", data_type=DataType.STRING)])
            await h.write(data)
            await h.flush()
            paths = match_tags(["plant/l1", "plant/l?/count"], [m.path for m in await h.tags()])
            assert paths == list(TAGS)
            out = tmp_path / f"history.{fmt}"
            # chunks of 3: the five points at one time must be read in one piece
            summary = await export_history(
                h,
                paths,
                start_ns=0,
                end_ns=END,
                out=out,
                fmt=fmt,
                chunk_rows=3,  # type: ignore[arg-type]
            )
        finally:
            await h.close()
        assert (summary.tags, summary.points) == (3, len(data))
        assert sorted(os.listdir(tmp_path)) == sorted(
            [out.name, "data"][: 2 if backend.path else 1]
        )
        if fmt == "parquet":
            table = pq.read_table(out)
            assert str(table.schema.field("ts").type) == "timestamp[ns, tz=UTC]"
            for path in TAGS:
                picked = table.filter(table.column("path").to_numpy(zero_copy_only=False) == path)
                got = zip(
                    picked.column("ts").cast("int64").to_pylist(),
                    picked.column("value").to_pylist(),
                    picked.column("quality").to_pylist(),
                    picked.column("text").to_pylist(),
                    strict=True,
                )
                assert sorted((row(*r) for r in got), key=repr) == expected(data, path)
            return
        # the CSV goes back in through the importer, into an empty historian
        backend.wipe()
        h = backend.historian()
        await h.start()
        try:
            await h.register_tags([TagMeta("plant/l1/state", data_type=DataType.STRING)])
            known = {m.path: m for m in await h.tags()}
            plan = read_import(out, tags=known, options=ImportOptions(create_tags=True))
            assert plan.layout == "long"
            assert plan.rejected == []
            assert plan.fatal == []
            receipt = await store_import(h, plan.batch, sha256=file_sha256(out))
            assert receipt.accepted == len(data)
            for path in TAGS:
                assert await stored(h, path) == expected(data, path)
        finally:
            await h.close()

    async def test_a_large_import_is_one_commit_stored_exactly_once(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        # a wide file as a SCADA export writes it: 200 000 times x 5 tags = 1 000 000 points
        rows, tags = 200_000, [f"plant/line/m{i}" for i in range(5)]
        rng = np.random.default_rng(3)
        ts = T0 + np.arange(rows, dtype=np.int64) * SECOND
        values = np.round(rng.normal(20, 5, (rows, len(tags))), 3)
        iso = np.datetime_as_string(ts.astype("datetime64[ns]"), unit="ns", timezone="UTC")
        file = tmp_path / "big.csv"
        table = {"time": iso, **{t: values[:, i] for i, t in enumerate(tags)}}
        pcsv.write_csv(pa.table(table), file, pcsv.WriteOptions(quoting_style="none"))
        sha = file_sha256(file)
        h = backend.historian()
        await h.start()
        try:
            plan = read_import(
                file, tags={}, options=ImportOptions(layout="wide", create_tags=True)
            )
            assert plan.rejected == []
            assert len(plan.batch) == rows * len(tags)
            assert not already_imported(h, sha)
            first = await store_import(h, plan.batch, sha256=sha)
            again = await store_import(h, plan.batch, sha256=sha)
            assert (first.accepted, first.duplicate) == (rows * len(tags), False)
            assert (again.accepted, again.duplicate) == (0, True)
        finally:
            await h.close()
        h = backend.historian()  # after a restart the file is still known
        await h.start()
        try:
            assert already_imported(h, sha)
            assert (await store_import(h, plan.batch, sha256=sha)).duplicate
            for i, tag in enumerate(tags):
                got = await h.read_raw(tag, 0, END, limit=10**7)
                np.testing.assert_array_equal(got.column("ts").cast("int64").to_numpy(), ts)
                np.testing.assert_array_equal(got.column("value").to_numpy(), values[:, i])
        finally:
            await h.close()

    async def test_nothing_is_stored_from_a_file_with_rejected_rows(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        file = tmp_path / "long.csv"
        with file.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "ts", "value", "quality"])
            w.writerow(["plant/a", "2024-01-01T00:00:00Z", "1.5", "0"])
            w.writerow(["plant/a", "2024-01-01T00:00:01Z", "oops", "0"])
        h = backend.historian()
        await h.start()
        try:
            plan = read_import(file, tags={}, options=ImportOptions(create_tags=True))
            assert [(p.line, p.column) for p in plan.rejected] == [(3, "value")]
            # the caller refuses the file: nothing reached the historian
            assert [m.path for m in await h.tags()] == []
        finally:
            await h.close()


class TestDuckDB(TransferSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend("duckdb", path=tmp_path / "data" / "history.duckdb")


class TestPostgres(TransferSuite):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer) -> Iterator[Backend]:
        dsn = postgres_server.create_database()
        yield Backend("postgres", dsn=dsn)
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])
