"""What every reject backend offers: outputs to switch, a verdict to write, inputs to read.

The reject tracker composes pulses, handshakes and alarms from these few
primitives, so timing and policy live in one place and a backend only moves
bits. All calls come from the tracker's one scheduler thread (pymodbus' sync
client, for one, is not safe to share between threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol

from lineinspect.core.result import Verdict
from lineinspect.errors import LineinspectError


class ActuatorError(LineinspectError):
    """The reject output could not be reached or refused a write; says which device and what to do."""


class Output(StrEnum):
    EJECTOR = "ejector"
    RESULT_VALID = "result_valid"
    STOP_LINE = "stop_line"


class VerdictCode(IntEnum):
    """Numbers written to the PLC's verdict register / node / tag."""

    NONE = 0
    PASS = 1
    FAIL = 2
    UNDECIDED = 3

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictCode:
        return {Verdict.PASS: cls.PASS, Verdict.FAIL: cls.FAIL, Verdict.UNDECIDED: cls.UNDECIDED}[verdict]


@dataclass(frozen=True, slots=True)
class InputStates:
    """One reading of the optional inputs; None where the input is not mapped."""

    confirm: bool | None = None
    bin_full: bool | None = None
    air_low: bool | None = None
    ack: bool | None = None


class Actuator(Protocol):
    """A reject backend (dry-run, Modbus TCP, OPC UA, EMQX Neuron)."""

    @property
    def describe(self) -> str:
        """Where the outputs are, for messages and the audit trail (e.g. `modbus 10.0.0.5:502 unit 1`)."""
        ...

    def check_reachable(self) -> None:
        """Connect and read once; raise ActuatorError naming the device and what to check."""
        ...

    def set_output(self, output: Output, on: bool) -> None:
        """Switch one output; raise ActuatorError when the device refuses or does not answer."""
        ...

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        """Write verdict code and part number (uint32) for the PLC's tracking."""
        ...

    def read_inputs(self) -> InputStates:
        """Read every mapped input in as few requests as the protocol allows."""
        ...

    def close(self) -> None:
        """Disconnect and stop any thread the backend started."""
        ...
