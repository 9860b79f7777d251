"""Text cells typed by people or legacy tools, turned into typed columns with reasons.

Imports and command-line options meet text written by people, spreadsheets and old SCADA
exports. Every function here converts a whole Arrow column in one call and returns, next
to the values, which cells did not convert and why, so an import can name each bad cell
by its line. Only a column part that fails the fast path is looked at cell by cell.

**Times.** ISO 8601 (``2024-03-01T08:00:00Z``, ``2024-03-01 09:00:00+01:00``,
``2024-03-01``, fractions down to nanoseconds) or, with ``fmt``, an strptime format such
as ``%d.%m.%Y %H:%M:%S``. A time with an offset is that instant. A time without one is
wall-clock time in the zone ``tz``: legacy exports write local time. In a zone with
daylight saving a local time may not exist (the hour skipped in spring) or exist twice
(the hour repeated in autumn); both are errors, never guesses, because a guess silently
moves an hour of history.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.errors import PayloadError
from shopfloor.model import Quality
from shopfloor.model.points import Int64Array, UInt32Array

__all__ = [
    "Cells",
    "check_zone",
    "parse_numbers",
    "parse_qualities",
    "parse_times",
    "parse_user_time",
]

_OFFSET = r"[T ]\d\d:\d\d(:\d\d([.,]\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"
"""A time of day followed by ``Z`` or an offset: the text names an instant."""

_NUMBER = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|(?i:nan|inf|infinity))$"
_TRUE_FALSE = r"^(?i:true|false)$"
_TS_NAIVE = pa.timestamp("ns")
_TS_UTC = pa.timestamp("ns", tz="UTC")
_ISO_HELP = "ISO 8601 like 2024-03-01T08:00:00Z or 2024-03-01 08:00:00"


@dataclass(frozen=True, slots=True)
class Cells:
    """A converted column: the values, and the cells that did not convert.

    Attributes:
        values: one value per cell (unspecified where the cell is bad).
        bad: positions of the cells that did not convert, ascending.
        reasons: one sentence per bad cell, same order.
    """

    values: npt.NDArray[np.generic]
    bad: npt.NDArray[np.int64]
    reasons: list[str]

    def ok(self) -> npt.NDArray[np.bool_]:
        """A mask of the cells that converted."""
        mask = np.ones(len(self.values), dtype=np.bool_)
        mask[self.bad] = False
        return mask


def check_zone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone (``Europe/Berlin``, ``UTC``).

    Raises:
        PayloadError: not a zone this machine's time zone database knows.
    """
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise PayloadError(
            "tz", f"unknown time zone {name!r} (use a name like Europe/Berlin)"
        ) from err
    return name


def parse_user_time(text: str, *, tz: str = "UTC", field: str) -> int:
    """Return one time typed by a user in UTC nanoseconds (see the module docstring).

    Raises:
        PayloadError: the text is not such a time, or not one instant in ``tz``; the
            message names ``field``.
    """
    cells = parse_times(pa.array([text], type=pa.string()), tz=tz)
    if cells.reasons:
        raise PayloadError(field, cells.reasons[0])
    return int(cells.values[0])


def parse_times(strings: pa.Array, *, tz: str = "UTC", fmt: str | None = None) -> Cells:
    """Convert a string column to int64 UTC nanoseconds.

    Args:
        strings: the cells (leading and trailing blanks are ignored).
        tz: the zone of times written without an offset.
        fmt: an strptime format instead of ISO 8601 (``%z`` in it reads an offset).
    """
    text = pc.utf8_trim_whitespace(strings.cast(pa.string()))
    n = len(text)
    values = np.zeros(n, dtype=np.int64)
    bad: list[npt.NDArray[np.int64]] = []
    reasons: list[str] = []
    if fmt is not None:
        parsed = pc.strptime(text, format=fmt, unit="ns", error_is_null=True)
        failed = np.asarray(parsed.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
        picked = np.flatnonzero(~failed)
        good = parsed.take(pa.array(picked))
        if parsed.type.tz is None:
            values[picked], odd, why = _localize(good, tz, picked, text)
            bad.append(picked[odd])
            reasons += why
        else:
            values[picked] = _ints(good)
        where = np.flatnonzero(failed)
        bad.append(where)
        reasons += [_bad_time(s, f"does not match the format {fmt!r}") for s in _texts(text, where)]
        return _cells(values, bad, reasons)
    offset = np.asarray(
        pc.fill_null(pc.match_substring_regex(text, _OFFSET, ignore_case=True), False),
        dtype=np.bool_,
    )
    for instants, target in ((True, _TS_UTC), (False, _TS_NAIVE)):
        where = np.flatnonzero(offset == instants)
        if not len(where):
            continue
        part = text.take(pa.array(where)) if len(where) < n else text
        if instants:  # pyarrow wants an upper-case separator and zone letter
            part = pc.utf8_upper(part)
        converted, failed = _cast_each(part, target)
        ok = where[~failed]
        if instants:
            values[ok] = converted[~failed]
        else:
            local = pa.array(converted[~failed], type=pa.int64()).view(_TS_NAIVE)
            values[ok], odd, why = _localize(local, tz, ok, text)
            bad.append(ok[odd])
            reasons += why
        bad.append(where[failed])
        reasons += [_bad_time(s, f"is not {_ISO_HELP}") for s in _texts(text, where[failed])]
    return _cells(values, bad, reasons)


def _localize(
    local: pa.Array, tz: str, rows: npt.NDArray[np.int64], text: pa.Array
) -> tuple[Int64Array, npt.NDArray[np.int64], list[str]]:
    """Return the UTC times of the local times ``local`` (cells ``rows`` of ``text``).

    Also returns the positions among ``rows`` that are not one instant in ``tz``, with
    reasons: converting with "earliest" and "latest" gives the same instant for every
    other time, differs by one nanosecond for a skipped time, and by the DST shift for
    a repeated one.
    """
    if tz == "UTC":
        return _ints(local), np.empty(0, dtype=np.int64), []
    early = _ints(
        pc.assume_timezone(local, timezone=tz, ambiguous="earliest", nonexistent="earliest")
    )
    late = _ints(pc.assume_timezone(local, timezone=tz, ambiguous="latest", nonexistent="latest"))
    odd = np.flatnonzero(early != late).astype(np.int64)
    reasons: list[str] = []
    for i, cell in zip(odd.tolist(), _texts(text, rows[odd]), strict=True):
        if late[i] - early[i] == 1:
            why = f"does not exist in {tz} (the clocks skip it in spring)"
        else:
            why = (
                f"happens twice in {tz} (the clocks go back): write it with its offset, like +01:00"
            )
        reasons.append(_bad_time(cell, why))
    return early, odd, reasons


def parse_numbers(strings: pa.Array, *, decimal_comma: bool = False) -> Cells:
    """Convert a string column to float64: numbers, ``nan``, ``inf``, ``true``/``false``.

    Args:
        strings: the cells (blanks around them are ignored; an empty cell is bad).
        decimal_comma: the cells write ``21,5`` for 21.5 (German or French spreadsheets).
    """
    text = pc.utf8_trim_whitespace(strings.cast(pa.string()))
    if decimal_comma:
        text = pc.replace_substring(text, ",", ".")
    n = len(text)
    values = np.full(n, np.nan, dtype=np.float64)
    number = _mask(pc.match_substring_regex(text, _NUMBER))
    boolean = _mask(pc.match_substring_regex(text, _TRUE_FALSE))
    where = np.flatnonzero(number)
    part = text.take(pa.array(where)) if len(where) < n else text
    converted, failed = _cast_each(part, pa.float64())
    values[where[~failed]] = converted[~failed]
    if boolean.any():
        values[boolean] = _mask(pc.equal(pc.utf8_lower(text), "true")).astype(np.float64)[boolean]
    bad = np.sort(np.concatenate([np.flatnonzero(~number & ~boolean), where[failed]]))
    reasons = [
        "empty value" if not s else f"non-numeric value {s!r:.40}" for s in _texts(text, bad)
    ]
    return Cells(values, bad, reasons)


def parse_qualities(strings: pa.Array) -> Cells:
    """Convert a string column to OPC UA status codes (uint32).

    A cell is a number (``0``, ``2147483648``), hexadecimal (``0x80000000``), or a
    :class:`~shopfloor.model.Quality` name in any case (``Good``, ``BAD_SENSOR_FAILURE``);
    an empty cell means Good. Quality columns hold few distinct texts, so each distinct
    text is converted once.
    """
    encoded = pc.utf8_trim_whitespace(strings.cast(pa.string())).dictionary_encode()
    distinct: list[str | None] = encoded.dictionary.to_pylist()
    codes = np.zeros(len(distinct), dtype=np.uint32)
    wrong: dict[int, str] = {}
    for i, cell in enumerate(distinct):
        code = _quality(cell or "")
        if code is None:
            wrong[i] = f"bad quality {cell!r:.40} (a status code like 0, 0x80000000 or Good)"
        else:
            codes[i] = code
    index = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    values: UInt32Array = codes[index]
    bad = np.flatnonzero(np.isin(index, list(wrong))) if wrong else np.empty(0, np.int64)
    return Cells(values, bad.astype(np.int64), [wrong[int(index[i])] for i in bad])


def _quality(text: str) -> int | None:
    if not text:
        return int(Quality.GOOD)
    try:
        code = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        named = Quality.__members__.get(text.upper())
        return None if named is None else int(named)
    return code if 0 <= code <= 0xFFFFFFFF else None


# ---------------------------------------------------------------------------- helpers
def _cast_each(
    part: pa.Array, target: pa.DataType
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
    """Cast a column in one call; if that fails, cell by cell to find the bad ones.

    Returns the values (timestamps as int64 nanoseconds) and a mask of the failed cells.
    """
    stamps = pa.types.is_timestamp(target)
    try:
        cast = pc.cast(part, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _cast_one_by_one(part, target, stamps=stamps)
    failed = np.zeros(len(part), dtype=np.bool_)
    if stamps:
        return _ints(pc.fill_null(cast, 0)), failed
    return np.asarray(pc.fill_null(cast, 0).to_numpy(zero_copy_only=False)), failed


def _cast_one_by_one(
    part: pa.Array, target: pa.DataType, *, stamps: bool
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
    """The slow path, for a column part that holds at least one bad cell."""
    failed = np.zeros(len(part), dtype=np.bool_)
    out = np.zeros(len(part), dtype=np.int64 if stamps else np.float64)
    for i, cell in enumerate(part.to_pylist()):
        try:
            scalar = pa.scalar(cell, pa.string()).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
            failed[i] = True
            continue
        if not scalar.is_valid:
            failed[i] = True
        else:
            out[i] = scalar.value if stamps else scalar.as_py()
    return out, failed


def _ints(timestamps: pa.Array | pa.ChunkedArray) -> Int64Array:
    """A timestamp column's int64 nanoseconds (a view, no cast of time zones)."""
    ints: Int64Array = np.asarray(
        timestamps.view(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    return ints


def _mask(result: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _texts(text: pa.Array, where: npt.NDArray[np.int64]) -> list[str]:
    if not len(where):
        return []
    cells: list[str] = text.take(pa.array(where)).to_pylist()
    return cells


def _bad_time(cell: str, why: str) -> str:
    if not cell:
        return "empty timestamp"
    return f"bad timestamp {cell!r:.40}: {why}"


def _cells(values: Int64Array, bad: list[npt.NDArray[np.int64]], reasons: list[str]) -> Cells:
    """Put the bad cells (gathered group by group) in ascending order with their reasons."""
    where = np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
    order = np.argsort(where, kind="stable")
    return Cells(values, where[order].astype(np.int64), [reasons[i] for i in order.tolist()])
