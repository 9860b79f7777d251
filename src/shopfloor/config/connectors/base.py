"""What every connector and every tag mapping has in common, whatever the protocol.

A protocol module subclasses :class:`TagConfig` (adding its own address fields, if any)
and :class:`ConnectorConfigBase` (adding host, port, security …, and a ``kind`` literal).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.durations import parse_duration_s
from shopfloor.model.tags import validate_path

DataTypeName = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
"""Wire types a device may hold a value in; the sampler turns them into float64 or text."""

ByteOrder = Literal["big", "little"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagConfig(_Strict):
    """One value to collect: where it is on the device and what it means.

    The device-side fields (``address``, ``data_type``, orders, ``bit``, ``length``) are
    read by the connector; the meaning (``scale``/``offset``, ``states``, ``unit``) and
    the reporting (``deadband``, ``period``) are applied by the shared sampler.
    """

    name: str = Field(description="Tag name, the last segment of its path.")
    path: str | None = Field(
        None,
        description="Full ISA-95 path; default: the connector's `asset` followed by `name`.",
    )
    address: str = Field(
        "", description="Where the value lives on the device, in the protocol's notation."
    )
    data_type: DataTypeName = Field("float32", description="Type of the value on the device.")
    byte_order: ByteOrder = Field("big", description="Byte order within a 16-bit word.")
    word_order: ByteOrder = Field(
        "big", description="Order of 16-bit words in 32- and 64-bit values."
    )
    bit: int | None = Field(
        None, ge=0, le=63, description="Read one bit of the value (0 = least significant)."
    )
    length: int | None = Field(None, ge=1, le=1024, description="Length of a string, in bytes.")
    scale: float = Field(1.0, description="Engineering value = raw × scale + offset.")
    offset: float = Field(0.0, description="Added after scaling.")
    states: dict[str, str] | None = Field(
        None, description='Labels of an enumerated value, e.g. {"1" = "RUNNING"}.'
    )
    unit: str = Field("", description="Engineering unit, e.g. degC, bar, kW.")
    description: str = Field("", description="Free text for people.")
    eng_low: float | None = Field(None, description="Lower end of the engineering range.")
    eng_high: float | None = Field(None, description="Upper end of the engineering range.")
    deadband: float = Field(
        0.0, ge=0, description="Report a value only when it moved more than this."
    )
    deadband_mode: Literal["absolute", "percent"] = Field(
        "absolute", description="`percent` is a percentage of the engineering range."
    )
    period: str | None = Field(
        None, description="Poll period of this tag; default: the connector's `period`."
    )
    writable: bool = Field(False, description="Allow writes to this tag (off by default).")

    @field_validator("period")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration_s(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else validate_path(value)

    @model_validator(mode="after")
    def _percent_needs_range(self) -> TagConfig:
        if self.deadband_mode == "percent" and (self.eng_low is None or self.eng_high is None):
            raise ValueError("deadband_mode = 'percent' needs eng_low and eng_high")
        return self

    def full_path(self, asset: str) -> str:
        """The tag's ISA-95 path under ``asset``."""
        if self.path is not None:
            return self.path
        return validate_path(f"{asset}/{self.name}" if asset else self.name)

    def deadband_abs(self) -> float:
        """The deadband in engineering units."""
        if (
            self.deadband_mode == "percent"
            and self.eng_low is not None
            and self.eng_high is not None
        ):
            return self.deadband / 100.0 * (self.eng_high - self.eng_low)
        return self.deadband


class ConnectorConfigBase(_Strict):
    """Settings every connector has."""

    kind: str = Field(description="Protocol: modbus, opcua, mqtt, sparkplug, s7, simulator.")
    name: str = Field(description="Unique name of the connector within its edge.")
    enabled: bool = Field(True, description="Set false to keep the section but not run it.")
    asset: str = Field(
        "", description="ISA-95 path of the equipment; tag names are appended to it."
    )
    period: str = Field("1s", description="Default poll period of the connector's tags.")
    timeout: str = Field("2s", description="How long to wait for the device to answer.")
    max_silence: str = Field(
        "10m",
        description="Report an unchanged value at least this often (report-by-exception "
        "heartbeat); `0s` turns it off.",
    )
    allow_writes: bool = Field(
        False,
        description="Let the platform write to this connector's `writable` tags (Modbus, "
        "S7); each write still needs an admin to enable writes for the connector through "
        "the API and an operator to confirm it (docs/writes.md).",
    )

    @field_validator("period", "timeout", "max_silence")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("asset")
    @classmethod
    def _asset(cls, value: str) -> str:
        return validate_path(value) if value else value

    @property
    def period_s(self) -> float:
        """``period`` in seconds."""
        return parse_duration_s(self.period)

    @property
    def timeout_s(self) -> float:
        """``timeout`` in seconds."""
        return parse_duration_s(self.timeout)

    @property
    def max_silence_s(self) -> float:
        """``max_silence`` in seconds (0 = never force a report)."""
        return parse_duration_s(self.max_silence)
