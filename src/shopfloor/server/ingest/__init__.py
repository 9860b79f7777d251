"""Receive, validate, store and publish batches of points; remember the edges that send them."""

from shopfloor.server.ingest.edges import EdgeRegistry, EdgeView
from shopfloor.server.ingest.service import (
    EARLIEST_NS,
    FUTURE_QUALITY,
    LATEST_NS,
    Ingestor,
    IngestResult,
    IngestStats,
)

__all__ = [
    "EARLIEST_NS",
    "FUTURE_QUALITY",
    "LATEST_NS",
    "EdgeRegistry",
    "EdgeView",
    "IngestResult",
    "IngestStats",
    "Ingestor",
]
