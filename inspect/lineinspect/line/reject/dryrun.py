"""Dry-run actuator for commissioning: reports what it would do, switches nothing.

Every would-be action is an event handed to `publish` (the runtime sends it to `<prefix>/reject/event`)
and a DEBUG log line. At INFO it logs one summary a minute (`summary_every_s`), so a commissioning
run at line rate does not bury the rest of the log: the ejector pulses it would have fired, why (from
the tracker's counters: fail, undecided, of them late), the parts it let pass and the verdicts it
would have written. The summary is written with the first action after the minute is up, and at close.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from lineinspect.core.clock import utc_now_iso
from lineinspect.line.reject.actuator import InputStates, Output, VerdictCode
from lineinspect.line.reject.audit import RejectCounters

log = logging.getLogger(__name__)

DryRunPublish = Callable[[dict[str, Any]], None]

SUMMARY_EVERY_S = 60.0
# The tracker's counters a summary reports, as differences since the last summary.
_SUMMARY_COUNTERS = ("fired", "undecided_rejected", "late", "passed")


class DryRunActuator:
    """Every call becomes an event handed to `publish`, a DEBUG line and a count in the next summary."""

    def __init__(
        self,
        publish: DryRunPublish | None = None,
        *,
        counters: RejectCounters | None = None,
        summary_every_s: float = SUMMARY_EVERY_S,
        monotonic_s: Callable[[], float] = time.monotonic,
    ) -> None:
        """counters: the tracker's, for why the pulses would have fired (without them: pulses only);
        monotonic_s: the clock the summary interval is measured on, in seconds."""
        self._publish = publish
        self._counters = counters
        self._summary_every_s = summary_every_s
        self._monotonic_s = monotonic_s
        self._since_s = monotonic_s()
        self._actions: Counter[str] = Counter()  # "pulses", "verdict_<code>", "<output>_on"
        self._counted = self._counter_values()

    @property
    def describe(self) -> str:
        return "dry_run"

    def _report(self, event: dict[str, Any]) -> None:
        event = {"dry_run": True, "at": utc_now_iso(), **event}
        log.debug("reject dry-run: would %s", event)
        if self._publish is not None:
            self._publish(event)

    def _summarise_if_due(self) -> None:
        # Before the call's own action is counted: the tracker counts a part's reason before it switches.
        if self._monotonic_s() - self._since_s >= self._summary_every_s:
            self._log_summary()

    def check_reachable(self) -> None:
        log.info(
            "reject dry-run: switching nothing; a summary every %g s at INFO, each would-be action at DEBUG",
            self._summary_every_s,
        )
        self._report({"action": "check_reachable"})

    def set_output(self, output: Output, on: bool) -> None:
        self._summarise_if_due()
        if on:
            self._actions["pulses" if output is Output.EJECTOR else f"{output.value}_on"] += 1
        self._report({"action": "set_output", "output": output.value, "on": on})

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        self._summarise_if_due()
        self._actions[f"verdict_{code.name.lower()}"] += 1
        self._report({"action": "write_verdict", "verdict_code": int(code), "part_number": part_number})

    def read_inputs(self) -> InputStates:
        return InputStates()

    def close(self) -> None:
        self._log_summary()

    def _counter_values(self) -> dict[str, int]:
        if self._counters is None:
            return {}
        values = self._counters.snapshot()
        return {name: values[name] for name in _SUMMARY_COUNTERS}

    def _log_summary(self) -> None:
        """One INFO line for what happened since the last one; nothing when nothing happened."""
        now_s = self._monotonic_s()
        counted = self._counter_values()
        delta = {name: counted[name] - self._counted.get(name, 0) for name in counted}
        actions, elapsed_s = self._actions, now_s - self._since_s
        self._actions, self._counted, self._since_s = Counter(), counted, now_s
        if not actions and not any(delta.values()):
            return
        # Each counter counts when it happens, so near a summary's edge a part's reason and its pulse may split.
        said = []
        if delta.get("fired"):
            said.append(f"would have rejected {delta['fired']} parts ({delta['undecided_rejected']} of them undecided)")
        if delta.get("late"):
            said.append(f"{delta['late']} parts late (no verdict in time)")
        if delta.get("passed"):
            said.append(f"passed {delta['passed']}")
        if actions["pulses"]:
            said.append(f"ejector pulses {actions['pulses']}")
        verdicts = [
            (name.removeprefix("verdict_"), n) for name, n in sorted(actions.items()) if name.startswith("verdict_")
        ]
        if verdicts:
            said.append("verdicts written: " + ", ".join(f"{code} {n}" for code, n in verdicts))
        said.extend(
            f"{name.removesuffix('_on')} on {n} times" for name, n in sorted(actions.items()) if name.endswith("_on")
        )
        if not said:
            said.append("ejector pulses 0")
        log.info("reject dry-run, last %.0f s: %s", elapsed_s, "; ".join(said))
