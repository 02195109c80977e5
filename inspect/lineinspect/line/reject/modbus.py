"""Modbus TCP reject backend (pymodbus 3.x sync client).

Address map (0-based protocol addresses, all configurable in `reject.backend`):
coils: ejector, result valid, stop line; holding registers: verdict code,
part number (uint32, two registers, high word first); discrete inputs: ack,
confirm, bin full, air low.
"""

from __future__ import annotations

from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from lineinspect.line.reject.actuator import ActuatorError, InputStates, Output, VerdictCode
from lineinspect.line.reject.settings import ModbusBackend


class ModbusActuator:
    def __init__(self, settings: ModbusBackend) -> None:
        self._s = settings
        # retries=0: a reject output that arrives late after a retry is worse than an alarm now.
        self._client = ModbusTcpClient(
            settings.host,
            port=settings.port,
            timeout=settings.timeout_ms / 1000.0,
            retries=0,
            reconnect_delay=0.1,
            reconnect_delay_max=2.0,
        )
        self._coils = settings.output_addresses()
        self._inputs = settings.input_addresses()

    @property
    def describe(self) -> str:
        return f"modbus {self._s.host}:{self._s.port} device {self._s.device_id}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = fn(*args, device_id=self._s.device_id, **kwargs)
        except (ModbusException, OSError) as exc:  # a PLC that resets the connection raises OSError, not Modbus's own
            raise ActuatorError(
                f"{self.describe}: {what} failed: {exc}. Check that the PLC is powered and reachable and that "
                "reject.backend.host/port are right"
            ) from exc
        if response.isError():
            raise ActuatorError(
                f"{self.describe}: {what} refused by the device ({response}). Check the address in "
                "reject.backend and the PLC's Modbus mapping"
            )
        return response

    def check_reachable(self) -> None:
        if not self._client.connect():
            raise ActuatorError(
                f"{self.describe}: cannot connect (no Modbus TCP server answers). Check reject.backend.host and "
                "reject.backend.port, the network, and that the PLC's Modbus server is enabled"
            )
        # Read back what we will write, so a wrong address map is refused now and not at the first reject.
        self._call(
            f"reading verdict registers {self._s.verdict_register}", self._read_regs, self._s.verdict_register, 1
        )
        for output, addr in self._coils.items():
            if addr is not None:
                self._call(f"reading {output.value} coil {addr}", self._client.read_coils, addr, count=1)
        for name, addr in self._inputs.items():
            self._call(f"reading {name} input {addr}", self._client.read_discrete_inputs, addr, count=1)

    def _read_regs(self, address: int, count: int, *, device_id: int) -> Any:
        return self._client.read_holding_registers(address, count=count, device_id=device_id)

    def set_output(self, output: Output, on: bool) -> None:
        addr = self._coils[output]
        if addr is None:
            raise ActuatorError(f"{self.describe}: no coil mapped for {output.value}; set it in reject.backend")
        self._call(f"writing {output.value} coil {addr}={on}", self._client.write_coil, addr, on)

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        part = part_number & 0xFFFFFFFF
        s = self._s
        if s.part_number_register == s.verdict_register + 1:
            # One request: the PLC never sees a new verdict with the old part number.
            values = [int(code), part >> 16, part & 0xFFFF]
            self._call(
                f"writing verdict registers {s.verdict_register}..",
                self._client.write_registers,
                s.verdict_register,
                values,
            )
            return
        self._call(
            f"writing part number registers {s.part_number_register}",
            self._client.write_registers,
            s.part_number_register,
            [part >> 16, part & 0xFFFF],
        )
        self._call(
            f"writing verdict register {s.verdict_register}", self._client.write_register, s.verdict_register, int(code)
        )

    def read_inputs(self) -> InputStates:
        if not self._inputs:
            return InputStates()
        lo = min(self._inputs.values())
        hi = max(self._inputs.values())
        if hi - lo < 64:
            bits = self._call(
                f"reading inputs {lo}..{hi}", self._client.read_discrete_inputs, lo, count=hi - lo + 1
            ).bits
            values = {name: bool(bits[addr - lo]) for name, addr in self._inputs.items()}
        else:
            values = {
                name: bool(
                    self._call(f"reading {name} input {addr}", self._client.read_discrete_inputs, addr, count=1).bits[0]
                )
                for name, addr in self._inputs.items()
            }
        return InputStates(**values)

    def close(self) -> None:
        self._client.close()
