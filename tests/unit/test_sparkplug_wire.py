"""The Sparkplug B payload on the wire, read without the project's schema: a minimal protobuf wire reader and the
field numbers of the Sparkplug B 3.0 specification (Eclipse Tahu's sparkplug_b.proto), so a wrong field number or
type in line/sparkplug/payload.py cannot pass by decoding with its own mistake."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from lineinspect.line.sparkplug.payload import DataType, Metric, encode

# Sparkplug B 3.0: Payload {timestamp = 1; metrics = 2; seq = 3}; Metric {name = 1; timestamp = 3; datatype = 4;
# is_null = 7; int_value = 10; long_value = 11; float_value = 12; double_value = 13; boolean_value = 14;
# string_value = 15}. DataType: Int32 3, UInt64 8, Double 10, Boolean 11, String 12, DateTime 13.
SPEC_DATATYPES = {"INT32": 3, "UINT64": 8, "DOUBLE": 10, "BOOLEAN": 11, "STRING": 12, "DATETIME": 13}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) in wire order: varints as int, fixed64 as its 8 bytes, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            out.append((number, value))
        elif wire == 1:
            out.append((number, data[at : at + 8]))
            at += 8
        elif wire == 2:
            length, at = _varint(data, at)
            out.append((number, data[at : at + length]))
            at += length
        elif wire == 5:
            out.append((number, data[at : at + 4]))
            at += 4
        else:
            raise AssertionError(f"wire type {wire} of field {number} is not one Sparkplug B uses")
    return out


def test_datatype_numbers_are_the_specifications() -> None:
    for name, number in SPEC_DATATYPES.items():
        assert DataType[name] == number, name


def test_a_payload_reads_by_the_specifications_field_numbers() -> None:
    at = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    data = encode(
        [
            Metric("bdSeq", DataType.UINT64, 7),
            Metric("Result/Verdict", DataType.STRING, "fail"),
            Metric("Result/Score", DataType.DOUBLE, 0.75),
            Metric("Result/Simulated", DataType.BOOLEAN, False),
            Metric("Result/Decided At", DataType.DATETIME, at),
            Metric("Result/Part Id", DataType.STRING, None),
        ],
        timestamp_ms=1_764_655_200_000,
        seq=255,
    )
    top = fields(data)
    assert (1, 1_764_655_200_000) in top  # timestamp
    assert (3, 255) in top  # seq
    metrics = [dict(fields(value)) for number, value in top if number == 2 and isinstance(value, bytes)]
    by_name = {m[1].decode(): m for m in metrics}  # type: ignore[union-attr]
    assert by_name["bdSeq"][4] == SPEC_DATATYPES["UINT64"] and by_name["bdSeq"][11] == 7
    assert by_name["Result/Verdict"][4] == SPEC_DATATYPES["STRING"] and by_name["Result/Verdict"][15] == b"fail"
    assert by_name["Result/Score"][4] == SPEC_DATATYPES["DOUBLE"]
    assert struct.unpack("<d", by_name["Result/Score"][13])[0] == 0.75  # type: ignore[arg-type]
    assert by_name["Result/Simulated"][4] == SPEC_DATATYPES["BOOLEAN"] and by_name["Result/Simulated"][14] == 0
    assert by_name["Result/Decided At"][4] == SPEC_DATATYPES["DATETIME"]
    assert by_name["Result/Decided At"][11] == int(at.timestamp() * 1000)  # DateTime: epoch ms in long_value
    assert by_name["Result/Part Id"][7] == 1 and 15 not in by_name["Result/Part Id"]  # is_null, no value
