"""Outbox payloads become wire-version-1 bodies the platform's own decoder reads back."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import decode_payload, encode_payload
from shopfloor.edge.uplink.framing import compress, frame
from shopfloor.edge.uplink.http import Verdict, classify
from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch
from shopfloor.wire import ARROW_MEDIA_TYPE, decode

ARROW = ARROW_MEDIA_TYPE

T0 = 1_764_000_000_000_000_000


def batch(tag: str, n: int, t0: int = T0) -> PointBatch:
    return PointBatch.from_points([(tag, t0 + i, float(i), 0) for i in range(n)])


def stored(seq: int, b: PointBatch) -> StoredBatch:
    return StoredBatch(seq=seq, points=len(b), appended_ns=0, payload=encode_payload(b))


def test_payload_round_trip_keeps_every_column() -> None:
    original = PointBatch.from_points(
        [
            ("a/b/c", T0, 1.5, 0),
            ("a/b/d", T0 + 1, "RUNNING", 0x80000000),
            ("a/b/c", T0 + 2, None, 0),
        ]
    )
    back = decode_payload(encode_payload(original))
    assert list(back.paths()) == ["a/b/c", "a/b/d", "a/b/c"]
    assert back.ts.tolist() == [T0, T0 + 1, T0 + 2]
    np.testing.assert_array_equal(back.value, original.value)
    assert back.quality.tolist() == [0, 0x80000000, 0]
    assert back.text is not None
    assert back.text.to_pylist() == [None, "RUNNING", None]


@pytest.mark.parametrize("historical", [False, True])
def test_one_batch_carries_edge_seq_and_historical(historical: bool) -> None:
    body = frame([stored(42, batch("p/q/r", 5))], edge="edge-9", historical=historical)
    decoded = decode(body, ARROW_MEDIA_TYPE)
    assert (decoded.edge, decoded.seq, len(decoded.batch)) == ("edge-9", 42, 5)
    assert decoded.historical is historical


def test_coalesced_batches_carry_each_seq_and_all_points() -> None:
    parts = [stored(7, batch("x/y/a", 3)), stored(8, batch("x/y/b", 2, T0 + 10))]
    body = frame(parts, edge="e", historical=True)
    decoded = decode(body, ARROW_MEDIA_TYPE)
    assert decoded.seq == 7
    assert len(decoded.batch) == 5
    reader = pa.ipc.open_stream(body)
    assert reader.schema.metadata[b"seqs"] == b"7,8"
    seqs = []
    while True:
        try:
            record, custom = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        seqs.append((int(custom[b"seq"]), record.num_rows))
    assert seqs == [(7, 3), (8, 2)]


def test_compressed_bodies_decompress_to_the_same_bytes() -> None:
    body = frame([stored(1, batch("a/b/c", 1000))], edge="e", historical=False)
    zstd, encoding = compress(body, "zstd")
    assert encoding == "zstd"
    assert len(zstd) < len(body) / 2
    assert pa.CompressedInputStream(pa.BufferReader(zstd), "zstd").read() == body
    gz, encoding = compress(body, "gzip")
    assert encoding == "gzip"
    assert gzip.decompress(gz) == body
    assert compress(body, "none") == (body, None)


@pytest.mark.parametrize(
    ("status", "headers", "body", "verdict", "retry_after"),
    [
        (200, {}, b'{"accepted": 5, "duplicate": false}', Verdict.ACKED, None),
        (200, {}, b'{"accepted": 0, "duplicate": true}', Verdict.DUPLICATE, None),
        (429, {"retry-after": "2.5"}, b"", Verdict.RETRY_LATER, 2.5),
        (503, {"retry-after": "99999"}, b"", Verdict.RETRY_LATER, 300.0),
        (503, {}, b"", Verdict.RETRY_LATER, None),
        (400, {}, b'{"error": {"field": "body"}}', Verdict.REFUSED, None),
        (413, {}, b"", Verdict.REFUSED, None),
        (415, {}, b"", Verdict.REFUSED, None),
        (422, {}, b'{"error": {"field": "ts"}}', Verdict.REFUSED, None),
        (401, {}, b"", Verdict.UNAUTHORIZED, None),
        (403, {}, b"", Verdict.UNAUTHORIZED, None),
        (404, {}, b"not here", Verdict.UNAVAILABLE, None),
        (500, {}, b"", Verdict.UNAVAILABLE, None),
        (502, {"retry-after": "bogus"}, b"", Verdict.UNAVAILABLE, None),
    ],
)
def test_answers_are_classified_per_the_contract(
    status: int, headers: dict[str, str], body: bytes, verdict: Verdict, retry_after: float | None
) -> None:
    answer = classify(status, headers, body)
    assert answer.verdict is verdict
    assert answer.retry_after_s == retry_after
    assert answer.committed is (verdict in (Verdict.ACKED, Verdict.DUPLICATE))


def test_the_outbox_id_travels_with_the_batch_and_a_bad_one_is_refused() -> None:
    one = stored(3, batch("a/b", 2))
    decoded = decode(frame([one], edge="e-1", historical=False, outbox="0123456789abcdef"), ARROW)
    assert (decoded.edge, decoded.outbox, decoded.seq) == ("e-1", "0123456789abcdef", 3)
    assert decode(frame([one], edge="e-1", historical=False), ARROW).outbox is None
    with pytest.raises(PayloadError) as info:
        decode(frame([one], edge="e-1", historical=False, outbox="../../etc"), ARROW)
    assert info.value.field == "outbox"
