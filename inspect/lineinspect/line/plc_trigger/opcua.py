"""The PLC trigger over OPC UA (asyncua client on its own event-loop thread).

The trigger node is watched by a **data-change subscription** (queue of `queue_size` changes, so a
short high-low pulse between two publishes still arrives as two changes). At each rising edge the
part id, product code and part counter nodes are read in **one Read request**. Where the server
refuses the subscription (e.g. BadTooManySubscriptions, BadServiceUnsupported) or `subscribe` is
false, the trigger is **polled** every `poll_ms` instead, and then the trigger and the values come
from the *same* Read request.

The PLC writes the values before it raises the trigger and keeps them until the trigger falls (or
the acknowledgement comes). The acknowledgement writes `ack_trigger_id_node` (in the node's own
data type, read at connect) and then sets `ack_node`; `ack_node` is cleared when the trigger falls.
A lost connection (asyncua's watchdog, a failed request) ends the watch with PlcError.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from asyncua import Client, Node, ua

from lineinspect.line.event_loop_thread import EventLoopThread, LoopTimeout
from lineinspect.line.plc_trigger.settings import OpcUaTriggerSource
from lineinspect.line.plc_trigger.trigger import Edge, EdgeDetector, PartReading, PlcError, PollSchedule

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOST = "lost"
_VALUE = "value"


class _TriggerChanges:
    """asyncua subscription handler (runs on the loop thread): every trigger change, stamped as it arrives."""

    def __init__(self, changes: queue.Queue[tuple[str, Any, int]]) -> None:
        self._changes = changes

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self._changes.put((_VALUE, bool(val), time.monotonic_ns()))

    def status_change_notification(self, status: Any) -> None:
        self._changes.put((_LOST, f"subscription status {status}", time.monotonic_ns()))


class OpcUaTriggerInput:
    def __init__(
        self, settings: OpcUaTriggerSource, *, camera_id: str, field_path: str = "plc_triggers[].source"
    ) -> None:
        self._s = settings
        self._field = field_path
        self._loop = EventLoopThread(f"plc-trigger-opcua-{camera_id}")
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}
        self._types: dict[str, ua.VariantType] = {}
        self._changes: queue.Queue[tuple[str, Any, int]] = queue.Queue()
        self._edges = EdgeDetector()
        self._mode = "subscription" if settings.subscribe else "poll"
        self._acked = False
        self._schedule = PollSchedule(settings.poll_ms)

    @property
    def describe(self) -> str:
        return self._s.describe

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def counter_modulus(self) -> int:
        return 1 << 32  # an OPC UA counter is a UInt32/Int32 (DINT/UDINT) in every PLC that maps one

    # --- requests ----------------------------------------------------------------------------------
    def _run(self, what: str, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run(coro, self._s.timeout_ms / 1000.0)
        except LoopTimeout as exc:
            raise PlcError(
                f"{self.describe}: {what}: no answer within {self._s.timeout_ms} ms ({self._field}.timeout_ms). "
                "Check the server and the network"
            ) from exc
        except ua.UaStatusCodeError as exc:
            raise PlcError(
                f"{self.describe}: {what}: refused by the server: {exc}. Check the node ids in {self._field} "
                "against the server's address space"
            ) from exc
        except (OSError, ConnectionError, TimeoutError, ua.UaError) as exc:
            raise PlcError(f"{self.describe}: {what}: {exc!r}. Check the server and the network") from exc

    # --- TriggerInput ------------------------------------------------------------------------------
    def connect(self) -> None:
        self.close()
        self._loop.start()
        self._changes = queue.Queue()
        self._edges.reset()
        self._acked = False
        self._run("connecting", self._connect())
        self._schedule.restart()

    async def _connect(self) -> None:
        s = self._s
        client = Client(s.endpoint, timeout=s.timeout_ms / 1000.0, watchdog_intervall=max(0.2, s.timeout_ms / 1000))

        async def lost(exc: Exception) -> None:
            self._changes.put((_LOST, repr(exc), time.monotonic_ns()))

        client.connection_lost_callback = lost
        try:
            await client.connect()
        except Exception as exc:
            raise PlcError(
                f"{self.describe}: cannot connect ({exc!r}). Check {self._field}.endpoint, the network and that "
                "the PLC's OPC UA server is running"
            ) from exc
        self._client = client
        ids = {"trigger_node": s.trigger_node, **s.value_nodes}
        ids.update({k: v for k, v in (("ack_node", s.ack_node), ("ack_trigger_id_node", s.ack_trigger_id_node)) if v})
        for name, node_id in ids.items():
            try:
                node = client.get_node(node_id)
                self._types[name] = await node.read_data_type_as_variant_type()
            except (ua.UaError, ValueError) as exc:
                field = name if name.endswith("_node") else f"{name}_node"
                raise PlcError(
                    f"{self.describe}: {self._field}.{field} {node_id!r} cannot be read ({exc}). Check the node id "
                    "against the server's address space"
                ) from exc
            self._nodes[name] = node
        if self._types["trigger_node"] is not ua.VariantType.Boolean:
            raise PlcError(
                f"{self.describe}: {self._field}.trigger_node {s.trigger_node} is a {self._types['trigger_node'].name}"
                " node; the trigger must be a Boolean"
            )
        if s.ack_node is not None:
            await self._write("ack_node", False)
        self._edges.update(bool(await self._nodes["trigger_node"].read_value()))
        self._mode = "poll"
        if s.subscribe:
            await self._subscribe(client)

    async def _subscribe(self, client: Client) -> None:
        try:
            sub = await client.create_subscription(self._s.publishing_interval_ms, _TriggerChanges(self._changes))
            await sub.subscribe_data_change(
                self._nodes["trigger_node"], queuesize=self._s.queue_size, sampling_interval=ua.Double(0.0)
            )
        except ua.UaStatusCodeError as exc:
            log.warning(
                "%s: subscription refused (%s); polling the trigger every %g ms", self.describe, exc, self._s.poll_ms
            )
            return
        self._mode = "subscription"

    async def _write(self, name: str, value: Any) -> None:
        variant = ua.Variant(value, self._types[name])
        await self._nodes[name].write_value(ua.DataValue(variant))

    async def _read(self, names: list[str]) -> dict[str, Any]:
        assert self._client is not None
        values = await self._client.read_values([self._nodes[n] for n in names])
        return dict(zip(names, values, strict=True))

    def next_edge(self, timeout_s: float) -> Edge | None:
        if self._mode == "poll":
            return self._poll(timeout_s)
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            try:
                kind, value, at_ns = self._changes.get(timeout=left)
            except queue.Empty:
                return None
            if kind == _LOST:
                raise PlcError(f"{self.describe}: connection lost ({value})")
            change = self._edges.update(value)
            if change == "rising":
                names = list(self._s.value_nodes)
                values = self._run("reading the part's values", self._read(names)) if names else {}
                return Edge(at_ns, PartReading.of(values))
            if change == "falling":
                self._unacknowledge()
        return None

    def _poll(self, timeout_s: float) -> Edge | None:
        end_ns = time.monotonic_ns() + int(timeout_s * 1e9)
        names = ["trigger_node", *self._s.value_nodes]
        while self._schedule.wait(end_ns):
            values = self._run("reading the trigger", self._read(names))
            seen_ns = time.monotonic_ns()
            change = self._edges.update(bool(values.pop("trigger_node")))
            if change == "rising":
                return Edge(seen_ns, PartReading.of(values))
            if change == "falling":
                self._unacknowledge()
        return None

    def acknowledge(self, trigger_id: int) -> None:
        if self._s.ack_trigger_id_node is None and self._s.ack_node is None:
            return
        self._run("acknowledging the trigger", self._acknowledge(trigger_id))

    async def _acknowledge(self, trigger_id: int) -> None:
        if self._s.ack_trigger_id_node is not None:
            await self._write("ack_trigger_id_node", trigger_id)
        if self._s.ack_node is not None:
            await self._write("ack_node", True)
            self._acked = True

    def _unacknowledge(self) -> None:
        if self._acked and self._s.ack_node is not None:
            self._run("clearing the acknowledgement", self._write("ack_node", False))
            self._acked = False

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # The server may be gone already; the loop still has to stop.
            with contextlib.suppress(Exception):
                self._loop.run(client.disconnect(), 2.0)
        self._nodes.clear()
        self._types.clear()
        self._loop.stop()
