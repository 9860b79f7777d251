"""Configuration of the Modbus TCP and RTU connector.

Addresses are written ``table:offset`` with a 0-based offset, the number that goes on
the wire: ``hr:100`` (holding register), ``ir:0`` (input register), ``co:5`` (coil),
``di:7`` (discrete input). Modicon numbers from device manuals are accepted too and are
1-based: ``40001`` is ``hr:0``, ``30001`` is ``ir:0``, ``10001`` is ``di:0``, ``00001``
is ``co:0``; six digits (``400001`` … ``465536``) reach the whole 16-bit range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig


class Table(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "hr"
    INPUT = "ir"
    COIL = "co"
    DISCRETE = "di"

    @property
    def is_bits(self) -> bool:
        """Coils and discrete inputs hold single bits; the others 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE)


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """Where a value starts: a table and a 0-based offset."""

    table: Table
    offset: int

    def __str__(self) -> str:
        return f"{self.table.value}:{self.offset}"


_NOTATION = re.compile(r"^\s*(hr|ir|co|di)\s*:\s*(\d+)\s*$", re.IGNORECASE)
_MODICON = re.compile(r"^\s*([0134])(\d{4,5})\s*$")
_MODICON_TABLE = {"0": Table.COIL, "1": Table.DISCRETE, "3": Table.INPUT, "4": Table.HOLDING}


def parse_address(text: str) -> ModbusAddress:
    """Parse ``hr:100``-style or Modicon (``40101``) addresses.

    Raises:
        ValueError: the text is neither, or the offset is outside 0…65535.
    """
    match = _NOTATION.match(text)
    if match:
        table, offset = Table(match.group(1).lower()), int(match.group(2))
    else:
        modicon = _MODICON.match(text)
        if not modicon or int(modicon.group(2)) == 0:
            raise ValueError(
                f"expected a Modbus address like hr:100, ir:0, co:5, di:7 or 40001, got {text!r}"
            )
        table, offset = _MODICON_TABLE[modicon.group(1)], int(modicon.group(2)) - 1
    if offset > 0xFFFF:
        raise ValueError(f"address {text!r} is past the last Modbus address (65535)")
    return ModbusAddress(table, offset)


class ModbusTagConfig(TagConfig):
    """One Modbus value. Coils and discrete inputs are booleans (the default for them)."""

    address: str = Field(
        description="Table and 0-based offset: hr:100, ir:0, co:5, di:7; or a Modicon "
        "number such as 40001 (= hr:0)."
    )
    unit_id: int | None = Field(
        None,
        ge=0,
        le=255,
        description="Modbus unit (slave) id of this tag; default: the connector's `unit_id`.",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data_type" not in data and "address" in data:
            try:
                if parse_address(str(data["address"])).table.is_bits:
                    return {**data, "data_type": "bool"}
            except ValueError:
                pass  # reported by the after-validator with the field's name
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTagConfig:
        where = parse_address(self.address)
        if where.table.is_bits:
            if self.data_type != "bool" or self.bit is not None:
                raise ValueError(f"{where.table.value} addresses hold single bits: bool, no bit")
        elif self.data_type == "string" and not self.length:
            raise ValueError("a string tag needs `length` (bytes)")
        if self.writable:
            if where.table in (Table.INPUT, Table.DISCRETE):
                raise ValueError("input registers and discrete inputs are read-only")
            if self.bit is not None:
                raise ValueError(
                    "a bit inside a register cannot be written safely (read-modify-write)"
                )
        return self

    @property
    def location(self) -> ModbusAddress:
        """The parsed address."""
        return parse_address(self.address)


class ModbusConnectorConfig(ConnectorConfigBase):
    """A Modbus TCP server or a Modbus RTU serial line."""

    kind: Literal["modbus"] = Field("modbus", description="Protocol: Modbus.")
    transport: Literal["tcp", "rtu"] = Field(
        "tcp", description="`tcp` (Modbus TCP) or `rtu` (Modbus RTU over a serial port)."
    )
    host: str | None = Field(None, description="Device address (TCP); required for `tcp`.")
    port: int = Field(502, ge=1, le=65535, description="TCP port of the device.")
    serial_port: str | None = Field(
        None, description="Serial device, e.g. /dev/ttyUSB0; required for `rtu`."
    )
    baudrate: int = Field(19200, gt=0, description="Serial speed in bit/s (RTU).")
    parity: Literal["N", "E", "O"] = Field(
        "E", description="Serial parity (RTU): N, E or O; the Modbus default is E."
    )
    stopbits: Literal[1, 2] = Field(1, description="Serial stop bits (RTU).")
    bytesize: Literal[7, 8] = Field(8, description="Serial data bits (RTU).")
    unit_id: int = Field(
        1, ge=0, le=255, description="Modbus unit (slave) id of tags that name none."
    )
    retries: int = Field(
        0,
        ge=0,
        le=10,
        description="Resend an unanswered request this many times before the device counts "
        "as unavailable; each try waits `timeout`.",
    )
    max_gap: int = Field(
        8,
        ge=0,
        le=2000,
        description="Join two reads when at most this many unused registers (or bits) lie "
        "between them; 0 joins only touching ones.",
    )
    max_registers: int = Field(
        125, ge=1, le=125, description="Most registers one request reads (protocol limit 125)."
    )
    max_bits: int = Field(
        2000, ge=1, le=2000, description="Most coils or inputs one request reads (limit 2000)."
    )
    tags: list[ModbusTagConfig] = Field(default_factory=list, description="The values to read.")

    @model_validator(mode="after")
    def _endpoint(self) -> ModbusConnectorConfig:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport = 'tcp' needs `host`")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport = 'rtu' needs `serial_port`")
        for tag in self.tags:
            if not tag.location.table.is_bits:
                words = (
                    ((tag.length or 0) + 1) // 2
                    if tag.data_type == "string"
                    else _WORDS[tag.data_type]
                )
                if words > self.max_registers:
                    raise ValueError(
                        f"tag {tag.name}: {words} registers do not fit one request "
                        f"(max_registers = {self.max_registers})"
                    )
        return self

    @property
    def endpoint(self) -> str:
        """``host:port`` or the serial device, for logs."""
        if self.transport == "rtu":
            return str(self.serial_port)
        return f"{self.host}:{self.port}"


_WORDS = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
