"""How a batch is kept in the outbox: an Arrow IPC stream without wire metadata.

The wire metadata (edge, seq, historical) is added when the batch is sent, because
``historical`` depends on when it leaves, not on when it arrived.
"""

from __future__ import annotations

import pyarrow as pa

from shopfloor.model import PointBatch
from shopfloor.model.points import ARROW_SCHEMA

__all__ = ["decode_payload", "encode_payload", "payload_batches"]


def encode_payload(batch: PointBatch) -> bytes:
    """Encode ``batch`` as an Arrow IPC stream in :data:`ARROW_SCHEMA` (no metadata)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ARROW_SCHEMA) as writer:
        writer.write_batch(batch.to_arrow())
    data: bytes = sink.getvalue().to_pybytes()
    return data


def payload_batches(payload: bytes) -> list[pa.RecordBatch]:
    """The record batches of a stored payload (zero-copy views of ``payload``)."""
    return list(pa.ipc.open_stream(pa.py_buffer(payload)))


def decode_payload(payload: bytes) -> PointBatch:
    """Turn a stored payload back into a :class:`PointBatch`."""
    return PointBatch.concat([PointBatch.from_arrow(r) for r in payload_batches(payload)])
