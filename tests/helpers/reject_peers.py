"""Real peers for the reject backends, each on 127.0.0.1 and a free port, each stopped by its test.

- `ModbusPlc`: pymodbus' own TCP server in a thread with its own event loop; it
  timestamps every coil/register write as it receives it and acts as a PLC that
  acknowledges the result-valid coil.
- `OpcUaPlc`: asyncua's Server with a `Reject` object (ejector, verdict, ack, ...).
- `NeuronResponder`: an MQTT client on the test's Mosquitto that answers write and
  read requests as EMQX Neuron's MQTT north app does (error codes, silence).

And the tracker's peer on the camera side: `part_ref()`, a part as its trigger announces it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.core.part import PartRef
from lineinspect.line.reject.settings import RejectSettings
from tests.helpers.mosquitto import free_port
from tests.helpers.opcua_server import OpcUaTestServer


def reject_settings(**overrides: Any) -> RejectSettings:
    """A dry-run timed reject station with a short budget and delay (the unit tests' base; overrides on top)."""
    raw: dict[str, Any] = {
        "mode": "timed",
        "backend": {"type": "dry_run"},
        "inspection_budget_ms": 10,
        "actuator_latency_ms": 1,
        "delay_ms": 30,
        "pulse_width_ms": 10,
        "line_rate_parts_per_min": 3000,
    }
    raw.update(overrides)
    return RejectSettings.model_validate(raw)


def part_ref(part_number: int, *, trigger_ns: int | None = None, encoder_count: int | None = None) -> PartRef:
    """The PartRef a camera trigger makes for part `part_number` (triggered now unless `trigger_ns` is given)."""
    trigger_ns = time.monotonic_ns() if trigger_ns is None else trigger_ns
    return PartRef("cam-reject", part_number, trigger_ns, part_id=f"p-{part_number}", encoder_count=encoder_count)


# ----------------------------------------------------------------------------- Modbus TCP


@dataclass
class ModbusPlc:
    """Coils 0..31, discrete inputs 0..31, holding registers 0..31 on device id 1."""

    result_valid_coil: int | None = None
    ack_input: int | None = None
    acks: bool = True  # False: a PLC that never acknowledges
    port: int = field(default_factory=free_port)
    coil_writes: list[tuple[int, int, bool]] = field(default_factory=list)  # (monotonic_ns, address, value)
    register_writes: list[tuple[int, int, list[int]]] = field(default_factory=list)
    inputs: dict[int, bool] = field(default_factory=dict)  # discrete inputs the test sets
    coils: dict[int, bool] = field(default_factory=dict)
    registers: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._lock = threading.Lock()

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: list[Any] | None
    ) -> None:
        from pymodbus.simulator.simutils import SimUtils

        now = time.monotonic_ns()
        if values is not None and fc in (5, 15):
            with self._lock:
                for i, v in enumerate(values):
                    self.coil_writes.append((now, address + i, bool(v)))
                    self.coils[address + i] = bool(v)
                    if address + i == self.result_valid_coil and self.ack_input is not None and self.acks:
                        self.inputs[self.ack_input] = bool(v)
        elif values is not None and fc in (6, 16):
            with self._lock:
                self.register_writes.append((now, address, [int(v) for v in values]))
                for i, v in enumerate(values):
                    self.registers[address + i] = int(v)
        elif fc == 2:
            with self._lock:
                bits = [self.inputs.get(i, False) for i in range(16 * len(regs))]
            regs[:] = SimUtils.bitsToRegisters(bits)[: len(regs)]
        return None

    def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def bits() -> list[SimData]:
            return [SimData(0, count=32, values=False, datatype=DataType.BITS)]

        def regs() -> list[SimData]:
            return [SimData(0, count=32, values=0, datatype=DataType.REGISTERS)]

        device = SimDevice(1, simdata=(bits(), bits(), regs(), regs()), action=self._action)
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
                await self._server.serve_forever(background=True)
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            await self._server.serving

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(serve(),), name="test-modbus-plc", daemon=True
        )
        self._thread.start()
        ready.wait(5)
        if failure:
            raise RuntimeError(f"modbus test server did not start: {failure[0]!r}")

    def pulses(self, coil: int) -> list[tuple[int, int]]:
        """(on_ns, off_ns) of each pulse the server saw on `coil`."""
        with self._lock:
            writes = [(t, v) for t, a, v in self.coil_writes if a == coil]
        out: list[tuple[int, int]] = []
        on_at: int | None = None
        for t, v in writes:
            if v and on_at is None:
                on_at = t
            elif not v and on_at is not None:
                out.append((on_at, t))
                on_at = None
        return out

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
        self._loop.close()
        self._thread = None


@contextmanager
def running_modbus_plc(**kwargs: Any) -> Iterator[ModbusPlc]:
    plc = ModbusPlc(**kwargs)
    plc.start()
    try:
        yield plc
    finally:
        plc.stop()


# ----------------------------------------------------------------------------- OPC UA

OPCUA_NS = "urn:lineinspect:test-plc"


class OpcUaPlc(OpcUaTestServer):
    """Nodes `ns=2;s=Reject.<Name>`; the PLC copies ResultValid to Ack (unless `acks` is False)."""

    BOOLS = ("Ejector", "ResultValid", "Ack", "Confirm", "BinFull", "AirLow", "StopLine")
    thread_name = "test-opcua-plc"

    def __init__(self, *, acks: bool = True) -> None:
        super().__init__("lineinspect-test")
        self.acks = acks
        self.ejector_changes: list[tuple[int, bool]] = []
        self.pulse_calls: list[int] = []

    @staticmethod
    def node_id(name: str) -> str:
        return f"ns=2;s=Reject.{name}"

    async def _build(self, server: Any) -> None:
        from asyncua import ua, uamethod

        idx = await server.register_namespace(OPCUA_NS)
        obj = await server.nodes.objects.add_object(ua.NodeId("Reject", idx), "Reject")
        for name in self.BOOLS:
            node = await obj.add_variable(ua.NodeId(f"Reject.{name}", idx), name, False)
            await node.set_writable()
            self._nodes[name] = node
        verdict = await obj.add_variable(
            ua.NodeId("Reject.Verdict", idx), "Verdict", 0, varianttype=ua.VariantType.Int16
        )
        part = await obj.add_variable(
            ua.NodeId("Reject.PartNumber", idx), "PartNumber", 0, varianttype=ua.VariantType.UInt32
        )
        for node in (verdict, part):
            await node.set_writable()
        self._nodes["Verdict"], self._nodes["PartNumber"] = verdict, part

        @uamethod
        def pulse(parent: Any, width_ms: int) -> bool:
            self.pulse_calls.append(int(width_ms))
            return True

        await obj.add_method(
            ua.NodeId("Reject.Pulse", idx), "Pulse", pulse, [ua.VariantType.UInt32], [ua.VariantType.Boolean]
        )

    async def _scan(self) -> None:
        """The PLC's scan: follow the ejector output and answer the handshake."""
        assert self._stop is not None
        last_ejector = False
        while not self._stop.is_set():
            ejector = bool(await self._nodes["Ejector"].read_value())
            if ejector != last_ejector:
                self.ejector_changes.append((time.monotonic_ns(), ejector))
                last_ejector = ejector
            if self.acks:
                valid = await self._nodes["ResultValid"].read_value()
                await self._nodes["Ack"].write_value(bool(valid))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.001)

    def set(self, name: str, value: bool) -> None:
        self.on_loop(self._nodes[name].write_value(value))


@contextmanager
def running_opcua_plc(**kwargs: Any) -> Iterator[OpcUaPlc]:
    plc = OpcUaPlc(**kwargs)
    plc.start()
    try:
        yield plc
    finally:
        plc.stop()


# ----------------------------------------------------------------------------- EMQX Neuron


class NeuronResponder:
    """Answers as Neuron's MQTT north app `app` does for south node `node`, group `group`.

    `tags` holds the group's tag values (writes change them); `errors` maps a tag
    to the error code a write of it gets; `silent` makes it stop answering.
    """

    def __init__(self, host: str, port: int, *, app: str, node: str, group: str, tags: dict[str, int]) -> None:
        self.app, self.node, self.group = app, node, group
        self.tags = dict(tags)
        self.errors: dict[str, int] = {}
        self.silent = False
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"neuron-{app}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("Neuron responder did not subscribe")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(f"/neuron/{self.app}/write/req", 0), (f"/neuron/{self.app}/read/req", 0)])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.requests.append(body)
            if self.silent:
                return
            if msg.topic.endswith("/write/req"):
                if body.get("node") != self.node:
                    answer = {"uuid": body["uuid"], "error": 2003}
                elif body.get("group") != self.group:
                    answer = {"uuid": body["uuid"], "error": 2106}
                elif body.get("tag") not in self.tags:
                    answer = {"uuid": body["uuid"], "error": 2201}
                elif body["tag"] in self.errors:
                    answer = {"uuid": body["uuid"], "error": self.errors[body["tag"]]}
                else:
                    self.tags[body["tag"]] = body["value"]
                    answer = {"uuid": body["uuid"], "error": 0}
                client.publish(f"/neuron/{self.app}/write/resp", json.dumps(answer))
            else:
                if body.get("node") != self.node:
                    answer = {"uuid": body["uuid"], "error": 2003}
                else:
                    answer = {"uuid": body["uuid"], "tags": [{"name": k, "value": v} for k, v in self.tags.items()]}
                client.publish(f"/neuron/{self.app}/read/resp", json.dumps(answer))

    def writes(self, tag: str) -> list[Any]:
        with self._lock:
            return [r["value"] for r in self.requests if r.get("tag") == tag]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
