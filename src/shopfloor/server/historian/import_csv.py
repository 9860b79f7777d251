"""Read a CSV file of history and check every row before anything is stored.

Two layouts are understood:

- **long**: one point per row, columns ``path``, ``ts``, ``value`` and optionally
  ``quality`` and ``text`` (what ``shopfloor export --format csv`` writes);
- **wide**: a timestamp column and one column per tag path, as legacy SCADA and
  spreadsheet exports look; an empty cell means "no value at that time".

The file is read in blocks by Arrow (never one Python object per row) with every cell
as text, and each column is converted by :mod:`~shopfloor.server.historian.cells`, which
names every cell that does not convert. Nothing is stored here: the result is an
:class:`ImportPlan` holding the accepted points as one :class:`PointBatch` and every
problem with its line, so the caller can refuse the whole file or store the accepted
points in one transaction.

What is refused, and where it is reported:

- the header: a duplicate column name, a missing required column, a file without data
  (``fatal``: nothing of the file can be imported);
- an unknown column (long layout), or a column naming no known tag (wide layout, unless
  tags may be created): reported once on line 1;
- per row (long) or per cell (wide): a bad or, in ``tz``, ambiguous or nonexistent
  timestamp; a non-numeric value; a bad quality; an unknown or malformed tag path; a
  row with the wrong number of fields; a repeated point (the tag, time, value, quality
  and text of an earlier line: points of one tag and time that differ are kept).

Line numbers are the file's physical lines (the header is line 1); a quoted value with a
line break in it is not supported and shifts the numbers after it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from shopfloor.model import DataType, PointBatch, TagMeta
from shopfloor.model.tags import validate_path
from shopfloor.server.historian.cells import (
    Cells,
    parse_numbers,
    parse_qualities,
    parse_times,
)

__all__ = ["ImportOptions", "ImportPlan", "Problem", "file_sha256", "read_import"]

Layout = Literal["long", "wide"]
Progress = Callable[[int], None]

_LONG_OPTIONAL = ("quality", "text")
_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to read a file.

    Attributes:
        layout: ``long``, ``wide``, or ``auto`` (long if the header has ``path`` and
            ``value`` columns).
        tz: the zone of timestamps written without an offset.
        ts_column: the timestamp column (default: ``ts`` for long, the first for wide).
        ts_format: an strptime format for the timestamps instead of ISO 8601.
        delimiter: the field separator.
        decimal_comma: values are written ``21,5`` (use with ``delimiter=";"``).
        encoding: the file's text encoding (a UTF-8 byte-order mark is skipped).
        create_tags: paths the historian does not know become new tags instead of
            being refused.
    """

    layout: Literal["auto", "long", "wide"] = "auto"
    tz: str = "UTC"
    ts_column: str | None = None
    ts_format: str | None = None
    delimiter: str = ","
    decimal_comma: bool = False
    encoding: str = "utf-8"
    create_tags: bool = False


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """Something refused: where (line, column) and why."""

    line: int
    column: str
    reason: str


@dataclass(slots=True)
class ImportPlan:
    """A file read and checked; nothing stored yet.

    Attributes:
        layout: the layout the file was read as.
        records: data lines read (blank lines not counted).
        batch: the accepted points.
        rejected: rows, cells and columns refused, by line.
        fatal: problems that make the whole file unusable.
        new_tags: paths the import would create (with ``create_tags``).
    """

    layout: Layout
    records: int
    batch: PointBatch
    rejected: list[Problem]
    fatal: list[Problem]
    new_tags: list[str]


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """The file's SHA-256 (hex): its identity for storing it exactly once."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading
def read_import(
    path: Path,
    *,
    tags: Mapping[str, TagMeta],
    options: ImportOptions,
    progress: Progress | None = None,
) -> ImportPlan:
    """Read and check ``path`` against the historian's ``tags``.

    Args:
        path: the CSV file.
        tags: every tag the historian knows, by path.
        options: how to read it.
        progress: called with the bytes read so far after each block.

    Raises:
        OSError: the file cannot be read.
    """
    header = _read_header(path, options)
    if not header:
        return _refused("long", Problem(1, "", "the file is empty"))
    fatal = _duplicates(header)
    layout: Layout
    if options.layout == "auto":
        lower = {h.lower() for h in header}
        layout = "long" if {"path", "value"} <= lower else "wide"
    else:
        layout = options.layout
    reader: _Reader = (
        _LongReader(header, tags, options)
        if layout == "long"
        else _WideReader(header, tags, options)
    )
    fatal += reader.fatal
    if fatal:
        return _refused(layout, *fatal)
    skipped = _stream(path, header, options, reader, progress)
    return reader.finish(skipped, layout)


def _refused(layout: Layout, *problems: Problem) -> ImportPlan:
    return ImportPlan(layout, 0, PointBatch.empty(), [], sorted(problems), [])


def _read_header(path: Path, options: ImportOptions) -> list[str]:
    encoding = (
        "utf-8-sig"
        if options.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        else options.encoding
    )
    with path.open(encoding=encoding, newline="") as f:
        first = f.readline()
    if not first.strip():
        return []
    row = next(csv.reader([first], delimiter=options.delimiter))
    return [name.strip() for name in row]


def _duplicates(header: list[str]) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for i, name in enumerate(header):
        if name and name in seen:
            problems.append(
                Problem(1, name, f"duplicate column name (columns {seen[name] + 1} and {i + 1})")
            )
        seen.setdefault(name, i)
    return problems


def _stream(
    path: Path,
    header: list[str],
    options: ImportOptions,
    reader: _Reader,
    progress: Progress | None,
) -> list[tuple[int, str]]:
    """Feed the file to ``reader`` block by block; return the lines Arrow could not split."""
    skipped: list[tuple[int, str]] = []

    def invalid(row: pcsv.InvalidRow) -> str:
        if row.text.strip():
            why = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        else:
            why = ""  # a blank line: not a problem, but it counts as a line
        skipped.append((int(row.number or 0), why))
        return "skip"

    names = [f"c{i}" for i in range(len(header))]
    stream = pcsv.open_csv(
        pa.OSFile(str(path), "r"),
        read_options=pcsv.ReadOptions(
            use_threads=False,  # InvalidRow.number is known only without threads
            block_size=_BLOCK_BYTES,
            skip_rows=1,
            column_names=names,
            encoding=options.encoding,
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=options.delimiter, invalid_row_handler=invalid, ignore_empty_lines=False
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        ),
    )
    with pa.OSFile(str(path), "r") as sizer:
        size = sizer.size()
    done = 0
    for block in stream:
        reader.feed(block)
        if progress is not None:
            done = min(size, done + block.nbytes)
            progress(done)
    if progress is not None:
        progress(size)
    return skipped


# ------------------------------------------------------------------------- collecting
@dataclass(slots=True)
class _Points:
    """Accepted points gathered block by block, with the record each came from."""

    paths: dict[str, int] = field(default_factory=dict)
    tag_index: list[npt.NDArray[np.int32]] = field(default_factory=list)
    ts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    value: list[npt.NDArray[np.float64]] = field(default_factory=list)
    quality: list[npt.NDArray[np.uint32]] = field(default_factory=list)
    text: list[pa.Array] = field(default_factory=list)
    has_text: bool = False
    record: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def add(  # noqa: PLR0917 - the columns of one point, in their usual order
        self,
        tag_index: npt.NDArray[np.int32],
        ts: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint32],
        text: pa.Array | None,
        record: npt.NDArray[np.int64],
    ) -> None:
        self.tag_index.append(tag_index)
        self.ts.append(ts)
        self.value.append(value)
        self.quality.append(quality)
        self.has_text = self.has_text or text is not None
        self.text.append(text if text is not None else pa.nulls(len(ts), pa.string()))
        self.record.append(record)


@dataclass(slots=True)
class _Rejects:
    """Refused rows or cells, by record index (lines are known only at the end)."""

    records: list[npt.NDArray[np.int64]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, records: npt.NDArray[np.int64], column: str, reasons: list[str]) -> None:
        if len(records):
            self.records.append(np.asarray(records, dtype=np.int64))
            self.columns += [column] * len(records)
            self.reasons += reasons


class _Reader:
    """What the two layouts share: record counting, rejects and the final batch."""

    def __init__(self, header: list[str], tags: Mapping[str, TagMeta], options: ImportOptions):
        self.header = header
        self.tags = tags
        self.options = options
        self.fatal: list[Problem] = []
        self.column_problems: list[Problem] = []
        self.points = _Points()
        self.rejects = _Rejects()
        self.records = 0
        self.blank = 0
        self.new_tags: dict[str, None] = {}
        self._dup_tags: npt.NDArray[np.int32] = np.empty(0, dtype=np.int32)

    def feed(self, block: pa.RecordBatch) -> None:
        """Check one block of records (every cell a string)."""
        base = self.records
        self.records += block.num_rows
        blank = np.ones(block.num_rows, dtype=np.bool_)
        for column in block.columns:
            blank &= _mask(pc.equal(column, ""))
        self.blank += int(blank.sum())
        keep = np.flatnonzero(~blank)
        if not len(keep):
            return
        if len(keep) < block.num_rows:
            block = block.take(pa.array(keep))
        self.check(block, base + keep.astype(np.int64))

    def check(self, block: pa.RecordBatch, records: npt.NDArray[np.int64]) -> None:
        raise NotImplementedError

    def tag_problem(self, path: str) -> str | None:
        """Why ``path`` cannot take points, or None (a new tag is remembered)."""
        if path in self.tags:
            return None
        try:
            validate_path(path)
        except ValueError as err:
            return str(err)
        if not self.options.create_tags:
            return f"unknown tag {path!r} (import with --create-tags to create it)"
        self.new_tags[path] = None
        return None

    def is_text_tag(self, path: str) -> bool:
        meta = self.tags.get(path)
        return meta is not None and meta.data_type is DataType.STRING

    def finish(self, skipped: list[tuple[int, str]], layout: Layout) -> ImportPlan:
        """Drop repeated points, then number every problem by its line."""
        batch, dup_of, dup_rec = self._batch()
        skipped_lines = np.array(sorted(n for n, _ in skipped), dtype=np.int64)
        problems = list(self.column_problems)
        problems += [Problem(n, "", why) for n, why in skipped if why]
        if self.rejects.records:
            lines = _lines(np.concatenate(self.rejects.records), skipped_lines)
            problems += [
                Problem(int(line), column, reason)
                for line, column, reason in zip(
                    lines.tolist(), self.rejects.columns, self.rejects.reasons, strict=True
                )
            ]
        if len(dup_rec):
            first = _lines(dup_of, skipped_lines).tolist()
            again = _lines(dup_rec, skipped_lines).tolist()
            names = batch.tags
            problems += [
                Problem(
                    int(line),
                    names[int(tag)],
                    f"repeats line {int(before)} (same tag, time and value)",
                )
                for line, before, tag in zip(again, first, self._dup_tags, strict=True)
            ]
        broken = sum(1 for _, why in skipped if why)
        records = self.records - self.blank + broken
        fatal: list[Problem] = []
        if not records:
            fatal.append(Problem(2, "", "the file has a header but no data"))
        used = set(batch.tags)
        return ImportPlan(
            layout=layout,
            records=records,
            batch=batch,
            rejected=sorted(problems),
            fatal=fatal,
            new_tags=[p for p in self.new_tags if p in used],
        )

    def _batch(self) -> tuple[PointBatch, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The accepted points as one batch, without repeated points.

        A repeated point has the tag, time, value, quality and text of an earlier one (a
        line copied twice, files joined with an overlap); it is refused. Points of one
        tag at one time that differ are kept, as the historian keeps them. Returns the
        batch and, per repeat, the record of the first point and of the repeat (the tag
        of each is left in ``_dup_tags``).
        """
        pts = self.points
        empty = np.empty(0, dtype=np.int64)
        if not sum(len(ts) for ts in pts.ts):
            return PointBatch.empty(), empty, empty
        tag_index = np.concatenate(pts.tag_index)
        ts = np.concatenate(pts.ts)
        value = np.concatenate(pts.value)
        quality = np.concatenate(pts.quality)
        record = np.concatenate(pts.record)
        text = pa.concat_arrays(pts.text) if pts.has_text else None
        bits = value.view(np.int64)  # NaN equals NaN here, as it should for a repeat
        order = np.lexsort((record, quality, bits, ts, tag_index))
        same = np.ones(len(order) - 1, dtype=np.bool_)
        for column in (tag_index, ts, bits, quality):
            ordered = column[order]
            same &= ordered[1:] == ordered[:-1]
        if text is not None and same.any():
            t = text.take(pa.array(order))
            before, after = t.slice(0, len(t) - 1), t.slice(1)
            equal = pc.fill_null(pc.equal(before, after), False)
            both_null = pc.and_(before.is_null(), after.is_null())
            same &= np.asarray(pc.or_(equal, both_null).to_numpy(zero_copy_only=False), bool)
        repeat = np.r_[False, same]
        keep = np.ones(len(ts), dtype=np.bool_)
        dup_of, dup_rec = empty, empty
        if repeat.any():
            # the first of each run of equal points stays: it has the lowest record
            starts = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
            again = np.flatnonzero(repeat)
            keep[order[again]] = False
            dup_of = record[order[starts[again]]]
            dup_rec = record[order[again]]
            self._dup_tags = tag_index[order[again]]
        batch = PointBatch.from_columns(tuple(pts.paths), tag_index, ts, value, quality, text=text)
        if not keep.all():
            batch = batch.select(keep)
        return _compact(batch), dup_of, dup_rec


# ----------------------------------------------------------------------------- long
class _LongReader(_Reader):
    """One point per record: path, ts, value[, quality][, text]."""

    def __init__(self, header: list[str], tags: Mapping[str, TagMeta], options: ImportOptions):
        super().__init__(header, tags, options)
        ts_name = (options.ts_column or "ts").lower()
        wanted = {"path": "path", ts_name: "ts", "value": "value"}
        wanted.update({name: name for name in _LONG_OPTIONAL})
        self.at: dict[str, int] = {}
        for i, name in enumerate(header):
            role = wanted.get(name.lower())
            if role is not None and role not in self.at:
                self.at[role] = i
            elif name:
                self.column_problems.append(
                    Problem(
                        1,
                        name,
                        "unknown column: not imported (the long layout has "
                        f"path, {ts_name}, value, quality, text)",
                    )
                )
        for role, shown in (("path", "path"), ("ts", ts_name), ("value", "value")):
            if role not in self.at:
                self.fatal.append(Problem(1, shown, f"the long layout needs a column {shown!r}"))
        self.verdicts: dict[str, str | None] = {}

    def check(self, block: pa.RecordBatch, records: npt.NDArray[np.int64]) -> None:
        names = self.header
        ok = np.ones(block.num_rows, dtype=np.bool_)

        def refuse(cells: Cells | tuple[npt.NDArray[np.int64], list[str]], role: str) -> None:
            bad, reasons = (cells.bad, cells.reasons) if isinstance(cells, Cells) else cells
            fresh = ok[bad]
            self.rejects.add(
                records[bad[fresh]],
                names[self.at[role]],
                [r for r, f in zip(reasons, fresh, strict=True) if f],
            )
            ok[bad] = False

        paths = pc.utf8_trim_whitespace(block.column(self.at["path"])).dictionary_encode()
        distinct: list[str] = paths.dictionary.to_pylist()
        verdicts = [self._verdict(p) for p in distinct]
        index = np.asarray(paths.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        wrong = np.array([v is not None for v in verdicts], dtype=np.bool_)
        bad_rows = np.flatnonzero(wrong[index]).astype(np.int64)
        refuse((bad_rows, [str(verdicts[i]) for i in index[bad_rows]]), "path")
        times = parse_times(
            block.column(self.at["ts"]), tz=self.options.tz, fmt=self.options.ts_format
        )
        refuse(times, "ts")
        raw_values = block.column(self.at["value"])
        numbers = parse_numbers(raw_values, decimal_comma=self.options.decimal_comma)
        text_tag = np.array([self.is_text_tag(p) for p in distinct], dtype=np.bool_)[index]
        text: pa.Array | None = None
        if "text" in self.at:
            given = block.column(self.at["text"])
            has_text = ~_mask(pc.equal(given, ""))
            text = pc.if_else(pa.array(has_text), given, pa.nulls(len(given), pa.string()))
        else:
            has_text = np.zeros(block.num_rows, dtype=np.bool_)
        if text_tag.any():  # a string tag's value is its text
            moved = text_tag & ~has_text
            base = text if text is not None else pa.nulls(block.num_rows, pa.string())
            text = pc.if_else(pa.array(moved), raw_values, base)
            has_text |= moved
        needs_number = ~has_text[numbers.bad]
        refuse(
            (
                numbers.bad[needs_number],
                [r for r, n in zip(numbers.reasons, needs_number, strict=True) if n],
            ),
            "value",
        )
        quality = np.zeros(block.num_rows, dtype=np.uint32)
        if "quality" in self.at:
            qualities = parse_qualities(block.column(self.at["quality"]))
            refuse(qualities, "quality")
            quality = np.asarray(qualities.values, dtype=np.uint32)
        take = np.flatnonzero(ok)
        lookup = np.array(
            [
                self.points.paths.setdefault(p, len(self.points.paths)) if v is None else -1
                for p, v in zip(distinct, verdicts, strict=True)
            ],
            dtype=np.int32,
        )
        has_any_text = text is not None and bool(has_text[take].any())
        self.points.add(
            lookup[index[take]],
            np.asarray(times.values, dtype=np.int64)[take],
            np.asarray(numbers.values, dtype=np.float64)[take],
            quality[take],
            text.take(pa.array(take)) if has_any_text and text is not None else None,
            records[take],
        )

    def _verdict(self, path: str) -> str | None:
        if path not in self.verdicts:
            self.verdicts[path] = self.tag_problem(path) if path else "empty tag path"
        return self.verdicts[path]


# ----------------------------------------------------------------------------- wide
class _WideReader(_Reader):
    """One record per time: a timestamp column and one column per tag."""

    def __init__(self, header: list[str], tags: Mapping[str, TagMeta], options: ImportOptions):
        super().__init__(header, tags, options)
        self.ts_at = 0
        if options.ts_column is not None:
            if options.ts_column not in header:
                self.fatal.append(
                    Problem(1, options.ts_column, f"no timestamp column {options.ts_column!r}")
                )
            else:
                self.ts_at = header.index(options.ts_column)
        self.columns: list[tuple[int, str, int]] = []  # (position, path, tag index)
        self.unusable: dict[int, tuple[str, str]] = {}  # position -> (name, why)
        self.unused_cells: dict[int, int] = {}
        for i, name in enumerate(header):
            if i == self.ts_at:
                continue
            why = self.tag_problem(name) if name else f"column {i + 1} has no name"
            if why is None:
                self.columns.append(
                    (i, name, self.points.paths.setdefault(name, len(self.points.paths)))
                )
            else:
                self.unusable[i] = (name, why)
                self.unused_cells[i] = 0
        if len(header) < 2:
            self.fatal.append(Problem(1, "", "the wide layout needs a timestamp and tag columns"))

    def check(self, block: pa.RecordBatch, records: npt.NDArray[np.int64]) -> None:
        ts_name = self.header[self.ts_at]
        times = parse_times(
            block.column(self.ts_at), tz=self.options.tz, fmt=self.options.ts_format
        )
        self.rejects.add(records[times.bad], ts_name, times.reasons)
        ts_ok = times.ok()
        ts = np.asarray(times.values, dtype=np.int64)
        for i in self.unusable:
            self.unused_cells[i] += int((~_mask(pc.equal(block.column(i), ""))).sum())
        for position, path, tag in self.columns:
            cells = block.column(position)
            present = ~_mask(pc.equal(cells, "")) & ts_ok
            if self.is_text_tag(path):
                take = np.flatnonzero(present)
                self.points.add(
                    np.full(len(take), tag, dtype=np.int32),
                    ts[take],
                    np.full(len(take), np.nan),
                    np.zeros(len(take), dtype=np.uint32),
                    cells.take(pa.array(take)),
                    records[take],
                )
                continue
            numbers = parse_numbers(cells, decimal_comma=self.options.decimal_comma)
            bad = numbers.bad[present[numbers.bad]]
            reasons = [r for r, p in zip(numbers.reasons, present[numbers.bad], strict=True) if p]
            self.rejects.add(records[bad], path, reasons)
            present[bad] = False
            take = np.flatnonzero(present)
            self.points.add(
                np.full(len(take), tag, dtype=np.int32),
                ts[take],
                np.asarray(numbers.values, dtype=np.float64)[take],
                np.zeros(len(take), dtype=np.uint32),
                None,
                records[take],
            )

    def finish(self, skipped: list[tuple[int, str]], layout: Layout) -> ImportPlan:
        for i, (name, why) in self.unusable.items():
            count = self.unused_cells[i]
            if count or name:
                self.column_problems.append(
                    Problem(1, name, f"{why}; its {count} value(s) are not imported")
                )
        return super().finish(skipped, layout)


# ---------------------------------------------------------------------------- helpers
def _compact(batch: PointBatch) -> PointBatch:
    """Drop tags without points from the batch's dictionary: storing a batch registers
    every path in it, and a column whose every cell was refused must not make a tag."""
    used = np.unique(batch.tag_index)
    if len(used) == len(batch.tags):
        return batch
    remap = np.full(len(batch.tags), -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return PointBatch(
        tags=tuple(batch.tags[i] for i in used.tolist()),
        tag_index=remap[batch.tag_index],
        ts=batch.ts,
        value=batch.value,
        quality=batch.quality,
        text=batch.text,
    )


def _mask(result: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _lines(records: npt.NDArray[np.int64], skipped: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The physical line of each record: line 2 onwards, minus the lines Arrow skipped.

    Record ``k`` is on line ``2 + k + s`` where ``s`` counts the skipped lines before it;
    ``s`` depends on the line itself, so it is found by iterating to the fixed point (the
    line only grows, by at most the number of skipped lines).
    """
    line = 2 + records
    if not len(skipped):
        return line
    while True:
        moved = 2 + records + np.searchsorted(skipped, line, side="right")
        # a record cannot sit on a skipped line: step over it
        if np.array_equal(moved, line):
            return line
        line = moved
