"""station.yaml `plc_triggers:`: one entry per software-triggered camera whose parts the PLC announces.

Each entry names its camera, where the trigger is (a Modbus coil / discrete input, an OPC UA Boolean
node), where the part id, the product code and the PLC's part counter are read at the trigger, the
optional "trigger accepted" acknowledgement, and the product code → recipe id mapping.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The most holding registers one Modbus read may return (the protocol's limit, 125).
MODBUS_MAX_READ_REGISTERS = 125


class RegisterFormat(StrEnum):
    """How a value is laid out in holding registers."""

    UINT16 = "uint16"  # one register
    UINT32 = "uint32"  # two registers, high word first (as the reject backend writes part numbers)
    ASCII = "ascii"  # `count` registers, two characters each, high byte first; NULs and spaces at the end dropped


class RegisterValue(BaseModel):
    """A value in the PLC's holding registers (0-based protocol addresses)."""

    model_config = ConfigDict(extra="forbid")

    address: int = Field(
        ..., ge=0, le=65535, description="First holding register of the value (0-based protocol address)."
    )
    format: RegisterFormat = Field(
        RegisterFormat.UINT16,
        description="uint16 (one register), uint32 (two, high word first) or ascii (`count` registers, two "
        "characters each, high byte first).",
    )
    count: int | None = Field(
        None,
        ge=1,
        le=MODBUS_MAX_READ_REGISTERS,
        description="ascii only: number of registers (a 20-character id needs 10); numbers need none.",
    )

    @model_validator(mode="after")
    def _count_fits_format(self) -> RegisterValue:
        if self.format is RegisterFormat.ASCII and self.count is None:
            raise ValueError("format ascii needs count: the number of registers the text fills (2 characters each)")
        if self.format is not RegisterFormat.ASCII and self.count is not None:
            raise ValueError(
                f"count is for format ascii only; a {self.format} value has {self.registers} register(s). "
                "Remove count or set format: ascii"
            )
        if self.address + self.registers > 65536:
            raise ValueError(f"register {self.address} + {self.registers} register(s) runs past address 65535")
        return self

    @property
    def registers(self) -> int:
        """How many registers the value fills."""
        if self.format is RegisterFormat.UINT32:
            return 2
        if self.format is RegisterFormat.ASCII:
            assert self.count is not None
            return self.count
        return 1

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.registers

    @property
    def modulus(self) -> int:
        """Where a counter in this format wraps to 0."""
        return 1 << 32 if self.format is RegisterFormat.UINT32 else 1 << 16

    def decode(self, words: list[int]) -> int | str:
        """The value from exactly `registers` register words."""
        if self.format is RegisterFormat.UINT16:
            return int(words[0])
        if self.format is RegisterFormat.UINT32:
            return (int(words[0]) << 16) | int(words[1])
        raw = b"".join(int(w).to_bytes(2, "big") for w in words)
        return raw.rstrip(b"\x00 ").decode("ascii", errors="replace")


class Backoff(BaseModel):
    """Waits between attempts to reach a PLC that does not answer."""

    model_config = ConfigDict(extra="forbid")

    min_ms: int = Field(200, gt=0, description="First wait after the PLC is lost.")
    max_ms: int = Field(5_000, gt=0, description="Longest wait between attempts (doubling from min_ms).")

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.max_ms < self.min_ms:
            raise ValueError(f"max_ms ({self.max_ms}) must be >= min_ms ({self.min_ms})")
        return self


class ModbusTriggerSource(BaseModel):
    """Trigger bit polled over Modbus TCP (Modbus has no subscriptions), values in holding registers."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = Field("modbus", description="Modbus TCP (pymodbus client).")
    host: str = Field(..., min_length=1, description="PLC IP address or host name.")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port.")
    device_id: int = Field(1, ge=0, le=255, description="Modbus unit / device id.")
    timeout_ms: int = Field(300, gt=0, description="Time to wait for one Modbus response.")
    poll_ms: float = Field(
        5.0,
        gt=0,
        le=1000,
        description="Interval at which the trigger bit is read. The PLC must hold the bit high, then low, for "
        "longer than this (or until the acknowledgement), else an edge is missed.",
    )
    trigger_coil: int | None = Field(None, ge=0, le=65535, description="Coil the PLC sets for each part.")
    trigger_input: int | None = Field(
        None, ge=0, le=65535, description="Discrete input the PLC sets for each part (instead of trigger_coil)."
    )
    part_id: RegisterValue | None = Field(None, description="Where the part id is; null: the PLC gives none.")
    product_code: RegisterValue | None = Field(
        None, description="Where the product code is (mapped to a recipe by product_codes); null: not read."
    )
    part_counter: RegisterValue | None = Field(
        None,
        description="The PLC's own part counter (uint16 or uint32), advanced by one per part; a larger jump "
        "means parts passed without a trigger seen (alarm). null: not checked.",
    )
    ack_coil: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Coil set once a trigger was accepted (after ack_trigger_id_register) and cleared when the "
        "trigger bit falls; null: no acknowledgement.",
    )
    ack_trigger_id_register: int | None = Field(
        None,
        ge=0,
        le=65534,
        description="First of two holding registers that get the accepted part's trigger id (uint32, high "
        "word first), written before ack_coil; null: not written.",
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> ModbusTriggerSource:
        if (self.trigger_coil is None) == (self.trigger_input is None):
            raise ValueError("set exactly one of trigger_coil or trigger_input: the bit the PLC raises per part")
        if self.part_counter is not None and self.part_counter.format is RegisterFormat.ASCII:
            raise ValueError("part_counter.format must be uint16 or uint32 (a counter is a number)")
        spans = {name: (v.address, v.end) for name, v in self.values.items()}
        if self.ack_trigger_id_register is not None:
            spans["ack_trigger_id_register"] = (self.ack_trigger_id_register, self.ack_trigger_id_register + 2)
        names = sorted(spans, key=lambda n: spans[n])
        for a, b in itertools.pairwise(names):
            if spans[b][0] < spans[a][1]:
                raise ValueError(
                    f"{a} (registers {spans[a][0]}..{spans[a][1] - 1}) and {b} (registers {spans[b][0]}.."
                    f"{spans[b][1] - 1}) overlap; give each value its own registers"
                )
        return self

    @property
    def values(self) -> dict[str, RegisterValue]:
        """The register values read at each trigger, by name."""
        named = {"part_id": self.part_id, "product_code": self.product_code, "part_counter": self.part_counter}
        return {name: value for name, value in named.items() if value is not None}

    @property
    def one_read(self) -> tuple[int, int] | None:
        """(first register, count) of the one read covering every value, where they fit in one; else None."""
        values = list(self.values.values())
        if not values:
            return None
        first = min(v.address for v in values)
        count = max(v.end for v in values) - first
        return (first, count) if count <= MODBUS_MAX_READ_REGISTERS else None

    @property
    def describe(self) -> str:
        return f"modbus {self.host}:{self.port} device {self.device_id}"


class OpcUaTriggerSource(BaseModel):
    """Trigger node watched by an OPC UA data-change subscription (polled only where the server refuses one)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = Field("opcua", description="OPC UA (asyncua client).")
    endpoint: str = Field(..., pattern=r"^opc\.tcp://", description="Server endpoint URL (opc.tcp://host:port/path).")
    timeout_ms: int = Field(1000, gt=0, description="Time to wait for one OPC UA service call.")
    trigger_node: str = Field(..., min_length=1, description="Boolean node the PLC sets for each part.")
    part_id_node: str | None = Field(None, description="String or integer node holding the part id; null: none.")
    product_code_node: str | None = Field(
        None, description="String or integer node holding the product code (mapped by product_codes); null: not read."
    )
    part_counter_node: str | None = Field(
        None, description="Integer node: the PLC's own part counter, advanced by one per part; null: not checked."
    )
    ack_node: str | None = Field(
        None, description="Boolean node set once a trigger was accepted and cleared when the trigger falls."
    )
    ack_trigger_id_node: str | None = Field(
        None, description="Integer node that gets the accepted part's trigger id, written before ack_node."
    )
    subscribe: bool = Field(
        True, description="Watch the trigger with a subscription (false: always poll, for servers that misbehave)."
    )
    publishing_interval_ms: float = Field(
        5.0, gt=0, description="Requested publishing interval of the subscription (the server may revise it)."
    )
    queue_size: int = Field(
        32, ge=2, le=1000, description="Trigger changes the server keeps between two publishes (so none is merged)."
    )
    poll_ms: float = Field(
        5.0, gt=0, le=1000, description="Interval of the fallback poll where the server refuses subscriptions."
    )

    @property
    def value_nodes(self) -> dict[str, str]:
        """The nodes read at each trigger (in one Read request), by name."""
        named = {
            "part_id": self.part_id_node,
            "product_code": self.product_code_node,
            "part_counter": self.part_counter_node,
        }
        return {name: node for name, node in named.items() if node is not None}

    @property
    def describe(self) -> str:
        return f"opcua {self.endpoint}"


TriggerSource = Annotated[ModbusTriggerSource | OpcUaTriggerSource, Field(discriminator="type")]


class PlcTriggerSettings(BaseModel):
    """One camera triggered by the PLC: trigger bit, part id, product code, acknowledgement."""

    model_config = ConfigDict(extra="forbid")

    camera: str = Field(
        ..., min_length=1, description="Camera id (cameras/<id>.yaml); its trigger mode must be software."
    )
    source: TriggerSource = Field(..., description="Where the trigger and the values are (modbus or opcua).")
    product_codes: dict[str, str] = Field(
        default_factory=dict,
        description="PLC product code → recipe id. A code that changes selects its recipe before the part is "
        "triggered; an unknown code is an alarm and the part is inspected with the active recipe.",
    )
    reconnect: Backoff = Field(default_factory=Backoff, description="Backoff while the PLC does not answer.")
    missed_clear_after_parts: int = Field(
        10,
        ge=1,
        description="The missed-trigger alarm clears after this many parts in a row whose part counter advanced "
        "by exactly one.",
    )

    @field_validator("product_codes", mode="before")
    @classmethod
    def _codes_as_text(cls, value: Any) -> Any:
        # YAML reads `1: recipe-a` with an int key; the PLC's number is compared as text.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _codes_need_a_source(self) -> PlcTriggerSettings:
        has_code = (
            self.source.product_code is not None
            if isinstance(self.source, ModbusTriggerSource)
            else self.source.product_code_node is not None
        )
        if self.product_codes and not has_code:
            where = "product_code" if isinstance(self.source, ModbusTriggerSource) else "product_code_node"
            raise ValueError(f"product_codes is set but source.{where} is not: say where the PLC's product code is")
        return self
