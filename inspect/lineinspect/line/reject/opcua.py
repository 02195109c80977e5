"""OPC UA reject backend (asyncua client behind a sync API).

asyncua is asyncio-only; the client runs on its own event-loop thread, started
in `check_reachable()` and stopped in `close()`, and each call waits for its
result with the configured timeout. Node data types are read once at connect,
so a write uses the server's type (an Int16 verdict node gets an Int16, not a
Python int's Int64, which a server refuses with BadTypeMismatch).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from asyncua import Client, Node, ua

from lineinspect.line.reject.actuator import ActuatorError, InputStates, Output, VerdictCode
from lineinspect.line.reject.settings import OpcUaBackend

T = TypeVar("T")


class OpcUaActuator:
    def __init__(self, settings: OpcUaBackend, *, pulse_width_ms: float = 0.0) -> None:
        self._s = settings
        self._pulse_width_ms = pulse_width_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}
        self._types: dict[str, ua.VariantType] = {}
        self._outputs = settings.output_addresses()
        self._inputs = settings.input_addresses()

    @property
    def describe(self) -> str:
        return f"opcua {self._s.endpoint}"

    def _run(self, what: str, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise ActuatorError(f"{self.describe}: {what}: not connected (check_reachable() was not called)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self._s.timeout_ms / 1000.0)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise ActuatorError(
                f"{self.describe}: {what}: no answer within {self._s.timeout_ms} ms (reject.backend.timeout_ms). "
                "Check the server and the network"
            ) from exc
        except ua.UaStatusCodeError as exc:
            raise ActuatorError(
                f"{self.describe}: {what}: refused by the server: {exc}. Check the node id in reject.backend and "
                "that the node is writable"
            ) from exc
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise ActuatorError(f"{self.describe}: {what}: {exc!r}. Check the server and the network") from exc

    def check_reachable(self) -> None:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="reject-opcua-client", daemon=True)
            self._thread.start()
            self._loop = loop
        self._run("connecting", self._connect())

    async def _connect(self) -> None:
        client = Client(self._s.endpoint, timeout=self._s.timeout_ms / 1000.0)
        await client.connect()
        self._client = client
        ids = [n for n in self._outputs.values() if n] + list(self._inputs.values())
        ids += [n for n in (self._s.verdict_node, self._s.part_number_node, self._s.pulse_method) if n]
        for node_id in ids:
            node = client.get_node(node_id)
            try:
                if node_id == self._s.pulse_method:
                    await node.read_browse_name()
                else:
                    self._types[node_id] = await node.read_data_type_as_variant_type()
            except ua.UaStatusCodeError as exc:
                raise ActuatorError(
                    f"{self.describe}: node {node_id} cannot be read ({exc}). Check the node ids in reject.backend "
                    "against the server's address space"
                ) from exc
            self._nodes[node_id] = node

    async def _write(self, node_id: str, value: Any) -> None:
        variant = ua.Variant(value, self._types[node_id])
        await self._nodes[node_id].write_value(ua.DataValue(variant))

    def set_output(self, output: Output, on: bool) -> None:
        if output is Output.EJECTOR and self._s.pulse_method is not None:
            if on:  # The PLC times the pulse; there is nothing to switch off.
                self._run("calling the pulse method", self._call_pulse())
            return
        node_id = self._outputs[output]
        if node_id is None:
            raise ActuatorError(f"{self.describe}: no node mapped for {output.value}; set it in reject.backend")
        self._run(f"writing {output.value} {node_id}={on}", self._write(node_id, on))

    async def _call_pulse(self) -> None:
        assert self._s.pulse_method is not None
        method = self._nodes[self._s.pulse_method]
        parent = await method.get_parent()
        if parent is None:
            raise ActuatorError(f"{self.describe}: pulse method {self._s.pulse_method} has no parent object")
        await parent.call_method(method.nodeid, ua.Variant(round(self._pulse_width_ms), ua.VariantType.UInt32))

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        self._run("writing the verdict", self._write_verdict(code, part_number))

    async def _write_verdict(self, code: VerdictCode, part_number: int) -> None:
        if self._s.part_number_node is not None:
            await self._write(self._s.part_number_node, part_number)
        assert self._s.verdict_node is not None
        await self._write(self._s.verdict_node, int(code))

    def read_inputs(self) -> InputStates:
        if not self._inputs:
            return InputStates()
        return self._run("reading inputs", self._read_inputs())

    async def _read_inputs(self) -> InputStates:
        assert self._client is not None
        names = list(self._inputs)
        values = await self._client.read_values([self._nodes[self._inputs[n]] for n in names])
        return InputStates(**{n: bool(v) for n, v in zip(names, values, strict=True)})

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._client is not None:
            # The server may be gone already; the loop still has to stop.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._client.disconnect(), loop).result(timeout=2.0)
        self._client = None
        # The loop's default executor (name resolution) has a thread of its own: end it with the loop.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=2.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        loop.close()
        self._loop = None
        self._thread = None
