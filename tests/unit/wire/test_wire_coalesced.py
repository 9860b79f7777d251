"""Arrow streams that coalesce several outbox batches, each record batch with its own seq."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch
from shopfloor.model.points import ARROW_SCHEMA
from shopfloor.wire import ARROW_MEDIA_TYPE, decode

T0 = 1_764_000_000 * 10**9


def _stream(records: list[tuple[bytes | None, PointBatch]], metadata: dict[bytes, bytes]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ARROW_SCHEMA.with_metadata(metadata)) as writer:
        for seq, batch in records:
            custom = None if seq is None else {b"seq": seq}
            writer.write_batch(batch.to_arrow(), custom_metadata=custom)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _points(tag: str, *values: float) -> PointBatch:
    return PointBatch.from_points([(tag, T0 + i, v, 0) for i, v in enumerate(values)])


def test_parts_are_split_by_seq_in_stream_order() -> None:
    records = [
        (b"7", _points("a/x", 1.0, 2.0)),
        (b"7", _points("a/y", 3.0)),  # one outbox batch may span record batches
        (b"8", _points("a/x", 4.0)),
    ]
    decoded = decode(
        _stream(records, {b"edge": b"e", b"seq": b"7", b"seqs": b"7,8"}), ARROW_MEDIA_TYPE
    )
    assert (decoded.edge, decoded.seq, len(decoded.batch)) == ("e", 7, 4)
    assert [
        (seq, sorted(part.paths().tolist()), part.value.tolist()) for seq, part in decoded.parts
    ] == [
        (7, ["a/x", "a/x", "a/y"], [1.0, 2.0, 3.0]),
        (8, ["a/x"], [4.0]),
    ]


def test_a_plain_stream_has_no_parts() -> None:
    body = _stream([(None, _points("a/x", 1.0))], {b"edge": b"e", b"seq": b"3"})
    assert decode(body, ARROW_MEDIA_TYPE).parts == ()


@pytest.mark.parametrize(
    ("records", "metadata", "field"),
    [
        ([(b"1", _points("a/x", 1.0)), (None, _points("a/x", 2.0))], {b"seqs": b"1,2"}, "seqs"),
        ([(b"1", _points("a/x", 1.0)), (b"2", _points("a/x", 2.0))], {b"seqs": b"2,1"}, "seqs"),
        (
            [(b"1", _points("a/x", 1.0)), (b"2", _points("a/x", 2.0)), (b"1", _points("a/x", 3.0))],
            {},
            "seqs",
        ),
        ([(b"x", _points("a/x", 1.0))], {}, "seqs"),
        ([(b"4", _points("a/x", 1.0))], {b"seq": b"5"}, "seq"),
    ],
)
def test_inconsistent_seqs_are_refused(
    records: list[tuple[bytes | None, PointBatch]], metadata: dict[bytes, bytes], field: str
) -> None:
    with pytest.raises(PayloadError) as info:
        decode(_stream(records, {b"edge": b"e", **metadata}), ARROW_MEDIA_TYPE)
    assert info.value.field == field
