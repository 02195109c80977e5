"""InputWatch: the optional inputs the scheduler reads between its events.

- confirm sensor: after each pulse the sensor must see the part within
  `reject.inputs.confirm.window_ms`, else CONFIRM_MISSING (the part may still
  be on the line). Pulses are matched to sightings in order.
- bin full / air low: an alarm on the rising edge, a cleared alarm on the falling one.

Inputs are read every `poll_ms`, but never when an event is due sooner than
a read takes (twice the last read's time + 1 ms): a slow input read must not
delay a pulse.
"""

from __future__ import annotations

import time
from collections import deque

from lineinspect.line.reject.actuator import ActuatorError, InputStates
from lineinspect.line.reject.alarms import AlarmKind
from lineinspect.line.reject.audit import AuditEvent
from lineinspect.line.reject.context import TrackerContext
from lineinspect.line.reject.schedule import MS_NS, TrackedPart


class InputWatch:
    """Everything here runs on the scheduler thread."""

    def __init__(self, ctx: TrackerContext) -> None:
        self._ctx = ctx
        settings = ctx.settings.inputs
        self._confirm = settings.confirm
        self.enabled = settings.confirm is not None or settings.bin_full or settings.air_low
        self._poll_ns = int(settings.poll_ms * MS_NS)
        self._next_poll_ns = 0
        self._poll_cost_ns = 0  # how long the last read took
        self._states = InputStates()
        self._awaiting_confirm: deque[TrackedPart] = deque()

    def due_ns(self, now_ns: int) -> int | None:
        """When the next read is due (not before `now_ns`); None when no input is watched."""
        return max(self._next_poll_ns, now_ns) if self.enabled else None

    def poll_if_due(self) -> None:
        """Read the inputs if a read is due and fits before the next event."""
        if not self.enabled or time.monotonic_ns() < self._next_poll_ns:
            return
        next_event_ns = self._ctx.schedule.next_due_ns()
        now = time.monotonic_ns()
        # Never let a slow input read delay a pulse.
        if next_event_ns is None or next_event_ns - now > 2 * self._poll_cost_ns + MS_NS:
            self._read()
            self._poll_cost_ns = time.monotonic_ns() - now
        self._next_poll_ns = now + self._poll_ns

    def expect_confirm(self, part: TrackedPart) -> None:
        """At a pulse's start (`part.fired_ns`): the confirm sensor, where fitted, must now see the part."""
        confirm = self._confirm
        if confirm is None or part.fired_ns is None:
            return
        self._awaiting_confirm.append(part)
        self._ctx.schedule.at(part.fired_ns + int(confirm.window_ms * MS_NS), lambda _due_ns: self._window_ended(part))

    def _read(self) -> None:
        try:
            states = self._ctx.actuator.read_inputs()
        except ActuatorError as exc:
            self._ctx.alarms.actuator_failed(exc)
            return
        previous, self._states = self._states, states
        if states.confirm and self._awaiting_confirm:
            part = self._awaiting_confirm.popleft()
            part.confirmed = True
            now = time.monotonic_ns()
            error_ms = (now - (part.fired_ns or now)) / MS_NS
            self._ctx.audit.record(part.audit_record(AuditEvent.CONFIRM, actual_ns=now, error_ms=error_ms))
        for kind, now_on, before in (
            (AlarmKind.BIN_FULL, states.bin_full, previous.bin_full),
            (AlarmKind.AIR_LOW, states.air_low, previous.air_low),
        ):
            if now_on and not before:
                self._ctx.alarms.alarm(kind, f"{kind.value.replace('_', ' ')} ({self._ctx.actuator.describe})")
            elif before and not now_on:
                self._ctx.alarms.clear(kind, f"{kind.value.replace('_', ' ')} cleared")

    def _window_ended(self, part: TrackedPart) -> None:
        if part.confirmed:
            return
        if part in self._awaiting_confirm:
            self._awaiting_confirm.remove(part)
        self._ctx.counters.add("confirm_missing")
        assert self._confirm is not None
        self._ctx.alarms.alarm(
            AlarmKind.CONFIRM_MISSING,
            f"reject-confirm sensor did not see part {part.part_number} within "
            f"reject.inputs.confirm.window_ms {self._confirm.window_ms}: the part may still be on "
            "the line. Check the ejector, air and the confirm sensor",
            part=part,
        )
