"""Sparkplug B payloads: the `org.eclipse.tahu.protobuf.Payload` message, encoded and decoded by protobuf.

The schema is Eclipse Sparkplug B 3.0's `sparkplug_b.proto` (the Payload and Metric messages with the
field numbers and the DataType codes of the specification), declared here as a protobuf file descriptor:
protobuf (the Google runtime, a dependency of onnxruntime already) does all wire encoding. No Sparkplug
library on PyPI installs beside paho-mqtt 2 and a current protobuf on Python 3.11 (pysparkplug and
mqtt-spb-wrapper pin paho-mqtt < 2; tahu and tahutils pin protobuf < 5; aiospb needs Python 3.12), and a
generated `_pb2` module would tie the package to one protoc. Only the fields the station sends are
declared; a SCADA host's decoder reads them with the full schema, and unknown fields in an NCMD are
kept by protobuf, not lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

PACKAGE = "org.eclipse.tahu.protobuf"


class DataType(IntEnum):
    """Sparkplug B metric data types (specification 3.0, §6.4.16; the `DataType` enum of sparkplug_b.proto)."""

    INT32 = 3
    INT64 = 4
    UINT32 = 7
    UINT64 = 8
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13


# Which oneof field of Metric holds a value of each data type (sparkplug_b.proto).
_VALUE_FIELD = {
    DataType.INT32: "int_value",
    DataType.UINT32: "int_value",
    DataType.INT64: "long_value",
    DataType.UINT64: "long_value",
    DataType.DATETIME: "long_value",
    DataType.DOUBLE: "double_value",
    DataType.BOOLEAN: "boolean_value",
    DataType.STRING: "string_value",
}

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "", oneof: int = -1) -> Any:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    if oneof >= 0:
        field.oneof_index = oneof
    return field


def _payload_class() -> type[Message]:
    """The Payload message class, built once per call from the file descriptor (own pool: no global names)."""
    metric = descriptor_pb2.DescriptorProto(
        name="Metric",
        field=[
            _field("name", 1, _F.TYPE_STRING),
            _field("alias", 2, _F.TYPE_UINT64),
            _field("timestamp", 3, _F.TYPE_UINT64),
            _field("datatype", 4, _F.TYPE_UINT32),
            _field("is_historical", 5, _F.TYPE_BOOL),
            _field("is_transient", 6, _F.TYPE_BOOL),
            _field("is_null", 7, _F.TYPE_BOOL),
            _field("int_value", 10, _F.TYPE_UINT32, oneof=0),
            _field("long_value", 11, _F.TYPE_UINT64, oneof=0),
            _field("float_value", 12, _F.TYPE_FLOAT, oneof=0),
            _field("double_value", 13, _F.TYPE_DOUBLE, oneof=0),
            _field("boolean_value", 14, _F.TYPE_BOOL, oneof=0),
            _field("string_value", 15, _F.TYPE_STRING, oneof=0),
            _field("bytes_value", 16, _F.TYPE_BYTES, oneof=0),
        ],
        oneof_decl=[descriptor_pb2.OneofDescriptorProto(name="value")],
    )
    payload = descriptor_pb2.DescriptorProto(
        name="Payload",
        field=[
            _field("timestamp", 1, _F.TYPE_UINT64),
            _field("metrics", 2, _F.TYPE_MESSAGE, repeated=True, type_name=f".{PACKAGE}.Payload.Metric"),
            _field("seq", 3, _F.TYPE_UINT64),
            _field("uuid", 4, _F.TYPE_STRING),
            _field("body", 5, _F.TYPE_BYTES),
        ],
        nested_type=[metric],
    )
    file = descriptor_pb2.FileDescriptorProto(
        name="sparkplug_b.proto", package=PACKAGE, syntax="proto2", message_type=[payload]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))


_PAYLOAD = _payload_class()


MetricValue = str | int | float | bool | datetime | None


@dataclass(frozen=True, slots=True)
class Metric:
    """One Sparkplug metric: a name, its data type and a value (None: sent with is_null)."""

    name: str
    datatype: DataType
    value: MetricValue
    timestamp_ms: int | None = None


def epoch_ms(ts: datetime) -> int:
    """A timezone-aware time as Sparkplug's milliseconds since the Unix epoch, UTC."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: Sparkplug times are UTC")
    return round(ts.timestamp() * 1000)


def encode(metrics: list[Metric], *, timestamp_ms: int, seq: int | None) -> bytes:
    """A Payload's bytes. seq None: no sequence number (NDEATH carries none, §6.4.21)."""
    payload: Any = _PAYLOAD()
    payload.timestamp = timestamp_ms
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        m = payload.metrics.add()
        m.name = metric.name
        m.datatype = int(metric.datatype)
        m.timestamp = metric.timestamp_ms if metric.timestamp_ms is not None else timestamp_ms
        if metric.value is None:
            m.is_null = True
            continue
        value: Any = metric.value
        if metric.datatype is DataType.DATETIME:
            value = epoch_ms(value) if isinstance(value, datetime) else int(value)
        setattr(m, _VALUE_FIELD[metric.datatype], value)
    out: bytes = payload.SerializeToString()
    return out


@dataclass(frozen=True, slots=True)
class Decoded:
    """A received payload: its timestamp (ms, UTC epoch), seq (None when absent) and metrics by name."""

    timestamp_ms: int
    seq: int | None
    metrics: Mapping[str, MetricValue]
    datatypes: Mapping[str, int]


def decode(data: bytes) -> Decoded:
    """Decode a Payload (an NCMD, or a message under test). Raises ValueError for bytes that are none."""
    payload: Any = _PAYLOAD()
    try:
        payload.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc
    metrics: dict[str, MetricValue] = {}
    datatypes: dict[str, int] = {}
    for m in payload.metrics:
        which = m.WhichOneof("value")
        metrics[m.name] = None if m.is_null or which is None else getattr(m, which)
        datatypes[m.name] = m.datatype
    return Decoded(payload.timestamp, payload.seq if payload.HasField("seq") else None, metrics, datatypes)
