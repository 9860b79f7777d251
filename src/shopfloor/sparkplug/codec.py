"""Sparkplug B topics, payloads and metric values: encode and decode, nothing else.

Shared by the host application (``shopfloor.edge``) and the simulated edge node
(``shopfloor.simulator``); it imports neither.

Signed integers travel in the unsigned protobuf fields as two's complement. Encoders in
the wild disagree on the width (Java and C sign-extend ``Int8``/``Int16`` to 32 bits,
others use 8 or 16 bits), so :func:`metric_value` masks to the type's own width, which
reads both correctly; :func:`set_value` sign-extends to 32 bits like the Java reference.
Integer types are also read from either ``int_value`` or ``long_value`` (some encoders
put ``UInt32`` in ``long_value``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf.message import DecodeError

from shopfloor.sparkplug.schema import DataType, Payload

NAMESPACE = "spBv1.0"
"""First level of every Sparkplug B topic."""
BD_SEQ = "bdSeq"
"""The birth/death sequence metric of NBIRTH and NDEATH."""
REBIRTH = "Node Control/Rebirth"
"""The NCMD metric a host sets true to ask an edge node for new births."""

ScalarValue = bool | int | float | str | bytes | None
"""A decoded metric value (None for null)."""


class MessageType(StrEnum):
    """Sparkplug B message types (the third topic level)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


class SparkplugDecodeError(ValueError):
    """A payload or metric cannot be decoded (the message says why)."""


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed Sparkplug B topic.

    For ``STATE`` (``spBv1.0/STATE/<host_id>``) ``group`` is empty and ``node`` is the
    host id.
    """

    group: str
    message_type: MessageType
    node: str
    device: str | None = None

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.node}"
        parts = [NAMESPACE, self.group, self.message_type.value, self.node]
        if self.device is not None:
            parts.append(self.device)
        return "/".join(parts)


_DEVICE_TYPES = {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}


def parse_topic(topic: str) -> SparkplugTopic | None:
    """The parts of a Sparkplug B topic, or None if ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE or not all(parts):
        return None
    if parts[1] == "STATE" and len(parts) == 3:
        return SparkplugTopic("", MessageType.STATE, parts[2])
    try:
        kind = MessageType(parts[2])
    except ValueError:
        return None
    if kind is MessageType.STATE:
        return None
    if kind in _DEVICE_TYPES:
        if len(parts) != 5:
            return None
        return SparkplugTopic(parts[1], kind, parts[3], parts[4])
    if len(parts) != 4:
        return None
    return SparkplugTopic(parts[1], kind, parts[3])


def topic_for(group: str, message_type: MessageType, node: str, device: str | None = None) -> str:
    """The topic of a message."""
    return str(SparkplugTopic(group, message_type, node, device))


def state_topic(host_id: str) -> str:
    """``spBv1.0/STATE/<host_id>`` (Sparkplug 3.0)."""
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(*, online: bool, timestamp_ms: int) -> bytes:
    """The JSON body of a Sparkplug 3.0 STATE message."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def parse_state(data: bytes) -> tuple[bool, int] | None:
    """``(online, timestamp_ms)`` of a STATE body, or None if it is not one."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    online, ts = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
        return None
    return online, ts


# --------------------------------------------------------------------------- payloads
def decode_payload(data: bytes) -> Any:
    """Parse a Sparkplug B payload.

    Raises:
        SparkplugDecodeError: the bytes are not a valid payload.
    """
    try:
        return Payload.FromString(data)
    except (DecodeError, RecursionError, ValueError) as err:
        raise SparkplugDecodeError(f"not a Sparkplug B payload: {err}") from err


def new_payload(*, timestamp_ms: int, seq: int | None = None) -> Any:
    """An empty payload with its timestamp and, unless None, sequence number."""
    payload = Payload(timestamp=timestamp_ms)
    if seq is not None:
        payload.seq = seq
    return payload


def add_metric(
    container: Any,
    *,
    name: str | None = None,
    alias: int | None = None,
    datatype: DataType | None = None,
    value: ScalarValue = None,
    timestamp_ms: int | None = None,
    properties: Mapping[str, ScalarValue] | None = None,
) -> Any:
    """Append a metric to a payload (or template) and return it.

    A None ``datatype`` leaves the field out (DATA messages may rely on the birth);
    the value is then encoded by its Python type.
    """
    metric = container.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    if timestamp_ms is not None:
        metric.timestamp = timestamp_ms
    if datatype is not None:
        metric.datatype = int(datatype)
    set_value(metric, datatype if datatype is not None else infer_datatype(value), value)
    if properties:
        set_properties(metric.properties, properties)
    return metric


def infer_datatype(value: ScalarValue) -> DataType:
    """The Sparkplug type a Python value is sent as (bool, Int64, Double, String, Bytes)."""
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64
    if isinstance(value, float):
        return DataType.DOUBLE
    if isinstance(value, bytes):
        return DataType.BYTES
    return DataType.STRING


_INT_BITS = {
    DataType.INT8: 8,
    DataType.INT16: 16,
    DataType.INT32: 32,
    DataType.INT64: 64,
}
_UINT_BITS = {
    DataType.UINT8: 8,
    DataType.UINT16: 16,
    DataType.UINT32: 32,
    DataType.UINT64: 64,
    DataType.DATETIME: 64,
}
_STRINGS = {DataType.STRING, DataType.TEXT, DataType.UUID}
_BYTES = {DataType.BYTES, DataType.FILE}
SCALAR_TYPES = frozenset(set(_INT_BITS) | set(_UINT_BITS) | _STRINGS | _BYTES) | {
    DataType.FLOAT,
    DataType.DOUBLE,
    DataType.BOOLEAN,
}
"""Types whose value is one number, boolean, string or byte string."""


def set_value(metric: Any, datatype: DataType, value: ScalarValue) -> None:
    """Store ``value`` in the field ``datatype`` uses (None sets ``is_null``).

    Raises:
        ValueError: the value does not fit the type, or the type is not scalar.
    """
    if value is None:
        metric.is_null = True
        return
    if datatype in _INT_BITS or datatype in _UINT_BITS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{datatype.name} needs an int, not {type(value).__name__}")
        bits = _INT_BITS.get(datatype) or _UINT_BITS[datatype]
        signed = datatype in _INT_BITS
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not low <= value <= high:
            raise ValueError(f"{value} does not fit {datatype.name}")
        if bits == 64:
            metric.long_value = value & 0xFFFF_FFFF_FFFF_FFFF
        else:
            metric.int_value = value & 0xFFFF_FFFF  # negative: 32-bit two's complement
    elif datatype is DataType.FLOAT:
        metric.float_value = float(value)
    elif datatype is DataType.DOUBLE:
        metric.double_value = float(value)
    elif datatype is DataType.BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype in _STRINGS:
        if not isinstance(value, str):
            raise ValueError(f"{datatype.name} needs a str, not {type(value).__name__}")
        metric.string_value = value
    elif datatype in _BYTES:
        if not isinstance(value, bytes):
            raise ValueError(f"{datatype.name} needs bytes, not {type(value).__name__}")
        metric.bytes_value = value
    else:
        raise ValueError(f"{datatype.name} is not a scalar type")


def metric_value(metric: Any, datatype: int) -> ScalarValue:
    """The value of ``metric`` read as ``datatype`` (from the metric or its birth).

    Raises:
        SparkplugDecodeError: the metric has no value, its value is in a field the type
            does not use, or the type is not scalar (DataSet, Template, arrays …).
    """
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    try:
        kind = DataType(datatype)
    except ValueError:
        raise SparkplugDecodeError(f"unknown datatype {datatype}") from None
    if kind not in SCALAR_TYPES:
        raise SparkplugDecodeError(f"datatype {kind.name} is not supported as a tag value")
    if field is None:
        raise SparkplugDecodeError("the metric has no value")
    if kind in _INT_BITS or kind in _UINT_BITS:
        if field not in {"int_value", "long_value"}:
            raise SparkplugDecodeError(f"{kind.name} value in {field}")
        raw = int(getattr(metric, field))
        bits = _INT_BITS.get(kind) or _UINT_BITS[kind]
        raw &= (1 << bits) - 1
        if kind in _INT_BITS and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return raw
    expected = {
        DataType.FLOAT: {"float_value", "double_value"},
        DataType.DOUBLE: {"double_value", "float_value"},
        DataType.BOOLEAN: {"boolean_value"},
    }.get(kind)
    if expected is None:
        expected = {"string_value"} if kind in _STRINGS else {"bytes_value"}
    if field not in expected:
        raise SparkplugDecodeError(f"{kind.name} value in {field}")
    value: ScalarValue = getattr(metric, field)
    return value


def set_properties(properties: Any, values: Mapping[str, ScalarValue]) -> None:
    """Fill a PropertySet from a mapping (types inferred, see :func:`infer_datatype`)."""
    for key, value in values.items():
        properties.keys.append(key)
        prop = properties.values.add()
        datatype = infer_datatype(value)
        prop.type = int(datatype)
        if value is None:
            prop.is_null = True
        elif datatype is DataType.BOOLEAN:
            prop.boolean_value = bool(value)
        elif datatype is DataType.INT64:
            prop.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
        elif datatype is DataType.DOUBLE:
            prop.double_value = float(value)
        else:
            prop.string_value = str(value)


def property_values(properties: Any, *, depth: int = 0) -> dict[str, Any]:
    """A PropertySet as a dict (nested sets as dicts, set lists as lists of dicts).

    Properties that cannot be read (unknown type, no value) are left out.
    """
    out: dict[str, Any] = {}
    if depth > 8:
        return out
    for key, prop in zip(properties.keys, properties.values, strict=False):
        field = prop.WhichOneof("value")
        if prop.is_null or field is None:
            out[key] = None
        elif field == "propertyset_value":
            out[key] = property_values(prop.propertyset_value, depth=depth + 1)
        elif field == "propertysets_value":
            out[key] = [
                property_values(p, depth=depth + 1) for p in prop.propertysets_value.propertyset
            ]
        elif field == "extension_value":
            continue
        else:
            try:
                out[key] = metric_value(prop, prop.type) if prop.type else getattr(prop, field)
            except SparkplugDecodeError:
                out[key] = getattr(prop, field)
    return out


def as_point_value(value: ScalarValue) -> float | str | None:
    """A decoded metric value as a point value: numbers and booleans as float, text as str.

    Bytes have no point form (None).
    """
    if value is None or isinstance(value, bytes):
        return None
    if isinstance(value, str):
        return value
    return float(value)
