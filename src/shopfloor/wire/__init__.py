"""The versioned edge↔server contract: how a batch of points travels over HTTP."""

from shopfloor.wire.codec import (
    ARROW_MEDIA_TYPE,
    DEFAULT_MAX_BYTES,
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

__all__ = [
    "ARROW_MEDIA_TYPE",
    "DEFAULT_MAX_BYTES",
    "JSON_MEDIA_TYPE",
    "WIRE_VERSION",
    "DecodedBatch",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "decode",
    "encode_arrow",
    "encode_json",
    "media_type",
]
