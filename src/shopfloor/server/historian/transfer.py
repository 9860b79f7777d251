"""History out to files and back: export to Parquet or CSV, store a checked import once.

**Export** writes the long layout ``path, ts, value, quality, text`` (``ts`` as UTC
nanoseconds in Parquet, ISO 8601 with ``Z`` in CSV). It reads one tag at a time, in
chunks of ``chunk_rows`` points through :meth:`Historian.read_raw`, and writes each
chunk before reading the next, so memory holds one chunk whatever the history's size.
The file appears under its name only when complete (written beside it, then renamed).

**Import** stores the points of an :class:`~.import_csv.ImportPlan` with one
:meth:`Historian.write_acknowledged` call keyed ``import:<sha256 of the file>``, seq 1:
one batch, one transaction, and the ingest ledger makes a second import of the same file
store nothing. The ledger keeps that key as long as the historian lives (its rows are
pruned after ``ledger_retention_s`` but the per-edge low-water mark is kept), so a file
is recognised however much later it comes again.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shopfloor import __version__
from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch
from shopfloor.server.historian.base import Historian, WriteReceipt

__all__ = [
    "EXPORT_SCHEMA",
    "ExportSummary",
    "already_imported",
    "export_history",
    "import_edge",
    "match_tags",
    "store_import",
]

Format = Literal["parquet", "csv"]

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.uint32(), nullable=False),
        pa.field("text", pa.string()),
    ]
)
"""The long layout of an export (Parquet keeps these types; CSV writes ts as text)."""

_CSV_SCHEMA = EXPORT_SCHEMA.set(1, pa.field("ts", pa.string(), nullable=False))
_GLOB = set("*?[")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    tags: int
    points: int


# ---------------------------------------------------------------------- tag patterns
def match_tags(patterns: Sequence[str], known: Sequence[str]) -> list[str]:
    """The known paths that ``patterns`` name, sorted, each once.

    A pattern is an exact path, a folder of the asset tree (``plant/line1`` takes
    ``plant/line1/…``), or a glob (``*``, ``?``, ``[…]``; ``*`` also matches ``/``).

    Raises:
        PayloadError: a pattern names no tag (field ``tags``).
    """
    chosen: set[str] = set()
    for pattern in patterns:
        if _GLOB & set(pattern):
            found = {p for p in known if fnmatch.fnmatchcase(p, pattern)}
        else:
            folder = pattern.rstrip("/") + "/"
            found = {p for p in known if p == pattern or p.startswith(folder)}
        if not found:
            raise PayloadError("tags", f"{pattern!r} names no tag of the historian")
        chosen |= found
    return sorted(chosen)


# --------------------------------------------------------------------------- export
class _Sink(Protocol):
    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


class _ParquetSink:
    def __init__(self, path: Path, *, start_ns: int, end_ns: int) -> None:
        schema = EXPORT_SCHEMA.with_metadata(
            {
                "shopfloor.version": __version__,
                "shopfloor.export.start_ns": str(start_ns),
                "shopfloor.export.end_ns": str(end_ns),
            }
        )
        self._writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self._schema = schema

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.replace_schema_metadata(self._schema.metadata))

    def close(self) -> None:
        self._writer.close()


class _CsvSink:
    def __init__(self, path: Path) -> None:
        self._writer = pcsv.CSVWriter(str(path), _CSV_SCHEMA)

    def write(self, table: pa.Table) -> None:
        ts = table.column("ts")
        self._writer.write_table(table.set_column(1, "ts", _iso(ts)).cast(_CSV_SCHEMA))

    def close(self) -> None:
        self._writer.close()


def _iso(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 in UTC with ``Z``: milliseconds when every time is a whole millisecond,
    else micro- or nanoseconds, so that what is written reads back to the same time."""
    ints = np.asarray(ts.cast(pa.int64()).to_numpy(), dtype=np.int64)
    unit = "ns"
    if not (ints % 1_000_000).any():
        unit = "ms"
    elif not (ints % 1000).any():
        unit = "us"
    coarse = pa.chunked_array(
        [pa.array(ints // {"ms": 1_000_000, "us": 1000, "ns": 1}[unit], pa.int64())]
    )
    stamps = coarse.cast(pa.timestamp(unit, tz="UTC"))
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")


async def export_history(
    historian: Historian,
    paths: Sequence[str],
    *,
    start_ns: int,
    end_ns: int,
    out: Path,
    fmt: Format,
    chunk_rows: int = 100_000,
    progress: Callable[[str, int], None] | None = None,
) -> ExportSummary:
    """Write the points of ``paths`` with ``start_ns <= ts < end_ns`` to ``out``.

    Args:
        historian: a started historian.
        paths: tag paths (see :func:`match_tags`), written in this order.
        start_ns: first time included (UTC ns).
        end_ns: first time excluded (UTC ns).
        out: the file to write (replaced if it exists, only once the export is complete).
        fmt: ``parquet`` or ``csv``.
        chunk_rows: the most points read and held at once.
        progress: called with a tag's path and the points written so far.

    Raises:
        UnknownTagError: a path names no tag.
        HistorianError: a read failed.
        OSError: the file cannot be written.
    """
    partial = out.with_name(out.name + ".partial")
    sink: _Sink = (
        _ParquetSink(partial, start_ns=start_ns, end_ns=end_ns)
        if fmt == "parquet"
        else _CsvSink(partial)
    )
    points = tags = 0
    try:
        for path in paths:
            written = 0
            async for chunk in _chunks(historian, path, start_ns, end_ns, chunk_rows):
                sink.write(_long(path, chunk))
                written += chunk.num_rows
                if progress is not None:
                    progress(path, points + written)
            points += written
            tags += written > 0
        sink.close()
        partial.replace(out)
    except BaseException:
        with contextlib.suppress(Exception):
            sink.close()
        partial.unlink(missing_ok=True)
        raise
    return ExportSummary(tags=tags, points=points)


async def _chunks(
    historian: Historian, path: str, start_ns: int, end_ns: int, chunk_rows: int
) -> AsyncIterator[pa.Table]:
    """One tag's points in chunks of at most ``chunk_rows``, oldest first.

    A full chunk ends with the points of its last timestamp left out: they are read
    again at the start of the next one, so points sharing a time are never split
    between two reads (and none is lost or repeated). A chunk of one single time is
    read again with a larger limit.
    """
    start, limit = start_ns, chunk_rows
    while start < end_ns:
        raw = await historian.read_raw(path, start, end_ns, limit=limit)
        if raw.num_rows < limit:
            if raw.num_rows:
                yield raw
            return
        ts = np.asarray(raw.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
        before_last = int(np.searchsorted(ts, ts[-1], side="left"))
        if before_last == 0:
            limit *= 2
            continue
        yield raw.slice(0, before_last)
        start, limit = int(ts[-1]), chunk_rows


def _long(path: str, raw: pa.Table) -> pa.Table:
    """A ``read_raw`` table with the tag's path in front: the export's long layout."""
    return pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(path, pa.string()), raw.num_rows),
            raw.column("ts"),
            raw.column("value"),
            raw.column("quality"),
            raw.column("text"),
        ],
        schema=EXPORT_SCHEMA,
    )


# --------------------------------------------------------------------------- import
def import_edge(sha256: str) -> str:
    """The ingest-ledger key of an imported file: its content, not its name."""
    return f"import:{sha256}"


def already_imported(historian: Historian, sha256: str) -> bool:
    """Whether a file with this SHA-256 was imported before (no query: the ledger's index)."""
    return import_edge(sha256) in historian.ledger_stats()


async def store_import(historian: Historian, batch: PointBatch, *, sha256: str) -> WriteReceipt:
    """Store ``batch`` in one transaction, once per file (``duplicate`` if stored before).

    Raises:
        HistorianError: the commit failed; nothing was stored.
    """
    return await historian.write_acknowledged(batch, edge=import_edge(sha256), seq=1)
