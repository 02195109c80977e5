"""station.yaml `reject:` section, checked against the physics of the line at start-up.

Two modes:
- `timed`: the service fires the ejector output at trigger time + `delay_ms`
  (or + `encoder_counts`) for `pulse_width_ms`.
- `verdict_to_plc`: the service writes verdict code + part number (and an
  optional result-valid/ack handshake); the PLC's shift register fires.

The checks in `physics_problems()` run when the file is loaded, so a station
whose ejector cannot act in time refuses to start and says which value to change.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect.errors import ConfigError
from lineinspect.line.reject.actuator import Output

_A = TypeVar("_A", int, str)  # a backend's address: Modbus number, OPC UA node id, Neuron tag


class RejectMode(StrEnum):
    TIMED = "timed"
    VERDICT_TO_PLC = "verdict_to_plc"


class DryRunBackend(BaseModel):
    """No hardware: every actuation is logged and handed to the status publisher."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["dry_run"] = Field("dry_run", description="Commissioning backend that only reports.")

    def output_addresses(self) -> dict[Output, None]:
        """No addresses: dry-run switches nothing."""
        return dict.fromkeys(Output)

    def input_addresses(self) -> dict[str, None]:
        return {}


class ModbusBackend(BaseModel):
    """Modbus TCP PLC or I/O coupler. Addresses are 0-based protocol addresses."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = Field("modbus", description="Modbus TCP (pymodbus client).")
    host: str = Field(..., min_length=1, description="PLC / coupler IP address or host name.")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port.")
    device_id: int = Field(1, ge=0, le=255, description="Modbus unit / device id.")
    timeout_ms: int = Field(500, gt=0, description="Time to wait for one Modbus response.")
    ejector_coil: int = Field(0, ge=0, le=65535, description="Coil that drives the ejector valve (timed mode).")
    verdict_register: int = Field(
        0, ge=0, le=65535, description="Holding register for the verdict code (0 none, 1 pass, 2 fail, 3 undecided)."
    )
    part_number_register: int = Field(
        1, ge=0, le=65534, description="First of two holding registers for the part number (uint32, high word first)."
    )
    result_valid_coil: int | None = Field(
        None, ge=0, le=65535, description="Coil set after the verdict is written (handshake); null: not used."
    )
    ack_input: int | None = Field(
        None, ge=0, le=65535, description="Discrete input the PLC sets to acknowledge the verdict; null: no ack."
    )
    confirm_input: int | None = Field(None, ge=0, le=65535, description="Discrete input of the reject-confirm sensor.")
    bin_full_input: int | None = Field(None, ge=0, le=65535, description="Discrete input: reject bin full.")
    air_low_input: int | None = Field(None, ge=0, le=65535, description="Discrete input: air pressure low.")
    stop_line_coil: int | None = Field(None, ge=0, le=65535, description="Coil that stops the line on an alarm.")

    def output_addresses(self) -> dict[Output, int | None]:
        """Coil of each output; None where it is not mapped."""
        return {
            Output.EJECTOR: self.ejector_coil,
            Output.RESULT_VALID: self.result_valid_coil,
            Output.STOP_LINE: self.stop_line_coil,
        }

    def input_addresses(self) -> dict[str, int]:
        """Discrete input of each mapped input, by InputStates field name."""
        return _mapped(
            confirm=self.confirm_input, bin_full=self.bin_full_input, air_low=self.air_low_input, ack=self.ack_input
        )


class OpcUaBackend(BaseModel):
    """OPC UA server of the PLC. Node ids in string form, e.g. `ns=2;s=Reject.Ejector`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = Field("opcua", description="OPC UA (asyncua client).")
    endpoint: str = Field(..., pattern=r"^opc\.tcp://", description="Server endpoint URL (opc.tcp://host:port/path).")
    timeout_ms: int = Field(1000, gt=0, description="Time to wait for one OPC UA service call.")
    ejector_node: str | None = Field(None, description="Boolean node driving the ejector (timed mode).")
    pulse_method: str | None = Field(
        None,
        description="Method node called with the pulse width in ms (UInt32) instead of writing the ejector "
        "node on/off; its parent object is the node's parent. Lets the PLC time the pulse itself.",
    )
    verdict_node: str | None = Field(None, description="Integer node for the verdict code (verdict_to_plc mode).")
    part_number_node: str | None = Field(None, description="Integer node for the part number.")
    result_valid_node: str | None = Field(None, description="Boolean node set after the verdict is written.")
    ack_node: str | None = Field(None, description="Boolean node the PLC sets to acknowledge the verdict.")
    confirm_node: str | None = Field(None, description="Boolean node of the reject-confirm sensor.")
    bin_full_node: str | None = Field(None, description="Boolean node: reject bin full.")
    air_low_node: str | None = Field(None, description="Boolean node: air pressure low.")
    stop_line_node: str | None = Field(None, description="Boolean node that stops the line on an alarm.")

    def output_addresses(self) -> dict[Output, str | None]:
        """Node id of each output; None where it is not mapped (an ejector may be `pulse_method` instead)."""
        return {
            Output.EJECTOR: self.ejector_node,
            Output.RESULT_VALID: self.result_valid_node,
            Output.STOP_LINE: self.stop_line_node,
        }

    def input_addresses(self) -> dict[str, str]:
        """Node id of each mapped input, by InputStates field name."""
        return _mapped(
            confirm=self.confirm_node, bin_full=self.bin_full_node, air_low=self.air_low_node, ack=self.ack_node
        )


class NeuronBackend(BaseModel):
    """EMQX Neuron gateway reached through its MQTT north app (write requests, read requests)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["neuron"] = Field("neuron", description="EMQX Neuron over MQTT.")
    host: str = Field(..., min_length=1, description="MQTT broker the Neuron north app connects to.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    username_env: str | None = Field(None, description="Environment variable holding the MQTT user name.")
    password_env: str | None = Field(None, description="Environment variable holding the MQTT password.")
    app: str = Field(..., min_length=1, description="Name of the MQTT north app in Neuron (used in default topics).")
    node: str = Field(..., min_length=1, description="Neuron south node (device) holding the reject tags.")
    group: str = Field(..., min_length=1, description="Group of that south node holding the reject tags.")
    write_request_topic: str | None = Field(
        None, description="Neuron 'Write Request Topic'; default /neuron/<app>/write/req."
    )
    write_response_topic: str | None = Field(
        None, description="Neuron 'Write Response Topic'; default /neuron/<app>/write/resp."
    )
    read_request_topic: str | None = Field(
        None,
        description="Read request topic. Default: both /neuron/<app>/read/req (Neuron's docs, older releases) and "
        "neuron/<app>/read/req (Neuron 2.15), the first answer counts; set it to pin one.",
    )
    read_response_topic: str | None = Field(
        None,
        description="Read response topic. Default: both /neuron/<app>/read/resp and neuron/<app>/read/resp (as "
        "read_request_topic).",
    )
    response_timeout_ms: int = Field(1000, gt=0, description="Time to wait for Neuron's answer to one request.")
    ejector_tag: str | None = Field(None, description="Tag driving the ejector (timed mode).")
    verdict_tag: str | None = Field(None, description="Tag for the verdict code (verdict_to_plc mode).")
    part_number_tag: str | None = Field(None, description="Tag for the part number.")
    result_valid_tag: str | None = Field(None, description="Tag set to 1 after the verdict is written.")
    ack_tag: str | None = Field(None, description="Tag the PLC sets to acknowledge the verdict.")
    confirm_tag: str | None = Field(None, description="Tag of the reject-confirm sensor.")
    bin_full_tag: str | None = Field(None, description="Tag: reject bin full.")
    air_low_tag: str | None = Field(None, description="Tag: air pressure low.")
    stop_line_tag: str | None = Field(None, description="Tag that stops the line on an alarm.")

    def output_addresses(self) -> dict[Output, str | None]:
        """Tag of each output; None where it is not mapped."""
        return {
            Output.EJECTOR: self.ejector_tag,
            Output.RESULT_VALID: self.result_valid_tag,
            Output.STOP_LINE: self.stop_line_tag,
        }

    def input_addresses(self) -> dict[str, str]:
        """Tag of each mapped input, by InputStates field name."""
        return _mapped(confirm=self.confirm_tag, bin_full=self.bin_full_tag, air_low=self.air_low_tag, ack=self.ack_tag)

    @property
    def write_request(self) -> str:
        return self.write_request_topic or f"/neuron/{self.app}/write/req"

    @property
    def write_response(self) -> str:
        return self.write_response_topic or f"/neuron/{self.app}/write/resp"

    @property
    def read_request(self) -> str:
        return self.read_request_topic or f"/neuron/{self.app}/read/req"

    @property
    def read_response(self) -> str:
        return self.read_response_topic or f"/neuron/{self.app}/read/resp"


Backend = Annotated[
    DryRunBackend | ModbusBackend | OpcUaBackend | NeuronBackend,
    Field(discriminator="type"),
]


class HandshakeSettings(BaseModel):
    """Result-valid / acknowledge handshake of verdict_to_plc mode."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Set result-valid after the verdict (and wait for the PLC's ack where an ack is mapped)."
    )
    ack_timeout_ms: int = Field(20, gt=0, description="Time the PLC has to acknowledge; missing ack raises an alarm.")
    ack_poll_ms: float = Field(2.0, gt=0, description="Interval at which the ack is read while waiting.")


class ConfirmSensor(BaseModel):
    """Sensor that sees a rejected part enter the bin."""

    model_config = ConfigDict(extra="forbid")

    window_ms: int = Field(
        ..., gt=0, description="Time after the pulse starts within which the sensor must see the part."
    )


class InputSettings(BaseModel):
    """Optional inputs watched while running; each one raises an alarm."""

    model_config = ConfigDict(extra="forbid")

    confirm: ConfirmSensor | None = Field(None, description="Reject-confirm sensor; null: not fitted.")
    bin_full: bool = Field(False, description="Watch the bin-full input.")
    air_low: bool = Field(False, description="Watch the air-pressure-low input.")
    poll_ms: float = Field(
        5.0,
        gt=0,
        description="Interval at which inputs are read. A confirm signal shorter than twice this must be "
        "latched by the PLC / gateway.",
    )


class RejectSettings(BaseModel):
    """Reject station: how a failed or undecided part leaves the line."""

    model_config = ConfigDict(extra="forbid")

    mode: RejectMode = Field(..., description="timed: this service fires the ejector; verdict_to_plc: the PLC does.")
    backend: Backend = Field(..., description="Where the outputs are (dry_run, modbus, opcua, neuron).")
    inspection_budget_ms: float = Field(
        ...,
        gt=0,
        description="Worst-case time from trigger to verdict (capture + inspection); a part without a verdict "
        "by then is treated as undecided.",
    )
    actuator_latency_ms: float = Field(
        5.0, ge=0, description="Worst-case time the backend needs to switch an output (network + PLC scan)."
    )
    line_rate_parts_per_min: float | None = Field(
        None, gt=0, description="Highest rate at which parts pass the camera; sets the part spacing."
    )
    part_spacing_ms: float | None = Field(
        None, gt=0, description="Shortest time between two parts at the camera (instead of the line rate)."
    )
    delay_ms: float | None = Field(
        None, gt=0, description="timed mode: time from trigger to the start of the ejector pulse."
    )
    encoder_counts: int | None = Field(
        None, gt=0, description="timed mode: encoder counts from trigger to the ejector (instead of delay_ms)."
    )
    encoder_counts_per_s_max: float | None = Field(
        None, gt=0, description="Encoder counts per second at the fastest line speed (needed with encoder_counts)."
    )
    pulse_width_ms: float = Field(20.0, gt=0, description="timed mode: how long the ejector output stays on.")
    plc_deadline_ms: float | None = Field(
        None,
        gt=0,
        description="verdict_to_plc mode: time from trigger by which the PLC needs the verdict.",
    )
    reject_undecided: bool = Field(
        True, description="Reject parts whose verdict is undecided or late (fail-safe; keep true in production)."
    )
    handshake: HandshakeSettings = Field(
        default_factory=HandshakeSettings, description="verdict_to_plc handshake (result valid / ack)."
    )
    inputs: InputSettings = Field(default_factory=InputSettings, description="Optional inputs that raise alarms.")
    stop_line: bool = Field(
        False, description="Switch the backend's stop-line output on at the first alarm (latched until reset)."
    )
    deadline_clear_after_parts: int = Field(
        20,
        gt=0,
        description="A deadline_missed alarm clears itself once this many parts in a row were decided and actuated "
        "on time (a stop-line output stays latched until reset).",
    )
    max_parts_in_flight: int = Field(
        256, gt=0, description="Parts tracked between camera and ejector; more raises an alarm."
    )
    scheduler_priority: int | None = Field(
        50,
        ge=1,
        le=99,
        description="Linux SCHED_FIFO priority of the pulse scheduler thread (needs CAP_SYS_NICE or an RTPRIO "
        "limit; without, a warning and normal scheduling). With every core busy (inspection), a woken "
        "normal-priority thread can wait several ms for a time slice; a FIFO thread runs at once. null: normal "
        "scheduling (pulses then run late under load; see README, Reject actuation).",
    )
    scheduler_spin_ms: float | None = Field(
        None,
        ge=0,
        le=20,
        description="How long before each due event the pulse scheduler stops sleeping and spins, holding the GIL "
        "until the event. A thread that has the GIL keeps it for at least one GIL switch interval "
        "(sys.getswitchinterval(), 5 ms by default) whatever other threads do, while getting it back after a sleep "
        "can take that long: a spin of one interval makes the write start on time. null: one switch interval when "
        "the thread runs with SCHED_FIFO, else 0 (a spinning normal-priority thread is preempted mid-spin). "
        "0: sleep up to the due time.",
    )
    scheduler_cpus: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="CPU numbers the pulse scheduler thread may run on (os.sched_setaffinity), e.g. [1] with the "
        "inference threads kept off CPU 1; the pin only pays off where nothing else runs there. null: any CPU.",
    )
    audit_dir: str = Field("data/reject-audit", description="Folder (relative to the station dir) of the audit trail.")

    @property
    def spacing_ms(self) -> float | None:
        if self.part_spacing_ms is not None:
            return self.part_spacing_ms
        if self.line_rate_parts_per_min is not None:
            return 60_000.0 / self.line_rate_parts_per_min
        return None

    def _spacing_source(self) -> str:
        if self.part_spacing_ms is not None:
            return "reject.part_spacing_ms"
        return f"reject.line_rate_parts_per_min {self.line_rate_parts_per_min:g}"

    def physics_problems(self) -> list[str]:
        """Every way the configured line cannot work; empty when it can."""
        problems: list[str] = []
        need_ms = self.inspection_budget_ms + self.actuator_latency_ms
        spacing = self.spacing_ms
        if spacing is None:
            problems.append(
                "reject: set reject.line_rate_parts_per_min (or reject.part_spacing_ms) to the highest rate of the "
                "line; pulse width and handshake time are checked against it"
            )
        if self.mode is RejectMode.TIMED:
            problems += self._timed_problems(need_ms, spacing)
        else:
            problems += self._plc_problems(need_ms, spacing)
        if self.stop_line and not _maps_output(self.backend, Output.STOP_LINE):
            problems.append(
                f"reject.stop_line is true but the {self.backend.type} backend names no stop-line output; "
                "set its stop_line_* address or set reject.stop_line to false"
            )
        return problems

    def _timed_problems(self, need_ms: float, spacing: float | None) -> list[str]:
        problems: list[str] = []
        if (self.delay_ms is None) == (self.encoder_counts is None):
            problems.append("reject: timed mode needs exactly one of reject.delay_ms or reject.encoder_counts")
        if self.delay_ms is not None and self.delay_ms < need_ms:
            problems.append(
                f"reject.delay_ms {self.delay_ms:g} is shorter than the worst-case inspection budget "
                f"{self.inspection_budget_ms:g} ms (reject.inspection_budget_ms) + actuator latency "
                f"{self.actuator_latency_ms:g} ms (reject.actuator_latency_ms): every part would reach the ejector "
                f"before its verdict. Increase reject.delay_ms to at least {math.ceil(need_ms)} (move the ejector "
                "further from the camera) or lower reject.inspection_budget_ms"
            )
        if self.encoder_counts is not None:
            if self.encoder_counts_per_s_max is None:
                problems.append(
                    "reject.encoder_counts needs reject.encoder_counts_per_s_max (counts per second at the "
                    "fastest line speed) to check the travel time against the inspection budget"
                )
            else:
                travel_ms = self.encoder_counts / self.encoder_counts_per_s_max * 1000.0
                if travel_ms < need_ms:
                    min_counts = math.ceil(need_ms / 1000.0 * self.encoder_counts_per_s_max)
                    problems.append(
                        f"reject.encoder_counts {self.encoder_counts} is {travel_ms:.1f} ms of travel at "
                        f"{self.encoder_counts_per_s_max:g} counts/s (reject.encoder_counts_per_s_max), shorter than "
                        f"the inspection budget {self.inspection_budget_ms:g} ms + actuator latency "
                        f"{self.actuator_latency_ms:g} ms. Increase reject.encoder_counts to at least {min_counts} "
                        "(move the ejector further from the camera) or lower reject.inspection_budget_ms"
                    )
        if spacing is not None and self.pulse_width_ms > spacing:
            problems.append(
                f"reject.pulse_width_ms {self.pulse_width_ms:g} is longer than the part spacing {spacing:g} ms "
                f"({self._spacing_source()}): the ejector would also hit the next part. Shorten "
                f"reject.pulse_width_ms to at most {math.floor(spacing)} or lower the line rate"
            )
        if self.inputs.confirm is not None and self.inputs.confirm.window_ms < self.pulse_width_ms:
            problems.append(
                f"reject.inputs.confirm.window_ms {self.inputs.confirm.window_ms} is shorter than "
                f"reject.pulse_width_ms {self.pulse_width_ms:g}: the part cannot reach the bin that fast. "
                "Increase the window to the time the part takes from the ejector to the confirm sensor"
            )
        if not _maps_output(self.backend, Output.EJECTOR):
            problems.append(
                f"reject: timed mode needs an ejector output; set the {self.backend.type} backend's ejector "
                "address (ejector_coil / ejector_node or pulse_method / ejector_tag)"
            )
        return problems

    def _plc_problems(self, need_ms: float, spacing: float | None) -> list[str]:
        problems: list[str] = []
        if self.plc_deadline_ms is None:
            problems.append(
                "reject: verdict_to_plc mode needs reject.plc_deadline_ms (time from trigger by which the PLC "
                "needs the verdict)"
            )
        elif self.plc_deadline_ms < need_ms:
            problems.append(
                f"reject.plc_deadline_ms {self.plc_deadline_ms:g} is shorter than the worst-case inspection budget "
                f"{self.inspection_budget_ms:g} ms (reject.inspection_budget_ms) + actuator latency "
                f"{self.actuator_latency_ms:g} ms: the PLC would decide before the verdict arrives. Increase "
                f"reject.plc_deadline_ms to at least {math.ceil(need_ms)} (track the part further in the PLC) "
                "or lower reject.inspection_budget_ms"
            )
        if self.handshake.enabled and spacing is not None and self.handshake.ack_timeout_ms > spacing:
            problems.append(
                f"reject.handshake.ack_timeout_ms {self.handshake.ack_timeout_ms} is longer than the part spacing "
                f"{spacing:g} ms ({self._spacing_source()}): one missing ack would delay the next part's verdict. "
                f"Lower reject.handshake.ack_timeout_ms to at most {math.floor(spacing)}"
            )
        if self.handshake.enabled and not _maps_output(self.backend, Output.RESULT_VALID):
            problems.append(
                f"reject.handshake.enabled is true but the {self.backend.type} backend names no result-valid "
                "output; set result_valid_coil / result_valid_node / result_valid_tag or disable the handshake"
            )
        if not _has_verdict_output(self.backend):
            problems.append(
                f"reject: verdict_to_plc mode needs a verdict address; set the {self.backend.type} backend's "
                "verdict_node / verdict_tag"
            )
        return problems

    @model_validator(mode="after")
    def _line_physics(self) -> RejectSettings:
        problems = self.physics_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check_physics(self) -> None:
        """Raise ConfigError listing every value to change (the validator already ran this at load)."""
        problems = self.physics_problems()
        if problems:
            raise ConfigError("reject settings cannot work on this line:\n  " + "\n  ".join(problems))


def _mapped(**addresses: _A | None) -> dict[str, _A]:
    return {name: address for name, address in addresses.items() if address is not None}


def _maps_output(backend: DryRunBackend | ModbusBackend | OpcUaBackend | NeuronBackend, output: Output) -> bool:
    if isinstance(backend, DryRunBackend):
        return True  # switches nothing, so it needs no address
    if output is Output.EJECTOR and isinstance(backend, OpcUaBackend) and backend.pulse_method is not None:
        return True  # the PLC times the pulse itself
    return backend.output_addresses()[output] is not None


def _has_verdict_output(backend: DryRunBackend | ModbusBackend | OpcUaBackend | NeuronBackend) -> bool:
    if isinstance(backend, OpcUaBackend):
        return backend.verdict_node is not None
    if isinstance(backend, NeuronBackend):
        return backend.verdict_tag is not None
    return True  # Modbus always has a register address; dry-run needs none.
