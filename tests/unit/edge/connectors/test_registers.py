"""Decoding device bytes: every type and every byte/word order against struct.pack."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.edge.connectors.registers import (
    Layout,
    bytes_to_registers,
    decode,
    decode_strings,
    encode,
    register_count,
    registers_to_bytes,
)

# struct format and size of each numeric wire type
FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
# How the bytes of a big-endian value (A = most significant) appear on the wire, written
# out by hand from the usual device-manual names rather than computed.
PATTERNS = {
    2: {("big", "big"): "AB", ("big", "little"): "AB", ("little", "big"): "BA",
        ("little", "little"): "BA"},
    4: {("big", "big"): "ABCD", ("big", "little"): "CDAB", ("little", "big"): "BADC",
        ("little", "little"): "DCBA"},
    8: {("big", "big"): "ABCDEFGH", ("big", "little"): "GHEFCDAB",
        ("little", "big"): "BADCFEHG", ("little", "little"): "HGFEDCBA"},
}  # fmt: skip
ORDERS = ["big", "little"]


def _values(data_type: str) -> st.SearchStrategy[float | int]:
    if data_type == "float32":
        return st.floats(width=32, allow_nan=False)
    if data_type == "float64":
        return st.floats(allow_nan=False)
    bits = int(data_type.lstrip("uint"))
    if data_type.startswith("u"):
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _wire(canonical: bytes, byte_order: str, word_order: str) -> bytes:
    pattern = PATTERNS[len(canonical)][(byte_order, word_order)]
    return bytes(canonical[ord(letter) - ord("A")] for letter in pattern)


@pytest.mark.parametrize("data_type", list(FORMATS))
@pytest.mark.parametrize("byte_order", ORDERS)
@pytest.mark.parametrize("word_order", ORDERS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decode_matches_struct(
    data_type: str, byte_order: str, word_order: str, data: st.DataObject
) -> None:
    fmt = FORMATS[data_type]
    size = struct.calcsize(fmt)
    values = data.draw(st.lists(_values(data_type), min_size=1, max_size=6))
    pad = data.draw(st.integers(0, 5))
    buf = bytearray(b"\xee" * pad)
    offsets = []
    for v in values:
        offsets.append(len(buf))
        buf += _wire(struct.pack(">" + fmt, v), byte_order, word_order)
    layout = Layout(data_type, size, byte_order, word_order)
    got = decode(np.frombuffer(bytes(buf), dtype=np.uint8), offsets, layout)
    for g, v in zip(got, values, strict=True):
        expected = struct.unpack(">" + fmt, struct.pack(">" + fmt, v))[0]
        if data_type.startswith("float"):
            assert g == expected or (math.isinf(g) and math.isinf(expected))
        else:
            assert g == float(expected)  # float64 rounding of wide integers, as the platform
    # encoding is the exact inverse of the wire layout
    for v, offset in zip(values, offsets, strict=True):
        assert encode(v, layout) == bytes(buf[offset : offset + size])


@given(st.integers(-(2**31), 2**31 - 1))
def test_dcba_is_little_endian(value: int) -> None:
    wire = struct.pack("<i", value)
    got = decode(np.frombuffer(wire, dtype=np.uint8), [0], Layout("int32", 4, "little", "little"))
    assert got[0] == value


def test_known_float_in_word_swapped_registers() -> None:
    # 123.456 as float32 is 0x42F6E979; a CDAB device sends the low word first.
    layout = Layout("float32", 4, "big", "little")
    got = decode(registers_to_bytes([0xE979, 0x42F6]), [0], layout)
    assert got[0] == pytest.approx(123.456, rel=1e-7)


@given(st.integers(0, 2**32 - 1), st.integers(0, 31), st.sampled_from(ORDERS))
def test_bit_index_counts_from_least_significant(value: int, bit: int, word_order: str) -> None:
    wire = _wire(struct.pack(">I", value), "big", word_order)
    layout = Layout("bool", 4, "big", word_order, bit=bit)
    got = decode(np.frombuffer(wire, dtype=np.uint8), [0], layout)
    assert got[0] == (value >> bit) & 1


def test_bool_without_bit_is_non_zero_register() -> None:
    got = decode(registers_to_bytes([0, 1, 0x8000, 0]), [0, 2, 4, 6], Layout("bool", 2))
    assert got.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_one_byte_values_for_s7() -> None:
    buf = np.frombuffer(b"\xff\x80\x05", dtype=np.uint8)
    assert decode(buf, [0, 1, 2], Layout("int16", 1)).tolist() == [-1, -128, 5]
    assert decode(buf, [0, 1, 2], Layout("uint16", 1)).tolist() == [255, 128, 5]
    assert decode(buf, [1], Layout("bool", 1, bit=7)).tolist() == [1.0]
    assert decode(buf, [1], Layout("bool", 1, bit=6)).tolist() == [0.0]


def test_strings_cut_at_nul_and_byte_swapped() -> None:
    buf = np.frombuffer(b"PUMP-7\x00\x00" + b"UPPM7-\x00\x00", dtype=np.uint8)
    assert decode_strings(buf, [0], 8) == ["PUMP-7"]
    assert decode_strings(buf, [8], 8, byte_order="little") == ["PUMP-7"]
    assert decode_strings(np.frombuffer(b"\xff\xfeAB", dtype=np.uint8), [0], 4, encoding="utf-8")[
        0
    ].endswith("AB")


def test_string_encode_round_trip() -> None:
    layout = Layout("string", 8, byte_order="little")
    wire = encode("PUMP-7", layout)
    assert wire == b"UPPM7-\x00\x00"
    assert decode_strings(np.frombuffer(wire, dtype=np.uint8), [0], 8, byte_order="little") == [
        "PUMP-7"
    ]
    with pytest.raises(ValueError, match="holds 8"):
        encode("much too long", layout)


def test_encode_refuses_out_of_range_and_bits() -> None:
    with pytest.raises(ValueError, match="outside"):
        encode(70000, Layout("uint16", 2))
    with pytest.raises(ValueError, match="outside"):
        encode(-1, Layout("uint32", 4))
    with pytest.raises(ValueError, match="bit"):
        encode(1, Layout("bool", 2, bit=3))
    assert encode(12.6, Layout("int16", 2)) == struct.pack(">h", 13)


def test_register_helpers() -> None:
    assert register_count("float64") == 4
    assert register_count("string", length=5) == 3
    assert register_count("bool") == 1
    assert bytes_to_registers(b"\x12\x34\x56") == [0x1234, 0x5600]
    assert registers_to_bytes([0x1234]).tobytes() == b"\x12\x34"


def test_layout_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="4 or 8"):
        Layout("float32", 2)
    with pytest.raises(ValueError, match="outside"):
        Layout("int16", 2, bit=16)
    with pytest.raises(ValueError, match="unknown"):
        Layout("complex", 4)
