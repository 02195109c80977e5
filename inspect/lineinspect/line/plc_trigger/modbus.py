"""The PLC trigger over Modbus TCP (pymodbus 3.x sync client): a polled bit, values in holding registers.

Modbus has no subscriptions, so the trigger coil (or discrete input) is read every `poll_ms` and its
edges are found here. At a rising edge the values are read right away:

- **one request** (`read_holding_registers` over the span from the first to the last value) where
  the part id, product code and part counter lie within 125 registers of each other, so the three
  come from one PLC scan;
- otherwise **one request per value, back to back**, right after the edge.

The PLC writes the values before it raises the bit and keeps them until the bit falls (or the
acknowledgement comes), so reading them after the edge reads this part's. The acknowledgement writes
the trigger id (two registers, one request) and then sets the ack coil; the coil is cleared when the
trigger bit is seen low again.
"""

from __future__ import annotations

import time
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from lineinspect.line.plc_trigger.settings import ModbusTriggerSource
from lineinspect.line.plc_trigger.trigger import Edge, EdgeDetector, PartReading, PlcError, PollSchedule


class ModbusTriggerInput:
    def __init__(self, settings: ModbusTriggerSource, *, field_path: str = "plc_triggers[].source") -> None:
        self._s = settings
        self._field = field_path
        self._client: ModbusTcpClient | None = None
        self._edges = EdgeDetector()
        self._acked = False
        self._schedule = PollSchedule(settings.poll_ms)
        if settings.trigger_coil is not None:
            self._bit_name = f"trigger_coil {settings.trigger_coil}"
        else:
            self._bit_name = f"trigger_input {settings.trigger_input}"

    @property
    def describe(self) -> str:
        return self._s.describe

    @property
    def mode(self) -> str:
        return "poll"

    @property
    def counter_modulus(self) -> int:
        counter = self._s.part_counter
        return counter.modulus if counter is not None else 1 << 16

    # --- requests ----------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = fn(*args, device_id=self._s.device_id, **kwargs)
        except (ModbusException, OSError) as exc:  # a PLC that resets the connection raises OSError, not Modbus's own
            raise PlcError(
                f"{self.describe}: {what} failed: {exc}. Check that the PLC is powered and reachable and that "
                f"{self._field}.host/port are right"
            ) from exc
        if response.isError():
            raise PlcError(
                f"{self.describe}: {what} refused by the device ({response}). Check the address in {self._field} "
                "against the PLC's Modbus mapping"
            )
        return response

    def _client_or_fail(self) -> ModbusTcpClient:
        if self._client is None:
            raise PlcError(f"{self.describe}: not connected")
        return self._client

    def _read_bit(self) -> bool:
        client = self._client_or_fail()
        if self._s.trigger_coil is not None:
            response = self._call(f"reading {self._bit_name}", client.read_coils, self._s.trigger_coil, count=1)
        else:
            assert self._s.trigger_input is not None
            response = self._call(
                f"reading {self._bit_name}", client.read_discrete_inputs, self._s.trigger_input, count=1
            )
        return bool(response.bits[0])

    def _read_words(self, first: int, count: int, what: str) -> list[int]:
        client = self._client_or_fail()
        response = self._call(
            f"reading {what} (holding registers {first}..{first + count - 1})",
            client.read_holding_registers,
            first,
            count=count,
        )
        return [int(w) for w in response.registers]

    def read_values(self) -> PartReading:
        """Part id, product code and part counter as they are now (one request where they fit in one)."""
        values = self._s.values
        if not values:
            return PartReading()
        decoded: dict[str, int | str] = {}
        span = self._s.one_read
        if span is not None:
            first, count = span
            words = self._read_words(first, count, ", ".join(values))
            for name, value in values.items():
                decoded[name] = value.decode(words[value.address - first : value.end - first])
        else:
            for name, value in values.items():
                decoded[name] = value.decode(self._read_words(value.address, value.registers, name))
        return PartReading.of(decoded)

    # --- TriggerInput ------------------------------------------------------------------------------
    def connect(self) -> None:
        self.close()
        s = self._s
        # retries=0: a trigger read late after a retry is an old reading; the next poll is the retry.
        client = ModbusTcpClient(s.host, port=s.port, timeout=s.timeout_ms / 1000.0, retries=0)
        if not client.connect():
            client.close()
            raise PlcError(
                f"{self.describe}: cannot connect (no Modbus TCP server answers). Check {self._field}.host and "
                f"{self._field}.port, the network, and that the PLC's Modbus server is enabled"
            )
        self._client = client
        self._edges.reset()
        # Read every mapped address once, so a wrong map is an alarm now and not at the first part.
        self._edges.update(self._read_bit())
        self.read_values()
        if s.ack_coil is not None:
            self._call(f"clearing ack_coil {s.ack_coil}", client.write_coil, s.ack_coil, False)
        self._acked = False
        self._schedule.restart()

    def next_edge(self, timeout_s: float) -> Edge | None:
        end_ns = time.monotonic_ns() + int(timeout_s * 1e9)
        while self._schedule.wait(end_ns):
            value = self._read_bit()
            seen_ns = time.monotonic_ns()
            change = self._edges.update(value)
            if change == "rising":
                return Edge(seen_ns, self.read_values())
            if change == "falling":
                self._unacknowledge()
        return None

    def acknowledge(self, trigger_id: int) -> None:
        s = self._s
        client = self._client_or_fail()
        if s.ack_trigger_id_register is not None:
            tid = trigger_id & 0xFFFFFFFF
            self._call(
                f"writing the trigger id to ack_trigger_id_register {s.ack_trigger_id_register}",
                client.write_registers,
                s.ack_trigger_id_register,
                [tid >> 16, tid & 0xFFFF],
            )
        if s.ack_coil is not None:
            self._call(f"setting ack_coil {s.ack_coil}", client.write_coil, s.ack_coil, True)
            self._acked = True

    def _unacknowledge(self) -> None:
        if self._acked and self._s.ack_coil is not None:
            client = self._client_or_fail()
            self._call(f"clearing ack_coil {self._s.ack_coil}", client.write_coil, self._s.ack_coil, False)
            self._acked = False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
