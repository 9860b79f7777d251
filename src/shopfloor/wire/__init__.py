"""The versioned edge↔server contract (docs/wire.md): how a batch of points travels."""

from shopfloor.wire.codec import (
    ARROW_MEDIA_TYPE,
    DEFAULT_MAX_BYTES,
    EDGE_ID_PATTERN,
    JSON_MEDIA_TYPE,
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

__all__ = [
    "ARROW_MEDIA_TYPE",
    "CONTENT_ENCODINGS",
    "DEFAULT_MAX_BYTES",
    "EDGE_ID_PATTERN",
    "JSON_MEDIA_TYPE",
    "WIRE_VERSION",
    "DecodedBatch",
    "PayloadTooLarge",
    "UnsupportedEncoding",
    "UnsupportedMediaType",
    "compress",
    "decode",
    "decompress",
    "encode_arrow",
    "encode_json",
    "media_type",
    "normalise_encoding",
]
