"""Typed values out of (and into) device memory, shared by the Modbus and S7 connectors.

A device hands over bytes: Modbus as 16-bit registers (each sent high byte first), S7
as plain byte areas. A :class:`Layout` says how one value sits in those bytes: its type,
its size, the byte order inside each 16-bit word, the order of the words, and an
optional bit. Decoding is vectorised: every tag of one layout in a poll group is read
by one numpy gather, whatever the number of tags.

Orders, by the usual letters (``A`` is the most significant byte of a 32-bit value)::

    byte_order  word_order   on the wire
    big         big          A B C D   (Modbus standard, S7)
    big         little       C D A B   ("word swap")
    little      big          B A D C   ("byte swap")
    little      little       D C B A   (little-endian)

64-bit values follow the same rule with four words. Integers wider than 53 bits lose
precision in the platform's float64 values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

UInt8Array = npt.NDArray[np.uint8]
IntpArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]

_KIND = {
    "int16": "i",
    "int32": "i",
    "int64": "i",
    "uint16": "u",
    "uint32": "u",
    "uint64": "u",
    "float32": "f",
    "float64": "f",
    "bool": "u",
}
_SIZE = {
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "bool": 2,
}


def value_size(data_type: str, *, length: int | None = None) -> int:
    """Bytes a value of ``data_type`` takes in register memory (a bool takes a register).

    Raises:
        ValueError: an unknown type, or a string without a length.
    """
    if data_type == "string":
        if not length:
            raise ValueError("a string needs a length in bytes")
        return length
    try:
        return _SIZE[data_type]
    except KeyError:
        raise ValueError(f"unknown data type {data_type!r}") from None


def register_count(data_type: str, *, length: int | None = None) -> int:
    """16-bit registers a value of ``data_type`` spans."""
    return (value_size(data_type, length=length) + 1) // 2


@dataclass(frozen=True, slots=True)
class Layout:
    """How one value sits in device bytes.

    Attributes:
        data_type: a wire type name (``int16`` … ``float64``, ``bool``, ``string``).
        size: bytes the value spans: 1 for an S7 byte or bit, 2, 4 or 8, the length of
            a string.
        byte_order: order of the two bytes in each 16-bit word.
        word_order: order of the 16-bit words in a 32- or 64-bit value.
        bit: take this bit (0 = least significant) of the unsigned value instead.
    """

    data_type: str
    size: int
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None

    def __post_init__(self) -> None:
        if self.data_type == "string":
            return
        if self.data_type not in _KIND:
            raise ValueError(f"unknown data type {self.data_type!r}")
        if self.size not in (1, 2, 4, 8):
            raise ValueError(f"a {self.data_type} cannot be {self.size} bytes wide")
        if _KIND[self.data_type] == "f" and self.size not in (4, 8):
            raise ValueError("floats are 4 or 8 bytes wide")
        if self.bit is not None and not 0 <= self.bit < 8 * self.size:
            raise ValueError(f"bit {self.bit} is outside a {self.size}-byte value")

    @property
    def wire_positions(self) -> IntpArray:
        """For each byte of the big-endian value, its position on the wire."""
        return _wire_positions(self.size, self.byte_order, self.word_order)

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype of the value once its bytes are in big-endian order."""
        kind = "u" if self.data_type == "bool" or self.bit is not None else _KIND[self.data_type]
        return np.dtype(f">{kind}{self.size}")


@lru_cache(maxsize=64)
def _wire_positions(size: int, byte_order: str, word_order: str) -> IntpArray:
    if size == 1:
        return np.zeros(1, dtype=np.intp)
    words = size // 2
    pos = np.empty(size, dtype=np.intp)
    for wire in range(size):
        word, byte = divmod(wire, 2)
        canon_word = word if word_order == "big" else words - 1 - word
        canon_byte = byte if byte_order == "big" else 1 - byte
        pos[2 * canon_word + canon_byte] = wire
    pos.flags.writeable = False  # shared by every caller through the cache
    return pos


def registers_to_bytes(registers: Sequence[int] | npt.NDArray[np.integer]) -> UInt8Array:
    """The bytes of 16-bit registers as the device sent them (high byte first)."""
    return np.asarray(registers, dtype=">u2").view(np.uint8)


def bytes_to_registers(data: bytes) -> list[int]:
    """16-bit registers (high byte first) holding ``data``, padded with a zero byte if odd."""
    if len(data) % 2:
        data += b"\x00"
    return np.frombuffer(data, dtype=">u2").astype(int).tolist()  # type: ignore[no-any-return]


def decode(buf: UInt8Array, offsets: npt.ArrayLike, layout: Layout) -> Float64Array:
    """Decode one numeric value of ``layout`` at each byte offset of ``buf``.

    Booleans without a bit are 1.0 when any of their bytes is non-zero.

    Raises:
        ValueError: ``layout`` is a string layout.
        IndexError: an offset reaches past the end of ``buf``.
    """
    if layout.data_type == "string":
        raise ValueError("decode strings with decode_strings")
    at = np.asarray(offsets, dtype=np.intp)
    if at.size == 0:
        return np.empty(0)
    raw = buf[at[:, None] + layout.wire_positions[None, :]]
    values = np.ascontiguousarray(raw).view(layout.dtype).reshape(len(at))
    if layout.bit is not None:
        shifted = values >> np.asarray(layout.bit, dtype=layout.dtype)
        picked: Float64Array = (shifted & np.asarray(1, dtype=layout.dtype)).astype(np.float64)
        return picked
    if layout.data_type == "bool":
        nonzero: Float64Array = (values != 0).astype(np.float64)
        return nonzero
    out: Float64Array = values.astype(np.float64)
    return out


def decode_strings(
    buf: UInt8Array,
    offsets: Sequence[int],
    length: int,
    *,
    byte_order: str = "big",
    encoding: str = "latin-1",
) -> list[str]:
    """Decode a fixed-length string at each offset, cut at the first NUL, trailing spaces off.

    ``byte_order = "little"`` swaps the two characters of each 16-bit word, as some
    Modbus devices store text. Undecodable bytes become U+FFFD, never an error.
    """
    out: list[str] = []
    for offset in offsets:
        chunk = buf[offset : offset + length].tobytes()
        if byte_order == "little":
            chunk = _swap_pairs(chunk)
        chunk = chunk.split(b"\x00", 1)[0]
        out.append(chunk.decode(encoding, errors="replace").rstrip(" "))
    return out


def _swap_pairs(data: bytes) -> bytes:
    even = len(data) - len(data) % 2
    swapped = np.frombuffer(data[:even], dtype=np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
    return swapped + data[even:]


def encode(value: float | int | bool | str, layout: Layout) -> bytes:
    """The wire bytes of ``value`` in ``layout``: the inverse of :func:`decode`.

    Integers are rounded to the nearest whole number.

    Raises:
        ValueError: the value does not fit the type, or the layout is a bit of a wider
            value (writing one bit of a register is not atomic; shopfloor refuses it).
    """
    if layout.data_type == "string":
        text = str(value).encode("latin-1", errors="replace")
        if len(text) > layout.size:
            raise ValueError(f"text is {len(text)} bytes, the tag holds {layout.size}")
        data = text.ljust(layout.size, b"\x00")
        return _swap_pairs(data) if layout.byte_order == "little" else data
    if layout.bit is not None:
        raise ValueError("writing a single bit of a wider value is not supported")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got {value!r}")
    dtype = layout.dtype
    if layout.data_type == "bool":
        number: float | int = 1 if value else 0
    elif dtype.kind == "f":
        number = float(value)
    else:
        number = value if isinstance(value, int) else round(float(value))
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if not info.min <= number <= info.max:
            raise ValueError(f"{value} is outside the range of {layout.data_type}")
    canonical = np.array([number], dtype=dtype).tobytes()
    wire = bytearray(layout.size)
    for canon, pos in enumerate(layout.wire_positions):
        wire[pos] = canonical[canon]
    return bytes(wire)


class ProblemLog:
    """Logs a problem of a request once when it starts and once when it clears.

    A device answering the same exception to every poll would otherwise fill the log;
    operators need the transitions (house rule 7).
    """

    def __init__(self, logger: logging.Logger, source: str) -> None:
        self._logger = logger
        self._source = source
        self._current: dict[object, str] = {}

    def problem(self, key: object, what: str, reason: str) -> None:
        """Record that ``what`` (a request, for the log) fails with ``reason``."""
        if self._current.get(key) != reason:
            self._current[key] = reason
            self._logger.warning("%s: %s: %s", self._source, what, reason)

    def ok(self, key: object, what: str) -> None:
        """Record that ``what`` answers again."""
        if self._current.pop(key, None) is not None:
            self._logger.info("%s: %s recovered", self._source, what)

    @property
    def failing(self) -> bool:
        """Whether any problem is open (a cheap check before :meth:`ok` on hot paths)."""
        return bool(self._current)

    def active(self) -> dict[object, str]:
        """Problems not yet cleared, by key."""
        return dict(self._current)
