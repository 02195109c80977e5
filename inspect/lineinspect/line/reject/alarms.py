"""Reject-station alarms, handed to a callback (the runtime publishes them on MQTT `status`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from lineinspect.core.clock import iso_utc, utc_now


class AlarmKind(StrEnum):
    CONFIRM_MISSING = "confirm_missing"  # pulse fired, the bin sensor did not see the part in the window
    BIN_FULL = "bin_full"
    AIR_LOW = "air_low"
    ACTUATOR_ERROR = "actuator_error"  # an output write failed or was refused (device, gateway, Neuron error)
    ACK_MISSING = "ack_missing"  # verdict_to_plc: the PLC did not acknowledge in time
    DEADLINE_MISSED = "deadline_missed"  # an actuation happened too late for its part
    TRACKING_OVERFLOW = "tracking_overflow"  # more parts between camera and ejector than configured


@dataclass(frozen=True, slots=True)
class Alarm:
    kind: AlarmKind
    message: str
    active: bool = True  # False: the condition cleared (bin emptied, air back)
    result_id: str | None = None
    part_number: int | None = None
    at: datetime = field(default_factory=utc_now)

    def to_payload(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "active": self.active,
            "message": self.message,
            "result_id": self.result_id,
            "part_number": self.part_number,
            "at": iso_utc(self.at, "milliseconds"),
        }


AlarmSink = Callable[[Alarm], None]
