"""The versioned edge↔server contract (docs/wire.md): how a batch of points travels."""

from shopfloor.wire.codec import (
    ARROW_MEDIA_TYPE,
    DEFAULT_MAX_BYTES,
    EDGE_ID_PATTERN,
    JSON_MEDIA_TYPE,
    OUTBOX_ID_PATTERN,
    WIRE_VERSION,
    DecodedBatch,
    PayloadTooLarge,
    UnsupportedMediaType,
    decode,
    encode_arrow,
    encode_json,
    media_type,
)
from shopfloor.wire.compression import (
    CONTENT_ENCODINGS,
    UnsupportedEncoding,
    compress,
    decompress,
    normalise_encoding,
)
from shopfloor.wire.streams import edge_of_stream, ledger_stream

__all__ = [
    "ARROW_MEDIA_TYPE",
    "CONTENT_ENCODINGS",
    "DEFAULT_MAX_BYTES",
    "EDGE_ID_PATTERN",
    "JSON_MEDIA_TYPE",
    "OUTBOX_ID_PATTERN",
    "WIRE_VERSION",
    "DecodedBatch",
    "PayloadTooLarge",
    "UnsupportedEncoding",
    "UnsupportedMediaType",
    "compress",
    "decode",
    "decompress",
    "edge_of_stream",
    "encode_arrow",
    "encode_json",
    "ledger_stream",
    "media_type",
    "normalise_encoding",
]
