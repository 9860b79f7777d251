"""Fuzz what the platform's ingest reads from edges besides the batch body's codec (whose
own harnesses are in tests/unit/wire/test_wire_codec.py: arbitrary bytes and JSON, flipped
Arrow bytes): the compressed body, the MQTT message around it (user properties, content
type), the tags and status messages, and, on the edge, the platform's answers.

Every one of them ends in an answer with a status (or a logged refusal), never an
exception: one malformed message must not stop the consumer or be delivered again forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
from hypothesis import example, given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.config.edge import UplinkMqttSection
from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.config.mqtt_link import (
    PROP_CONTENT_ENCODING,
    PROP_EDGE,
    PROP_EDGE_TIME,
    PROP_HISTORICAL,
    PROP_SEQ,
    PROP_SEQS,
    PROP_WIRE,
)
from shopfloor.edge.uplink.http import Verdict, classify
from shopfloor.edge.uplink.mqtt import MqttTransport
from shopfloor.errors import PayloadError
from shopfloor.model import LiveBatch, PointBatch, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.server.api.schemas import EdgeStatusIn
from shopfloor.server.ingest import Ingestor, IngestResult
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.wire import ARROW_MEDIA_TYPE, JSON_MEDIA_TYPE, encode_arrow, encode_json
from shopfloor.wire.compression import UnsupportedEncoding, compress, decompress, normalise_encoding

from .fuzzing import FUZZ, json_values, only

DEEP = b"[" * 3000
"""JSON nested deeper than Python's recursion limit: json.loads raises RecursionError."""


class Accepting(Ingestor):
    """The real ingestor's checks up to the historian, which this one does not have:
    every batch that gets that far is "stored" (counted)."""

    def __init__(self) -> None:
        super().__init__(None, Channel[LiveBatch]("live", maxsize=1))  # type: ignore[arg-type]
        self.stored = 0

    def admit(self) -> None:
        """Always room: there is no historian to be behind."""

    async def ingest(self, batch: PointBatch, **kwargs: Any) -> IngestResult:
        self.stored += 1
        return IngestResult(accepted=len(batch))


async def _no_register(tags: Any) -> None:
    del tags


def _consumer(*, status_model: type[EdgeStatusIn] | None = EdgeStatusIn) -> MqttIngest:
    return MqttIngest(
        Accepting(),
        MqttIngestSection(enabled=True),
        register_tags=_no_register,
        max_body_bytes=64 * 1024,
        status_model=status_model,
    )


_batch = PointBatch.from_points([("a/b", 1_764_000_000_000_000_000 + i, i, 0) for i in range(3)])
BODIES = {
    "arrow": encode_arrow(_batch, edge="e1", seq=5),
    "json": encode_json(_batch, edge="e1", seq=5),
}
prop_values = st.sampled_from(["1", "0", "5", "-1", "e1", "zstd", "gzip", "", "1,2", "x"]) | (
    st.text(max_size=12)
)
prop_names = st.sampled_from(
    [PROP_WIRE, PROP_EDGE, PROP_SEQ, PROP_SEQS, PROP_HISTORICAL, PROP_CONTENT_ENCODING,
     PROP_EDGE_TIME]
) | st.text(max_size=6)  # fmt: skip


@st.composite
def batch_messages(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]], str | None]:
    kind = draw(st.sampled_from(["arrow", "json", "bytes"]))
    body = draw(st.binary(max_size=200)) if kind == "bytes" else BODIES[kind]
    encoding = draw(st.sampled_from([None, "zstd", "gzip"]))
    if encoding is not None and kind != "bytes" and draw(st.booleans()):
        body = compress(body, encoding)
    if draw(st.booleans()) and body:  # flip some bytes
        data = bytearray(body)
        for pos, byte in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                       max_size=3)):  # fmt: skip
            data[pos % len(data)] = byte
        body = bytes(data)
    props = draw(st.lists(st.tuples(prop_names, prop_values), max_size=5))
    if encoding is not None:
        props.append((PROP_CONTENT_ENCODING, encoding))
    content_type = draw(
        st.sampled_from([None, ARROW_MEDIA_TYPE, JSON_MEDIA_TYPE, "text/plain", ""])
    )
    return body, props, content_type


@given(message=batch_messages())
@FUZZ
def test_a_batch_message_is_answered_with_a_status(
    message: tuple[bytes, list[tuple[str, str]], str | None],
) -> None:
    body, user, content_type = message
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if user:
        properties.UserProperty = user
    if content_type:
        properties.ContentType = content_type
    msg = aiomqtt.Message("shopfloor/v1/edges/e1/batches", body, 1, False, 1, properties)
    answer = asyncio.run(_consumer()._batch("e1", msg, body))
    assert answer["kind"] == "batch"
    assert answer["status"] in (200, 400, 413, 415, 422)
    if answer["status"] != 200:
        assert answer["error"]["message"]
    json.dumps(answer)  # it can be published


status_docs = json_values() | st.fixed_dictionaries(
    {"edge_time_ns": st.integers() | st.floats() | st.text(max_size=5)},
    optional={"buffer": json_values(), "uplink": json_values(), "connectors": json_values()},
)


@given(payload=st.binary(max_size=200) | status_docs.map(lambda d: json.dumps(d).encode()))
@example(payload=DEEP)
@example(payload=b'{"edge_time_ns": 1e400}')
@FUZZ
def test_a_status_message_is_answered_with_a_status(payload: bytes) -> None:
    for model in (EdgeStatusIn, None):
        answer = _consumer(status_model=model)._status("e1", payload)
        assert answer["status"] in (200, 422)
        json.dumps(answer)


tag_docs = st.fixed_dictionaries(
    {
        "tags": st.lists(
            st.fixed_dictionaries(
                {"path": st.sampled_from(["a/b", "a", "", "a//b"]) | st.text(max_size=10)},
                optional={
                    "unit": json_values(),
                    "states": st.dictionaries(
                        st.sampled_from(["1", "-1", "x", "9" * 5000]) | st.text(max_size=4),
                        st.text(max_size=4),
                        max_size=2,
                    ),
                    "eng_low": json_values(),
                    "data_type": st.sampled_from(["float", "int", "bool", "string", "x"]),
                },
            ),
            max_size=3,
        )
    }
)


@given(payload=st.binary(max_size=200) | tag_docs.map(lambda d: json.dumps(d).encode()))
@example(payload=DEEP)
@FUZZ
def test_a_tags_message_is_registered_or_refused(payload: bytes) -> None:
    registered: list[TagMeta] = []

    async def register(tags: Any) -> None:
        registered.extend(tags)

    consumer = MqttIngest(
        Accepting(), MqttIngestSection(enabled=True), register_tags=register, max_body_bytes=4096
    )
    asyncio.run(consumer._tags("e1", payload))
    stats = consumer.stats()
    assert stats.tags_messages + stats.refused == 1
    assert all(t.path for t in registered)


@given(
    data=st.binary(max_size=300),
    encoding=st.sampled_from(["zstd", "gzip"]),
    valid=st.booleans(),
)
@example(data=b"\x00" * 10_000, encoding="gzip", valid=True)  # a tiny bomb beyond max_bytes
@FUZZ
def test_compressed_bodies_raise_only_payload_errors(
    data: bytes, encoding: str, valid: bool
) -> None:
    body = compress(data, encoding)[: len(data) // 2 or None] if valid else data
    only(PayloadError, lambda: decompress(body, encoding, max_bytes=4096))


@given(header=st.none() | st.text(max_size=30))
@FUZZ
def test_content_encoding_headers_raise_only_unsupported_encoding(header: str | None) -> None:
    only(UnsupportedEncoding, lambda: normalise_encoding(header))


@given(
    status=st.integers(100, 599),
    headers=st.dictionaries(st.sampled_from(["retry-after", "x"]), st.text(max_size=12)),
    body=st.binary(max_size=200) | json_values().map(lambda d: json.dumps(d).encode()),
)
@example(status=200, headers={}, body=DEEP)
@example(status=429, headers={"retry-after": "nan"}, body=b"{}")
@FUZZ
def test_the_edge_classifies_any_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    answer = classify(status, headers, body)
    assert isinstance(answer.verdict, Verdict)


answers = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["batch", "status"]) | st.text(max_size=5),
        "status": st.integers() | json_values(),
        "seq": st.integers() | json_values(),
        "seqs": st.lists(st.integers(), max_size=3) | json_values(),
        "retry_after": json_values(),
        "duplicate": json_values(),
        "error": json_values(),
    },
)


@given(payload=st.binary(max_size=200) | answers.map(lambda d: json.dumps(d).encode()))
@example(payload=DEEP)
@FUZZ
def test_the_edge_reads_any_message_on_its_acks_topic(payload: bytes) -> None:
    transport = MqttTransport(UplinkMqttSection(), edge_id="e1")
    transport._dispatch(aiomqtt.Message("shopfloor/v1/edges/e1/acks", payload, 1, False, 1, None))
