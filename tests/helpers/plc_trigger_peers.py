"""The PLC side of the PLC trigger tests and bench: what a PLC program does at the camera.

- `ModbusLine`: the PLC program over Modbus: writes the part's registers (part id, product code, part
  counter) and raises the trigger coil in pymodbus' own server (`ModbusPlc` from reject_peers, the PLC's
  memory), then waits for the acknowledgement and lowers the bit, as a PLC's handshake step chain does.
- `OpcUaLinePlc`: asyncua's Server with a `Line` object: Trigger, PartId (String), PartNumber (UInt32),
  ProductCode (Int16), PartCounter (UInt32), Ack, AckTriggerId (UInt32); it can refuse subscriptions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pymodbus.client import ModbusTcpClient

from lineinspect.assemble import build_plc_triggers
from lineinspect.config import load_station
from lineinspect.line.plc_trigger.trigger import PlcTrigger
from lineinspect.line.station import Station
from tests.helpers.opcua_server import OpcUaTestServer
from tests.helpers.reject_peers import ModbusPlc
from tests.helpers.waiting import wait_for

RECIPES = [{"id": "part-a", "model": "bright"}, {"id": "part-b", "model": "bright"}]
CODES = {1: "part-a", 2: "part-b"}
ALARM_SOURCE = "plc_trigger.cam1"
TRIGGER_COIL = 2
ACK_COIL = 3
PART_ID_REGISTER = 10  # part id (ascii: 8 registers, or uint32: 2)
PRODUCT_CODE_REGISTER = 20
PART_COUNTER_REGISTER = 21  # uint32, two registers
ACK_ID_REGISTER = 24


def ascii_words(text: str, count: int) -> list[int]:
    """`text` in `count` registers, two characters each, high byte first, padded with NULs."""
    raw = text.encode("ascii").ljust(count * 2, b"\x00")
    assert len(raw) == count * 2, f"{text!r} does not fit in {count} registers"
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def uint32_words(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


class TriggerPlc(ModbusPlc):
    """The reject tests' Modbus PLC that also counts the coil reads it answers (the station's polls)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.coil_reads = 0

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: list[Any] | None
    ) -> None:
        if fc == 1:
            with self._lock:
                self.coil_reads += 1
        await super()._action(fc, start, address, count, regs, values)

    def reads(self) -> int:
        with self._lock:
            return self.coil_reads


@contextmanager
def running_trigger_plc(**kwargs: Any) -> Iterator[TriggerPlc]:
    plc = TriggerPlc(**kwargs)
    plc.start()
    try:
        yield plc
    finally:
        plc.stop()


class ModbusLine:
    """The PLC program, writing into the PLC's memory (the server) through its own client."""

    def __init__(self, plc: ModbusPlc) -> None:
        self.plc = plc
        self.client = ModbusTcpClient("127.0.0.1", port=plc.port, timeout=1, retries=0)
        assert self.client.connect(), "the test PLC does not answer"
        self.counter = 0

    def set_part(self, part_words: list[int], *, product_code: int, counter: int | None = None) -> None:
        """The part's values, in one write where they are adjacent (part id at 10.., code 20, counter 21-22)."""
        self.counter = self.counter + 1 if counter is None else counter
        words = part_words + [0] * (PRODUCT_CODE_REGISTER - PART_ID_REGISTER - len(part_words))
        words += [product_code, *uint32_words(self.counter)]
        assert not self.client.write_registers(PART_ID_REGISTER, words, device_id=1).isError()

    def raise_trigger(self) -> int:
        """Set the trigger coil; `time.monotonic_ns()` just before the write (the PLC's edge)."""
        edge_ns = time.monotonic_ns()
        assert not self.client.write_coil(TRIGGER_COIL, True, device_id=1).isError()
        return edge_ns

    def lower_trigger(self) -> None:
        assert not self.client.write_coil(TRIGGER_COIL, False, device_id=1).isError()

    def held_for_polls(self, polls: int = 2) -> None:
        """Keep the bit as it is until the station has read it `polls` more times (a PLC holds a pulse for a
        time it knows is longer than the poll; the test waits for the reads themselves)."""
        assert isinstance(self.plc, TriggerPlc)
        plc = self.plc
        seen = plc.reads()
        wait_for(lambda: plc.reads() >= seen + polls, 5, f"the station read the trigger {polls} more times")

    def acked(self) -> bool:
        return bool(self.plc.coils.get(ACK_COIL, False))

    def ack_trigger_id(self) -> int:
        hi, lo = self.plc.registers.get(ACK_ID_REGISTER, 0), self.plc.registers.get(ACK_ID_REGISTER + 1, 0)
        return (hi << 16) | lo

    def handshake(self, part_words: list[int], *, product_code: int, counter: int | None = None) -> int:
        """One part with the handshake: values, trigger up, wait for the ack, trigger down, wait for the ack
        to drop. Returns the trigger id the station acknowledged."""
        self.set_part(part_words, product_code=product_code, counter=counter)
        self.raise_trigger()
        wait_for(self.acked, 5, "the station acknowledged the trigger")
        trigger_id = self.ack_trigger_id()
        self.lower_trigger()
        wait_for(lambda: not self.acked(), 5, "the station cleared its acknowledgement")
        return trigger_id

    def close(self) -> None:
        self.client.close()


def modbus_source(port: int, **extra: Any) -> dict[str, Any]:
    """station.yaml `plc_triggers[].source` for the map above (ascii part id of 8 registers)."""
    return {
        "type": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "timeout_ms": 300,
        "poll_ms": 2,
        "trigger_coil": TRIGGER_COIL,
        "part_id": {"address": PART_ID_REGISTER, "format": "ascii", "count": 8},
        "product_code": {"address": PRODUCT_CODE_REGISTER},
        "part_counter": {"address": PART_COUNTER_REGISTER, "format": "uint32"},
        "ack_coil": ACK_COIL,
        "ack_trigger_id_register": ACK_ID_REGISTER,
        **extra,
    }


# ----------------------------------------------------------------------------- OPC UA

OPCUA_LINE_NS = "urn:lineinspect:test-line"


class OpcUaLinePlc(OpcUaTestServer):
    """Nodes `ns=2;s=Line.<Name>`. refuse_subscriptions: the server answers BadTooManySubscriptions."""

    TYPES: ClassVar[dict[str, tuple[str, Any]]] = {
        "Trigger": ("Boolean", False),
        "PartId": ("String", ""),
        "PartNumber": ("UInt32", 0),
        "ProductCode": ("Int16", 0),
        "PartCounter": ("UInt32", 0),
        "Ack": ("Boolean", False),
        "AckTriggerId": ("UInt32", 0),
    }
    thread_name = "test-opcua-line"

    def __init__(self, *, port: int | None = None, refuse_subscriptions: bool = False) -> None:
        super().__init__("lineinspect-line", port=port)
        self.refuse_subscriptions = refuse_subscriptions
        self.counter = 0

    @staticmethod
    def node_id(name: str) -> str:
        return f"ns=2;s=Line.{name}"

    async def _build(self, server: Any) -> None:
        from asyncua import ua

        if self.refuse_subscriptions:
            server.iserver.max_subscriptions = 0
        idx = await server.register_namespace(OPCUA_LINE_NS)
        obj = await server.nodes.objects.add_object(ua.NodeId("Line", idx), "Line")
        for name, (kind, initial) in self.TYPES.items():
            node = await obj.add_variable(
                ua.NodeId(f"Line.{name}", idx), name, initial, varianttype=getattr(ua.VariantType, kind)
            )
            await node.set_writable()
            self._nodes[name] = node

    async def _write(self, values: dict[str, Any]) -> None:
        from asyncua import ua

        for name, value in values.items():
            kind = getattr(ua.VariantType, self.TYPES[name][0])
            await self._nodes[name].write_value(ua.Variant(value, kind))

    def write(self, **values: Any) -> int:
        """Write the nodes in the PLC's own memory, in the order given; `time.monotonic_ns()` before the writes."""
        at_ns = time.monotonic_ns()
        self.on_loop(self._write(values))
        return at_ns

    def set_part(self, part_id: str, *, product_code: int, counter: int | None = None) -> None:
        self.counter = self.counter + 1 if counter is None else counter
        self.write(PartId=part_id, ProductCode=product_code, PartCounter=self.counter)

    def handshake(self, part_id: str, *, product_code: int, counter: int | None = None) -> int:
        """One part: values, trigger up, wait for the ack, trigger down, wait for the ack to drop; the trigger id."""
        self.set_part(part_id, product_code=product_code, counter=counter)
        self.write(Trigger=True)
        wait_for(lambda: self.value("Ack") is True, 5, "the station acknowledged the trigger")
        trigger_id = int(self.value("AckTriggerId"))
        self.write(Trigger=False)
        wait_for(lambda: self.value("Ack") is False, 5, "the station cleared its acknowledgement")
        return trigger_id


@contextmanager
def running_opcua_line(**kwargs: Any) -> Iterator[OpcUaLinePlc]:
    plc = OpcUaLinePlc(**kwargs)
    plc.start()
    try:
        yield plc
    finally:
        plc.stop()


def opcua_source(endpoint: str, **extra: Any) -> dict[str, Any]:
    n = OpcUaLinePlc.node_id
    return {
        "type": "opcua",
        "endpoint": endpoint,
        "timeout_ms": 1000,
        "trigger_node": n("Trigger"),
        "part_id_node": n("PartId"),
        "product_code_node": n("ProductCode"),
        "part_counter_node": n("PartCounter"),
        "ack_node": n("Ack"),
        "ack_trigger_id_node": n("AckTriggerId"),
        **extra,
    }


# ----------------------------------------------------------------------------- the station side


class RecipeCalls:
    """select_recipe as the wiring gives it: records (camera, recipe) in call order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []

    def __call__(self, camera_id: str, recipe_id: str) -> None:
        with self._lock:
            self.calls.append((camera_id, recipe_id))


def write_plc_station(tmp_path: Path, mqtt_port: int, source: dict[str, Any], **entry: Any) -> None:
    """The runtime tests' line station (cam1, software trigger) with recipes part-a/part-b and one PLC trigger."""
    from tests.helpers.station_runtime import write_line_station

    write_line_station(
        tmp_path,
        mqtt_port,
        parts="gb",
        recipes=RECIPES,
        plc_triggers=[{"camera": "cam1", "source": source, "product_codes": CODES, **entry}],
    )


@contextmanager
def plc_triggered(tmp_path: Path, station: Station, select: RecipeCalls | None = None) -> Iterator[PlcTrigger]:
    """The station's PLC trigger, built as `lineinspect run` builds it, started and stopped around the block."""
    (trigger,) = build_plc_triggers(load_station(tmp_path), station, select, station.events, station_dir=tmp_path)
    trigger.start()
    try:
        yield trigger
    finally:
        trigger.stop()


def plc_alarm_kinds(station: Station) -> set[str]:
    return {a.kind for a in station.events.active_alarms if a.source == ALARM_SOURCE}


def camera_connected(station: Station) -> bool:
    return bool(station.status().to_payload()["cameras"][0]["state"] == "connected")
