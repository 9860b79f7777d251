"""Configuration of the Siemens S7 connector (S7-300/400/1200/1500 over ISO-on-TCP).

Addresses use STEP 7's absolute notation, with or without TIA Portal's ``%``:

===================  ===========================================================
``DB1.DBX2.3``       bit 3 of byte 2 of data block 1 (bool)
``DB1.DBB0``         byte 0 (``uint16`` = BYTE/USINT, ``int16`` = SINT)
``DB1.DBW0``         word at byte 0 (default ``int16`` = INT; ``uint16`` = WORD/UINT)
``DB1.DBD4``         double word at byte 4 (default ``float32`` = REAL; ``int32`` = DINT,
                     ``uint32`` = DWORD/UDINT)
``DB1.DBL8``         8 bytes at byte 8 (default ``float64`` = LREAL; ``int64`` = LINT,
                     ``uint64`` = ULINT). STEP 7 has no letter for these; ``L`` is ours.
``DB1.S10.20``       STRING[20] at byte 10 (2 header bytes, then up to 20 characters)
``I0.1`` / ``E0.1``  input bit; ``IB0``, ``IW0``, ``ID0``, ``IL0`` likewise
``Q0.0`` / ``A0.0``  output bit; ``QB0``, ``QW0``, ``QD0``, ``QL0`` likewise
``M10.5``            merker (flag) bit; ``MB10``, ``MW10``, ``MD10``, ``ML10`` likewise
===================  ===========================================================

The letter sets the width; ``data_type`` may choose how those bytes are read (a bool
with ``bit`` takes one bit of a byte, word or double word). Timers and counters are not
supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig

S7Area = Literal["DB", "I", "Q", "M"]

_DB = re.compile(r"^%?DB(\d+)\.DB([XBWDL])(\d+)(?:\.(\d+))?$", re.IGNORECASE)
_DB_STRING = re.compile(r"^%?DB(\d+)\.S(\d+)\.(\d+)$", re.IGNORECASE)
_OTHER = re.compile(r"^%?([IEQAM])([XBWDL]?)(\d+)(?:\.(\d+))?$", re.IGNORECASE)
_AREA = {"I": "I", "E": "I", "Q": "Q", "A": "Q", "M": "M"}
_WIDTH = {"X": 1, "B": 1, "W": 2, "D": 4, "L": 8}
_TYPES: dict[str, tuple[str, ...]] = {
    "X": ("bool",),
    "B": ("uint16", "int16", "bool"),
    "W": ("int16", "uint16", "bool"),
    "D": ("float32", "int32", "uint32", "bool"),
    "L": ("float64", "int64", "uint64", "bool"),
    "S": ("string",),
}


@dataclass(frozen=True, slots=True)
class S7Address:
    """A parsed S7 address.

    Attributes:
        area: ``DB``, ``I`` (inputs), ``Q`` (outputs) or ``M`` (merkers).
        db: data block number (0 outside data blocks).
        byte: first byte.
        width: ``X``, ``B``, ``W``, ``D``, ``L`` or ``S`` (string).
        bit: the bit of an ``X`` address.
        max_length: the declared length of a string.
    """

    area: S7Area
    db: int
    byte: int
    width: str
    bit: int | None = None
    max_length: int = 0

    @property
    def size(self) -> int:
        """Bytes the value spans (a string's two header bytes included)."""
        return self.max_length + 2 if self.width == "S" else _WIDTH[self.width]

    @property
    def default_type(self) -> str:
        """The data type the letter implies."""
        return _TYPES[self.width][0]


def parse_s7_address(text: str) -> S7Address:
    """Parse ``DB1.DBD4``, ``DB1.DBX2.3``, ``DB1.S10.20``, ``MW10``, ``I0.1``, ``QB0`` ….

    Raises:
        ValueError: the text is not an S7 address, or a bit or length is out of range.
    """
    t = text.strip()
    if m := _DB_STRING.match(t):
        db, byte, length = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not 1 <= length <= 254:
            raise ValueError(f"an S7 string holds 1 to 254 characters, not {length}")
        return _checked(S7Address("DB", db, byte, "S", max_length=length), text)
    if m := _DB.match(t):
        db, width, byte, bit = int(m.group(1)), m.group(2).upper(), int(m.group(3)), m.group(4)
        return _checked(S7Address("DB", db, byte, width, _bit(width, bit, text)), text)
    if m := _OTHER.match(t):
        area = _AREA[m.group(1).upper()]
        width = m.group(2).upper() or "X"
        byte, bit = int(m.group(3)), m.group(4)
        return _checked(S7Address(area, 0, byte, width, _bit(width, bit, text)), text)  # type: ignore[arg-type]
    raise ValueError(
        f"expected an S7 address like DB1.DBD4, DB1.DBX2.3, DB1.S10.20, MW10, I0.1 or QB0, "
        f"got {text!r}"
    )


def _bit(width: str, bit: str | None, text: str) -> int | None:
    if width == "X":
        if bit is None:
            raise ValueError(f"bit address {text!r} needs .0 … .7 after the byte")
        if int(bit) > 7:
            raise ValueError(f"bit {bit} of {text!r} is past 7")
        return int(bit)
    if bit is not None:
        raise ValueError(f"{text!r}: only bit addresses (X) take a .bit")
    return None


def _checked(address: S7Address, text: str) -> S7Address:
    if address.byte > 65535 or address.db > 65535:
        raise ValueError(f"{text!r} is out of range")
    if address.area == "DB" and address.db < 1:
        raise ValueError(f"{text!r}: data blocks are numbered from 1")
    return address


class S7TagConfig(TagConfig):
    """One S7 value; ``data_type`` defaults to what the address letter implies."""

    address: str = Field(
        description="S7 address: DB1.DBD4, DB1.DBW0, DB1.DBX2.3, DB1.S10.20, MW10, I0.1, QB0 …"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_s7_address(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data_type" not in data and "address" in data:
            try:
                return {**data, "data_type": parse_s7_address(str(data["address"])).default_type}
            except ValueError:
                pass  # reported by the address validator
        return data

    @model_validator(mode="after")
    def _consistent(self) -> S7TagConfig:
        where = parse_s7_address(self.address)
        allowed = _TYPES[where.width]
        if self.data_type not in allowed:
            raise ValueError(
                f"{self.address} is {where.size} bytes wide: data_type must be one of "
                f"{', '.join(allowed)}"
            )
        if where.width == "X" and self.bit is not None:
            raise ValueError(f"{self.address} already names its bit; leave `bit` out")
        if self.data_type == "bool" and where.width != "X" and self.bit is None:
            raise ValueError(f"a bool at {self.address} needs `bit`")
        if self.bit is not None and self.bit >= 8 * where.size:
            raise ValueError(f"bit {self.bit} is outside the {where.size} bytes of {self.address}")
        if where.width == "S" and self.length not in (None, where.max_length):
            raise ValueError(f"{self.address} declares its length; leave `length` out")
        if self.writable and (where.width == "X" or self.bit is not None):
            raise ValueError("single bits cannot be written safely (read-modify-write)")
        return self

    @property
    def location(self) -> S7Address:
        """The parsed address."""
        return parse_s7_address(self.address)


class S7ConnectorConfig(ConnectorConfigBase):
    """A Siemens S7 PLC reached over ISO-on-TCP (port 102)."""

    kind: Literal["s7"] = Field("s7", description="Protocol: Siemens S7.")
    host: str = Field(description="Address of the PLC or its CP.")
    port: int = Field(102, ge=1, le=65535, description="TCP port (ISO-on-TCP is 102).")
    rack: int = Field(0, ge=0, le=7, description="Rack of the CPU (0 on S7-1200/1500).")
    slot: int = Field(
        1, ge=0, le=31, description="Slot of the CPU: 1 on S7-1200/1500, 2 on S7-300."
    )
    max_gap: int = Field(
        32,
        ge=0,
        le=4096,
        description="Join two reads of one area or data block when at most this many "
        "unused bytes lie between them.",
    )
    tags: list[S7TagConfig] = Field(default_factory=list, description="The values to read.")

    @property
    def endpoint(self) -> str:
        """``host:port``, for logs."""
        return f"{self.host}:{self.port}"
