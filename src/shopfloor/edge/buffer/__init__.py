"""The edge's durable outbox: every batch is on disk before it travels.

Use :func:`open_outbox` (or build a :class:`DurableOutbox` over a store yourself)::

    outbox = DurableOutbox(SegmentLog(Path("edge-data/outbox")), max_bytes=1 << 30)
    await outbox.open()
    seq = await outbox.append(payload, points=len(batch))
    (stored,) = await outbox.peek(1)
    await outbox.ack([stored.seq])
    await outbox.close()
"""

from shopfloor.edge.buffer.base import (
    CorruptRecord,
    Durability,
    FullPolicy,
    Lane,
    LogStore,
    Outbox,
    OutboxError,
    OutboxFailed,
    OutboxStats,
    StorageUnavailable,
    StoredBatch,
)
from shopfloor.edge.buffer.outbox import DurableOutbox
from shopfloor.edge.buffer.segments import SegmentLog
from shopfloor.edge.buffer.sqlite import SqliteLog

__all__ = [
    "CorruptRecord",
    "Durability",
    "DurableOutbox",
    "FullPolicy",
    "Lane",
    "LogStore",
    "Outbox",
    "OutboxError",
    "OutboxFailed",
    "OutboxStats",
    "SegmentLog",
    "SqliteLog",
    "StorageUnavailable",
    "StoredBatch",
]
