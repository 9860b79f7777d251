"""Sparkplug B: the payload schema from the 3.0 specification, topics and value codecs.

A top-level package because both sides use it: the host application in
``shopfloor.edge.connectors.sparkplug`` and the simulated edge node in
``shopfloor.simulator.serve.sparkplug``. It imports neither.
"""

from shopfloor.sparkplug.codec import (
    BD_SEQ,
    NAMESPACE,
    REBIRTH,
    SCALAR_TYPES,
    MessageType,
    ScalarValue,
    SparkplugDecodeError,
    SparkplugTopic,
    add_metric,
    as_point_value,
    decode_payload,
    infer_datatype,
    metric_value,
    new_payload,
    parse_state,
    parse_topic,
    property_values,
    set_properties,
    set_value,
    state_payload,
    state_topic,
    topic_for,
)
from shopfloor.sparkplug.schema import DataType, Payload

__all__ = [
    "BD_SEQ",
    "NAMESPACE",
    "REBIRTH",
    "SCALAR_TYPES",
    "DataType",
    "MessageType",
    "Payload",
    "ScalarValue",
    "SparkplugDecodeError",
    "SparkplugTopic",
    "add_metric",
    "as_point_value",
    "decode_payload",
    "infer_datatype",
    "metric_value",
    "new_payload",
    "parse_state",
    "parse_topic",
    "property_values",
    "set_properties",
    "set_value",
    "state_payload",
    "state_topic",
    "topic_for",
]
