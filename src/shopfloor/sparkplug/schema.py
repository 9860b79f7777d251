"""The Sparkplug B payload schema, built in Python from the Sparkplug 3.0 specification.

The specification (Eclipse Sparkplug 3.0.0, chapter 6.4 "Payloads" and its
``sparkplug_b.proto``) defines one protobuf (proto2) message, ``Payload``, with nested
``Template``, ``DataSet``, ``PropertyValue``, ``PropertySet``, ``PropertySetList``,
``MetaData`` and ``Metric``, and a ``DataType`` enum. This module describes the same
messages with :mod:`google.protobuf.descriptor_pb2` and lets protobuf build the classes,
so there is no ``protoc`` step and no generated code in the repository. Field numbers and
types follow the specification exactly: they are the wire format. The descriptors live
in a private pool so another Sparkplug library in the same process cannot clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

__all__ = ["PACKAGE", "DataType", "Payload"]

PACKAGE = "org.eclipse.tahu.protobuf"
"""The specification's protobuf package (full names only; they never go on the wire)."""

_EXT_MAX = 536_870_912  # proto "max" (2^29 - 1), exclusive end of an extension range

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_UINT32, _UINT64, _FLOAT, _DOUBLE = _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_FLOAT, _F.TYPE_DOUBLE
_BOOL, _STRING, _BYTES, _MESSAGE = _F.TYPE_BOOL, _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE


class DataType(IntEnum):
    """Sparkplug B data types (specification 6.4.16); the numbers are on the wire."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


_ENUM_NAMES = {
    DataType.UNKNOWN: "Unknown",
    DataType.UINT8: "UInt8",
    DataType.UINT16: "UInt16",
    DataType.UINT32: "UInt32",
    DataType.UINT64: "UInt64",
    DataType.DATETIME: "DateTime",
    DataType.DATASET: "DataSet",
    DataType.PROPERTYSET: "PropertySet",
    DataType.PROPERTYSETLIST: "PropertySetList",
    DataType.UINT8_ARRAY: "UInt8Array",
    DataType.UINT16_ARRAY: "UInt16Array",
    DataType.UINT32_ARRAY: "UInt32Array",
    DataType.UINT64_ARRAY: "UInt64Array",
    DataType.DATETIME_ARRAY: "DateTimeArray",
}


def _enum_name(member: DataType) -> str:
    """The specification's spelling: ``Int8``, ``UInt16``, ``FloatArray`` …"""
    if member in _ENUM_NAMES:
        return _ENUM_NAMES[member]
    words = member.name.split("_")
    return "".join(w.capitalize() for w in words)


def _type(name: str) -> str:
    return f".{PACKAGE}.Payload.{name}" if name else f".{PACKAGE}.Payload"


def _message(
    parent: Any,
    name: str,
    fields: Sequence[tuple[str, int, int, int, str]],
    *,
    oneof: Sequence[tuple[str, int, int, str]] = (),
    extensions_from: int | None = None,
) -> Any:
    """Add message ``name`` to ``parent``: fields ``(name, number, label, type, type_name)``
    and one ``value`` oneof of ``(name, number, type, type_name)``."""
    msg = parent.add(name=name)
    for fname, number, label, ftype, type_name in fields:
        field = msg.field.add(name=fname, number=number, label=label, type=ftype)
        if type_name:
            field.type_name = type_name
    if oneof:
        msg.oneof_decl.add(name="value")
        for fname, number, ftype, type_name in oneof:
            field = msg.field.add(
                name=fname, number=number, label=_OPTIONAL, type=ftype, oneof_index=0
            )
            if type_name:
                field.type_name = type_name
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=_EXT_MAX)
    return msg


def _extension_holder(parent: Any, name: str) -> None:
    """A nested ``<name> { extensions 1 to max; }`` message for a oneof's extension value."""
    _message(parent.nested_type, name, [], extensions_from=1)


def _scalar_oneof(first: int, extension: str) -> list[tuple[str, int, int, str]]:
    """The value oneof shared by Parameter, DataSetValue (numbered from ``first``)."""
    kinds = [
        ("int_value", _UINT32),
        ("long_value", _UINT64),
        ("float_value", _FLOAT),
        ("double_value", _DOUBLE),
        ("boolean_value", _BOOL),
        ("string_value", _STRING),
    ]
    out = [(n, first + i, t, "") for i, (n, t) in enumerate(kinds)]
    out.append(("extension_value", first + len(kinds), _MESSAGE, extension))
    return out


def build_file() -> descriptor_pb2.FileDescriptorProto:
    """The ``sparkplug_b.proto`` of the specification as a FileDescriptorProto."""
    file = descriptor_pb2.FileDescriptorProto(
        name="shopfloor/sparkplug/sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    enum = file.enum_type.add(name="DataType")
    for member in DataType:
        enum.value.add(name=_enum_name(member), number=int(member))

    payload = _message(
        file.message_type,
        "Payload",
        [
            ("timestamp", 1, _OPTIONAL, _UINT64, ""),
            ("metrics", 2, _REPEATED, _MESSAGE, _type("Metric")),
            ("seq", 3, _OPTIONAL, _UINT64, ""),
            ("uuid", 4, _OPTIONAL, _STRING, ""),
            ("body", 5, _OPTIONAL, _BYTES, ""),
        ],
        extensions_from=6,
    )
    nested = payload.nested_type

    template = _message(
        nested,
        "Template",
        [
            ("version", 1, _OPTIONAL, _STRING, ""),
            ("metrics", 2, _REPEATED, _MESSAGE, _type("Metric")),
            ("parameters", 3, _REPEATED, _MESSAGE, _type("Template.Parameter")),
            ("template_ref", 4, _OPTIONAL, _STRING, ""),
            ("is_definition", 5, _OPTIONAL, _BOOL, ""),
        ],
        extensions_from=6,
    )
    parameter = _message(
        template.nested_type,
        "Parameter",
        [("name", 1, _OPTIONAL, _STRING, ""), ("type", 2, _OPTIONAL, _UINT32, "")],
        oneof=_scalar_oneof(3, _type("Template.Parameter.ParameterValueExtension")),
    )
    _extension_holder(parameter, "ParameterValueExtension")

    dataset = _message(
        nested,
        "DataSet",
        [
            ("num_of_columns", 1, _OPTIONAL, _UINT64, ""),
            ("columns", 2, _REPEATED, _STRING, ""),
            ("types", 3, _REPEATED, _UINT32, ""),
            ("rows", 4, _REPEATED, _MESSAGE, _type("DataSet.Row")),
        ],
        extensions_from=5,
    )
    value = _message(
        dataset.nested_type,
        "DataSetValue",
        [],
        oneof=_scalar_oneof(1, _type("DataSet.DataSetValue.DataSetValueExtension")),
    )
    _extension_holder(value, "DataSetValueExtension")
    _message(
        dataset.nested_type,
        "Row",
        [("elements", 1, _REPEATED, _MESSAGE, _type("DataSet.DataSetValue"))],
        extensions_from=2,
    )

    property_value = _message(
        nested,
        "PropertyValue",
        [("type", 1, _OPTIONAL, _UINT32, ""), ("is_null", 2, _OPTIONAL, _BOOL, "")],
        oneof=[
            ("int_value", 3, _UINT32, ""),
            ("long_value", 4, _UINT64, ""),
            ("float_value", 5, _FLOAT, ""),
            ("double_value", 6, _DOUBLE, ""),
            ("boolean_value", 7, _BOOL, ""),
            ("string_value", 8, _STRING, ""),
            ("propertyset_value", 9, _MESSAGE, _type("PropertySet")),
            ("propertysets_value", 10, _MESSAGE, _type("PropertySetList")),
            ("extension_value", 11, _MESSAGE, _type("PropertyValue.PropertyValueExtension")),
        ],
    )
    _extension_holder(property_value, "PropertyValueExtension")
    _message(
        nested,
        "PropertySet",
        [
            ("keys", 1, _REPEATED, _STRING, ""),
            ("values", 2, _REPEATED, _MESSAGE, _type("PropertyValue")),
        ],
        extensions_from=3,
    )
    _message(
        nested,
        "PropertySetList",
        [("propertyset", 1, _REPEATED, _MESSAGE, _type("PropertySet"))],
        extensions_from=2,
    )
    _message(
        nested,
        "MetaData",
        [
            ("is_multi_part", 1, _OPTIONAL, _BOOL, ""),
            ("content_type", 2, _OPTIONAL, _STRING, ""),
            ("size", 3, _OPTIONAL, _UINT64, ""),
            ("seq", 4, _OPTIONAL, _UINT64, ""),
            ("file_name", 5, _OPTIONAL, _STRING, ""),
            ("file_type", 6, _OPTIONAL, _STRING, ""),
            ("md5", 7, _OPTIONAL, _STRING, ""),
            ("description", 8, _OPTIONAL, _STRING, ""),
        ],
        extensions_from=9,
    )
    metric = _message(
        nested,
        "Metric",
        [
            ("name", 1, _OPTIONAL, _STRING, ""),
            ("alias", 2, _OPTIONAL, _UINT64, ""),
            ("timestamp", 3, _OPTIONAL, _UINT64, ""),
            ("datatype", 4, _OPTIONAL, _UINT32, ""),
            ("is_historical", 5, _OPTIONAL, _BOOL, ""),
            ("is_transient", 6, _OPTIONAL, _BOOL, ""),
            ("is_null", 7, _OPTIONAL, _BOOL, ""),
            ("metadata", 8, _OPTIONAL, _MESSAGE, _type("MetaData")),
            ("properties", 9, _OPTIONAL, _MESSAGE, _type("PropertySet")),
        ],
        oneof=[
            ("int_value", 10, _UINT32, ""),
            ("long_value", 11, _UINT64, ""),
            ("float_value", 12, _FLOAT, ""),
            ("double_value", 13, _DOUBLE, ""),
            ("boolean_value", 14, _BOOL, ""),
            ("string_value", 15, _STRING, ""),
            ("bytes_value", 16, _BYTES, ""),
            ("dataset_value", 17, _MESSAGE, _type("DataSet")),
            ("template_value", 18, _MESSAGE, _type("Template")),
            ("extension_value", 19, _MESSAGE, _type("Metric.MetricValueExtension")),
        ],
    )
    _extension_holder(metric, "MetricValueExtension")
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(build_file())

Payload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Payload"))
"""The Sparkplug B ``Payload`` message class (nested classes: ``Payload.Metric`` …)."""
