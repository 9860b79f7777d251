"""Compressed bodies: both encodings round-trip, bombs and garbage are refused early."""

from __future__ import annotations

import gzip
import resource

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch
from shopfloor.wire import (
    ARROW_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    PayloadTooLarge,
    UnsupportedEncoding,
    compress,
    decode,
    decompress,
    encode_arrow,
    encode_json,
)

MIB = 1 << 20


def _batch(n: int = 2000) -> PointBatch:
    rng = np.random.default_rng(5)
    return PointBatch.from_columns(
        ["a/b", "a/c"], np.arange(n) % 2, 1_764_000_000 * 10**9 + np.arange(n), rng.random(n)
    )


def _rows(batch: PointBatch) -> list[tuple[object, ...]]:
    return list(
        zip(
            batch.paths().tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            strict=True,
        )
    )


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
@pytest.mark.parametrize("content_type", [ARROW_MEDIA_TYPE, JSON_MEDIA_TYPE])
def test_compressed_bodies_round_trip(encoding: str, content_type: str) -> None:
    batch = _batch()
    if content_type == ARROW_MEDIA_TYPE:
        plain = encode_arrow(batch, edge="e", seq=3, historical=True)
    else:
        plain = encode_json(batch, edge="e", seq=3, historical=True)
    body = compress(plain, encoding)
    assert len(body) < len(plain)
    decoded = decode(body, content_type, content_encoding=encoding.upper())
    assert (decoded.edge, decoded.seq, decoded.historical) == ("e", 3, True)
    assert _rows(decoded.batch) == _rows(batch)


def test_standard_gzip_from_other_tools_is_read() -> None:
    plain = encode_json(_batch(10), edge="e", seq=1)
    assert decompress(gzip.compress(plain), "gzip", max_bytes=MIB) == plain


def _bomb(encoding: str, size: int) -> bytes:
    """Compress ``size`` zero bytes chunk by chunk, never holding them all in memory."""
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, encoding) as stream:
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            stream.write(chunk)
    data: bytes = sink.getvalue().to_pybytes()
    return data


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_decompression_bomb_is_refused_without_inflating_it(encoding: str) -> None:
    bomb = _bomb(encoding, 256 * MIB)  # under a megabyte on the wire
    assert len(bomb) < MIB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PayloadTooLarge) as info:
        decode(bomb, ARROW_MEDIA_TYPE, max_bytes=4 * MIB, content_encoding=encoding)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert "decompressed body" in info.value.message
    assert grown_kib < 64 * 1024  # far below the 256 MiB the body claims to hold


def test_limit_applies_to_the_decompressed_size_exactly() -> None:
    plain = encode_json(_batch(500), edge="e", seq=1)
    body = compress(plain, "zstd")
    assert decode(body, JSON_MEDIA_TYPE, max_bytes=len(plain), content_encoding="zstd")
    with pytest.raises(PayloadTooLarge):
        decode(body, JSON_MEDIA_TYPE, max_bytes=len(plain) - 1, content_encoding="zstd")


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_truncated_or_garbage_streams_name_the_body(encoding: str) -> None:
    body = compress(encode_arrow(_batch(), edge="e", seq=1), encoding)
    for bad in (body[: len(body) // 2], b"not compressed at all", body + b"trailing junk"):
        with pytest.raises(PayloadError) as info:
            decode(bad, ARROW_MEDIA_TYPE, content_encoding=encoding)
        assert info.value.field == "body"


@pytest.mark.parametrize("header", ["br", "deflate", "gzip, zstd", "compress"])
def test_unknown_content_encoding_is_refused(header: str) -> None:
    with pytest.raises(UnsupportedEncoding) as info:
        decode(b"{}", JSON_MEDIA_TYPE, content_encoding=header)
    assert info.value.field == "content-encoding"


def test_identity_encoding_means_none() -> None:
    body = encode_json(_batch(3), edge="e", seq=1)
    assert decode(body, JSON_MEDIA_TYPE, content_encoding="identity").seq == 1


def _ipc(batch: PointBatch, compression: str | None) -> bytes:
    record = batch.to_arrow()
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, record.schema, options=options) as writer:
        writer.write_batch(record)
    data: bytes = sink.getvalue().to_pybytes()
    return data


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_arrow_buffer_compression_is_read_within_the_limit(codec: str) -> None:
    batch = _batch(5000)
    body = _ipc(batch, codec)
    assert _rows(decode(body, ARROW_MEDIA_TYPE).batch) == _rows(batch)


def test_arrow_buffer_compression_bomb_is_refused_before_arrow_allocates() -> None:
    n = 4 * MIB  # 4 Mi points of zeros: ~100 MiB of buffers that compress to nearly nothing
    batch = PointBatch.from_columns(["a/b"], np.zeros(n), np.zeros(n), np.zeros(n))
    body = _ipc(batch, "zstd")
    assert len(body) < 2 * MIB
    with pytest.raises(PayloadTooLarge) as info:
        decode(body, ARROW_MEDIA_TYPE, max_bytes=2 * MIB)  # Arrow data may reach 4x: 8 MiB
    assert "decompressed Arrow data" in info.value.message


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({}, False), ({b"historical": b"0"}, False), ({b"historical": b"1"}, True)],
)
def test_historical_flag_from_arrow_metadata(metadata: dict[bytes, bytes], expected: bool) -> None:
    record = _batch(3).to_arrow().replace_schema_metadata({b"edge": b"e", **metadata})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    assert decode(sink.getvalue().to_pybytes(), ARROW_MEDIA_TYPE).historical is expected


def test_malformed_historical_flag_is_named() -> None:
    record = _batch(3).to_arrow().replace_schema_metadata({b"historical": b"yes"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    with pytest.raises(PayloadError) as info:
        decode(sink.getvalue().to_pybytes(), ARROW_MEDIA_TYPE)
    assert info.value.field == "historical"
    with pytest.raises(PayloadError) as info:
        decode(b'{"tags": ["a/b"], "ts": [1], "value": [1], "historical": 1}', JSON_MEDIA_TYPE)
    assert info.value.field == "historical"
