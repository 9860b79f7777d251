"""Pure value types shared by every stage. No I/O here."""

from shopfloor.model.points import LiveBatch, PointBatch, Quality, is_bad, is_good, now_ns
from shopfloor.model.tags import DataType, TagMeta

__all__ = [
    "DataType",
    "LiveBatch",
    "PointBatch",
    "Quality",
    "TagMeta",
    "is_bad",
    "is_good",
    "now_ns",
]
