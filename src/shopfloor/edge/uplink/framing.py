"""Turn outbox batches into wire-version-1 request bodies (docs/wire.md).

One batch: an Arrow IPC stream whose schema metadata carries ``version``, ``edge``,
``seq`` and ``historical``. Several backlog batches coalesced into one request: the same
stream with one record batch per outbox batch, each carrying its own ``seq`` in the
record batch's custom metadata, and ``seqs`` (comma-separated) in the schema metadata
beside ``seq`` (the first). A platform that applies its ledger per record batch stores
each exactly once. ``outbox`` names the outbox the seqs belong to (see
:mod:`shopfloor.edge.buffer.identity`); an outbox from before ids sends none.

Bodies are compressed for the trip with zstd (pyarrow's codec) or gzip, announced by
``Content-Encoding``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import pyarrow as pa

from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import payload_batches
from shopfloor.model.points import ARROW_SCHEMA
from shopfloor.wire import WIRE_VERSION

__all__ = ["COMPRESSIONS", "compress", "frame"]

COMPRESSIONS = ("zstd", "gzip", "none")
"""Accepted values of ``[uplink] compression``."""


def frame(
    batches: Sequence[StoredBatch], *, edge: str, historical: bool, outbox: str = ""
) -> bytes:
    """Build the request body for one batch, or for several coalesced ones."""
    if not batches:
        raise ValueError("nothing to frame")
    metadata = {
        b"version": str(WIRE_VERSION).encode(),
        b"edge": edge.encode(),
        b"seq": b"%d" % batches[0].seq,
        b"historical": b"1" if historical else b"0",
    }
    if outbox:
        metadata[b"outbox"] = outbox.encode()
    if len(batches) > 1:
        metadata[b"seqs"] = ",".join(str(b.seq) for b in batches).encode()
    schema = ARROW_SCHEMA.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for stored in batches:
            custom = {b"seq": b"%d" % stored.seq} if len(batches) > 1 else None
            for record in payload_batches(stored.payload):
                writer.write_batch(record.replace_schema_metadata(metadata), custom_metadata=custom)
    body: bytes = sink.getvalue().to_pybytes()
    return body


_ZSTD = pa.Codec("zstd", compression_level=3) if pa.Codec.is_available("zstd") else None


def compress(body: bytes, method: str) -> tuple[bytes, str | None]:
    """Compress ``body``; return it with the ``Content-Encoding`` to send (None: none)."""
    if method == "zstd":
        if _ZSTD is None:  # pragma: no cover - every pyarrow wheel has zstd
            raise RuntimeError("this pyarrow build has no zstd codec")
        data: bytes = _ZSTD.compress(body, asbytes=True)
        return data, "zstd"
    if method == "gzip":
        return gzip.compress(body, compresslevel=1), "gzip"
    return body, None
