"""Receive, validate, store and publish batches of points."""

from shopfloor.server.ingest.service import EARLIEST_NS, Ingestor, IngestResult, IngestStats

__all__ = ["EARLIEST_NS", "IngestResult", "IngestStats", "Ingestor"]
