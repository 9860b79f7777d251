"""Ledger streams: under which key the platform records an edge's applied batches.

Seqs are numbered by an edge's outbox, so the key is the edge id and, when the batch
names one, its outbox id: ``edge`` or ``edge/outbox``. An edge id never holds ``/``
(``EDGE_ID_PATTERN``), so the edge can always be read back from the key.
"""

from __future__ import annotations

__all__ = ["edge_of_stream", "ledger_stream"]


def ledger_stream(edge: str, outbox: str | None) -> str:
    """The ledger key of batches numbered by ``outbox`` at ``edge``."""
    return f"{edge}/{outbox}" if outbox else edge


def edge_of_stream(stream: str) -> str:
    """The edge id of a ledger key."""
    return stream.split("/", 1)[0]
