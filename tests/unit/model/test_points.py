"""PointBatch: the columnar type every stage relies on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.model import PointBatch, Quality, is_bad, is_good


def test_from_points_types_values_and_text() -> None:
    batch = PointBatch.from_points(
        [
            ("a/b/temp", 1, 21.5, Quality.GOOD),
            ("a/b/state", 2, "RUNNING", Quality.GOOD),
            ("a/b/temp", 3, True, Quality.BAD_NOT_CONNECTED),
            ("a/b/temp", 4, None, Quality.UNCERTAIN),
        ]
    )
    assert batch.tags == ("a/b/temp", "a/b/state")
    assert list(batch.paths()) == ["a/b/temp", "a/b/state", "a/b/temp", "a/b/temp"]
    assert batch.value[0] == 21.5
    assert np.isnan(batch.value[1])
    assert batch.value[2] == 1.0
    assert np.isnan(batch.value[3])
    assert batch.text is not None
    assert batch.text.to_pylist() == [None, "RUNNING", None, None]
    assert list(is_good(batch.quality)) == [True, True, False, False]
    assert list(is_bad(batch.quality)) == [False, False, True, False]


def test_arrow_round_trip_shares_numeric_buffers() -> None:
    n = 10_000
    batch = PointBatch.from_columns(
        ["x/t1", "x/t2"],
        np.arange(n) % 2,
        np.arange(n, dtype=np.int64) * 1_000_000_000,
        np.linspace(0, 1, n),
        np.zeros(n),
    )
    rb = batch.to_arrow()
    assert rb.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    # zero-copy: the Arrow value buffer is the numpy buffer
    assert rb.column("value").buffers()[1].address == batch.value.ctypes.data
    back = PointBatch.from_arrow(rb)
    assert back.tags == batch.tags
    np.testing.assert_array_equal(back.ts, batch.ts)
    np.testing.assert_array_equal(back.value, batch.value)
    np.testing.assert_array_equal(back.tag_index, batch.tag_index)
    assert back.value.ctypes.data == batch.value.ctypes.data


def test_from_arrow_accepts_plain_string_tags_and_names_bad_columns() -> None:
    table = pa.table(
        {
            "tag": ["a", "b", "a"],
            "ts": pa.array([1, 2, 3], pa.int64()),
            "value": [1.0, 2.0, 3.0],
            "quality": pa.array([0, 0, 0], pa.uint32()),
        }
    )
    batch = PointBatch.from_arrow(table)
    assert list(batch.paths()) == ["a", "b", "a"]
    with pytest.raises(ValueError, match="quality is missing"):
        PointBatch.from_arrow(table.drop_columns(["quality"]))
    with pytest.raises(ValueError, match="ts has nulls"):
        PointBatch.from_arrow(table.set_column(1, "ts", pa.array([1, None, 3], pa.int64())))


def test_concat_merges_dictionaries_and_text() -> None:
    a = PointBatch.from_points([("t1", 1, 1.0, 0), ("t2", 1, 2.0, 0)])
    b = PointBatch.from_points([("t2", 2, "x", 0), ("t3", 2, 3.0, 0)])
    c = PointBatch.concat([a, PointBatch.empty(), b])
    assert list(c.paths()) == ["t1", "t2", "t2", "t3"]
    assert c.text is not None
    assert c.text.to_pylist() == [None, None, "x", None]
    assert len(c.select(c.value > 1.5)) == 2


def test_mismatched_columns_are_rejected() -> None:
    with pytest.raises(ValueError, match="value has 1 rows"):
        PointBatch.from_columns(["a"], [0, 0], [1, 2], [1.0], [0, 0])
    with pytest.raises(ValueError, match="outside tags"):
        PointBatch.from_columns(["a"], [0, 1], [1, 2], [1.0, 2.0], [0, 0])
