"""Dry-run actuator for commissioning: reports what it would do, switches nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lineinspect.core.clock import utc_now_iso
from lineinspect.line.reject.actuator import InputStates, Output, VerdictCode

log = logging.getLogger(__name__)

DryRunPublish = Callable[[dict[str, Any]], None]


class DryRunActuator:
    """Every call becomes a log line and an event handed to `publish` (the runtime sends it to MQTT status)."""

    def __init__(self, publish: DryRunPublish | None = None) -> None:
        self._publish = publish

    @property
    def describe(self) -> str:
        return "dry_run"

    def _report(self, event: dict[str, Any]) -> None:
        event = {"dry_run": True, "at": utc_now_iso(), **event}
        log.info("reject dry-run: would %s", event)
        if self._publish is not None:
            self._publish(event)

    def check_reachable(self) -> None:
        self._report({"action": "check_reachable"})

    def set_output(self, output: Output, on: bool) -> None:
        self._report({"action": "set_output", "output": output.value, "on": on})

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        self._report({"action": "write_verdict", "verdict_code": int(code), "part_number": part_number})

    def read_inputs(self) -> InputStates:
        return InputStates()

    def close(self) -> None:
        pass
