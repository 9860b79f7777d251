"""Compressed bodies on the wire, and the checks that keep decompression bounded.

Two kinds of compression can reach the platform, and both are accepted:

* **HTTP ``Content-Encoding: zstd`` or ``gzip``** over the whole body (Arrow IPC or JSON).
  This is what the edge uses: the stream's schema, dictionary and every buffer are
  compressed together, so it compresses better than per-buffer compression, and the
  server decompresses it as a stream that stops one byte past the size limit. A 30 kB
  zstd body that would expand to a gigabyte costs the server 16 MiB and a 413, not the
  gigabyte (:func:`decompress`).
* **Arrow IPC buffer compression** (``IpcWriteOptions(compression="zstd"|"lz4")``), which
  Arrow's reader undoes on its own. Arrow allocates each buffer's declared uncompressed
  size before it decompresses, so :func:`check_ipc_sizes` reads those declarations from
  the message metadata first and refuses a stream whose total is over the limit, before
  Arrow allocates anything.

pyarrow ships the zstd and gzip codecs, so no further dependency is needed.
"""

from __future__ import annotations

import struct
from typing import Final

import pyarrow as pa

from shopfloor.errors import PayloadError

__all__ = [
    "CONTENT_ENCODINGS",
    "PayloadTooLarge",
    "UnsupportedEncoding",
    "check_ipc_sizes",
    "compress",
    "decompress",
    "normalise_encoding",
]

CONTENT_ENCODINGS: Final = ("zstd", "gzip")
"""The ``Content-Encoding`` values the platform reads (besides ``identity``)."""

_CHUNK = 1 << 20


class PayloadTooLarge(PayloadError):  # noqa: N818 - named after HTTP 413
    """The body is over the size limit (HTTP 413).

    Attributes:
        limit: the limit in bytes.
    """

    def __init__(self, limit: int, what: str = "body") -> None:
        self.limit = limit
        super().__init__("body", f"{what} is larger than the limit of {limit} bytes")


class UnsupportedEncoding(PayloadError):  # noqa: N818 - named after what HTTP answers (415)
    """The Content-Encoding is not one the platform reads (HTTP 415)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(
            "content-encoding",
            f"unsupported content encoding {encoding!r:.40}; send zstd, gzip or none",
        )


def normalise_encoding(header: str | None) -> str | None:
    """Return ``zstd``/``gzip`` for a Content-Encoding header, None for none or identity.

    Raises:
        UnsupportedEncoding: any other coding, or more than one.
    """
    if header is None:
        return None
    encoding = header.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in CONTENT_ENCODINGS:
        raise UnsupportedEncoding(header)
    return encoding


def compress(data: bytes, encoding: str) -> bytes:
    """Compress a body for ``Content-Encoding: encoding`` (``zstd`` or ``gzip``)."""
    if encoding not in CONTENT_ENCODINGS:
        raise UnsupportedEncoding(encoding)
    out: bytes = pa.Codec(encoding).compress(data, asbytes=True)
    return out


def decompress(data: bytes, encoding: str, *, max_bytes: int) -> bytes:
    """Undo a Content-Encoding, refusing output beyond ``max_bytes`` as soon as it appears.

    Raises:
        PayloadTooLarge: the decompressed body would exceed ``max_bytes``.
        UnsupportedEncoding: ``encoding`` is not zstd or gzip.
        PayloadError: the data is not a valid, complete stream of that encoding (field
            ``body``).
    """
    if encoding not in CONTENT_ENCODINGS:
        raise UnsupportedEncoding(encoding)
    parts: list[bytes] = []
    size = 0
    try:
        stream = pa.CompressedInputStream(pa.BufferReader(data), encoding)
        while True:
            chunk = stream.read(min(_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(max_bytes, "decompressed body")
            parts.append(chunk)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise PayloadError("body", f"is not a valid {encoding} stream: {err}") from err
    return b"".join(parts)


# ------------------------------------------------------------- Arrow IPC buffer sizes
# The flatbuffer tables of Arrow's Message.fbs that matter here, by field slot:
#   Message:         1 header_type (ubyte), 2 header (table)
#   RecordBatch:     2 buffers ([struct Buffer {offset: long; length: long}]),
#                    3 compression (table; present only when buffers are compressed)
#   DictionaryBatch: 1 data (RecordBatch)
_HEADER_RECORD_BATCH: Final = 3
_HEADER_DICTIONARY_BATCH: Final = 2


class _MalformedError(ValueError):
    """The metadata is not a well-formed flatbuffer of the expected shape."""


class _Table:
    """A bounds-checked view of one flatbuffer table."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self._buf = buf
        self._pos = pos
        vtable = pos - _unpack(buf, "<i", pos)
        self._vtable = vtable
        self._vtable_len = _unpack(buf, "<H", vtable)

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry + 2 > self._vtable_len:
            return None
        offset = _unpack(self._buf, "<H", self._vtable + entry)
        return None if offset == 0 else self._pos + offset

    def scalar(self, slot: int, fmt: str, default: int) -> int:
        at = self._field(slot)
        return default if at is None else _unpack(self._buf, fmt, at)

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return None if at is None else _Table(self._buf, at + _unpack(self._buf, "<I", at))

    def struct_vector(self, slot: int, fmt: str) -> list[tuple[int, ...]]:
        at = self._field(slot)
        if at is None:
            return []
        start = at + _unpack(self._buf, "<I", at)
        count = _unpack(self._buf, "<I", start)
        size = struct.calcsize(fmt)
        if start + 4 + count * size > len(self._buf):
            raise _MalformedError("vector runs past the metadata")
        return [struct.unpack_from(fmt, self._buf, start + 4 + i * size) for i in range(count)]


def _unpack(buf: bytes, fmt: str, at: int) -> int:
    if at < 0 or at + struct.calcsize(fmt) > len(buf):
        raise _MalformedError("offset outside the metadata")
    value: int = struct.unpack_from(fmt, buf, at)[0]
    return value


def _declared_size(metadata: bytes, body: pa.Buffer | None) -> int:
    """Bytes Arrow will allocate for one message's compressed buffers (0 if uncompressed)."""
    message = _Table(metadata, _unpack(metadata, "<I", 0))
    kind = message.scalar(1, "<B", 0)
    header = message.table(2)
    if header is None:
        return 0
    if kind == _HEADER_DICTIONARY_BATCH:
        header = header.table(1)
        if header is None:
            return 0
    elif kind != _HEADER_RECORD_BATCH:
        return 0
    if header.table(3) is None:  # no BodyCompression: Arrow allocates nothing extra
        return 0
    total = 0
    body_size = 0 if body is None else body.size
    for offset, length in header.struct_vector(2, "<qq"):
        if length == 0:
            continue
        if body is None or offset < 0 or length < 8 or offset + length > body_size:
            raise _MalformedError("a compressed buffer lies outside the body")
        declared: int = struct.unpack("<q", body.slice(offset, 8).to_pybytes())[0]
        if declared < -1:
            raise _MalformedError("a compressed buffer declares a negative size")
        total += max(declared, length)  # -1: stored uncompressed, as long as it is
    return total


def check_ipc_sizes(body: bytes, *, max_bytes: int) -> None:
    """Refuse an Arrow IPC stream whose buffers would decompress to more than ``max_bytes``.

    Streams without buffer compression pass at once (their size is the body's). The check
    reads only metadata; Arrow's own reader still validates everything afterwards.

    Raises:
        PayloadTooLarge: the declared decompressed size is over ``max_bytes``.
        PayloadError: the stream's metadata is malformed (field ``body``).
    """
    total = 0
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
        for message in reader:
            if message.type not in ("record batch", "dictionary"):
                continue
            total += _declared_size(message.metadata.to_pybytes(), message.body)
            if total > max_bytes:
                raise PayloadTooLarge(max_bytes, "decompressed Arrow data")
    except PayloadError:
        raise
    except (_MalformedError, pa.ArrowException, OSError, ValueError, struct.error) as err:
        raise PayloadError("body", f"is not a readable Arrow IPC stream: {err}") from err
