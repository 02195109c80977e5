"""AlarmLatch: the reject station's active alarms and the stop-line output that follows them.

An alarm is recorded in the audit trail, counted, kept as active (by kind)
until its condition clears or the operator resets, and handed to `on_alarm`
(the runtime publishes it). With `stop_line`, the first alarm switches the
stop-line output on; it stays on until `reset()`, whatever clears meanwhile.
A failed output write becomes an ACTUATOR_ERROR alarm (`switch`).

DEADLINE_MISSED is a passing condition (a loaded host, a slow gateway): it
clears itself once `deadline_clear_after_parts` parts in a row were on time
(`deadline_missed` / `deadline_met`), so the station's status shows the
present, and the raise and the clear stay in the alarm history.
"""

from __future__ import annotations

import logging
import threading

from lineinspect.line.reject.actuator import Actuator, ActuatorError, Output
from lineinspect.line.reject.alarms import Alarm, AlarmKind, AlarmSink
from lineinspect.line.reject.audit import AuditEvent, AuditRecord, AuditTrail, RejectCounters
from lineinspect.line.reject.schedule import TrackedPart

log = logging.getLogger(__name__)


class AlarmLatch:
    """`announce` and `active` from any thread; everything that touches the actuator from the scheduler thread."""

    def __init__(
        self,
        actuator: Actuator,
        audit: AuditTrail,
        counters: RejectCounters,
        *,
        on_alarm: AlarmSink | None = None,
        stop_line: bool = False,
        deadline_clear_after_parts: int,
    ) -> None:
        self._actuator = actuator
        self._audit = audit
        self._counters = counters
        self._on_alarm = on_alarm
        self._stop_line = stop_line
        self._stop_line_on = False
        self._lock = threading.Lock()
        self._active: dict[AlarmKind, Alarm] = {}
        self._deadline_clear_after_parts = deadline_clear_after_parts
        self._on_time_in_row = 0  # parts on time since the last deadline_missed; scheduler thread only

    @property
    def active(self) -> list[Alarm]:
        with self._lock:
            return list(self._active.values())

    def alarm(
        self, kind: AlarmKind, message: str, *, part: TrackedPart | None = None, part_number: int | None = None
    ) -> None:
        """Scheduler thread: announce the alarm and latch the stop-line output on."""
        self.announce(kind, message, part=part, part_number=part_number)
        self.latch_stop_line()

    def deadline_missed(self, message: str, *, part: TrackedPart) -> None:
        """Scheduler thread: an actuation came too late for its part; the count of parts on time starts again."""
        self._on_time_in_row = 0
        self.alarm(AlarmKind.DEADLINE_MISSED, message, part=part)

    def deadline_met(self) -> None:
        """Scheduler thread: a part was decided and actuated in time; enough in a row clear DEADLINE_MISSED."""
        with self._lock:
            if AlarmKind.DEADLINE_MISSED not in self._active:
                return
        self._on_time_in_row += 1
        if self._on_time_in_row >= self._deadline_clear_after_parts:
            self._on_time_in_row = 0
            self.clear(
                AlarmKind.DEADLINE_MISSED,
                f"the last {self._deadline_clear_after_parts} parts were on time (reject.deadline_clear_after_parts)",
            )

    def clear(self, kind: AlarmKind, message: str) -> None:
        """The condition behind `kind` went away (bin emptied, air back); the stop line stays as it is."""
        self.announce(kind, message, active=False)

    def announce(
        self,
        kind: AlarmKind,
        message: str,
        *,
        part: TrackedPart | None = None,
        part_number: int | None = None,
        active: bool = True,
    ) -> None:
        """Any thread: keep (or drop) the alarm as active, record it and hand it to `on_alarm`; no output switched."""
        alarm = Alarm(
            kind,
            message,
            active=active,
            result_id=part.result_id if part else None,
            part_number=part.part_number if part else part_number,
        )
        with self._lock:
            if active:
                self._active[kind] = alarm
                self._counters.add("alarms")
            else:
                self._active.pop(kind, None)
        detail = f"{kind.value}: {message}"
        verdict = None if active else "cleared"
        if part is not None:
            record = part.audit_record(AuditEvent.ALARM, verdict=verdict, detail=detail)
        else:
            record = AuditRecord(AuditEvent.ALARM, None, part_number, verdict=verdict, detail=detail)
        self._audit.record(record)
        if self._on_alarm is not None:
            try:
                self._on_alarm(alarm)
            except Exception:  # a failing publisher must not stop the ejector
                log.exception("reject alarm callback failed")

    def latch_stop_line(self) -> None:
        """Scheduler thread: with `stop_line`, switch the stop-line output on once; it stays on until `reset()`."""
        if not self._stop_line or self._stop_line_on:
            return
        self._stop_line_on = True
        try:
            self._actuator.set_output(Output.STOP_LINE, True)
        except ActuatorError as exc:
            # Not routed through actuator_failed: that would raise another alarm about the same device.
            self._counters.add("errors")
            log.error("reject: stop-line output could not be switched: %s", exc)

    def reset(self, by: str = "the operator") -> None:
        """Scheduler thread: the operator's reset; clears every alarm and switches the stop-line output off.

        Each alarm it clears is announced (and audited) as cleared, "reset by <by>", so every view of the alarm
        table (status, MQTT) follows.
        """
        with self._lock:
            kinds = list(self._active)
        for kind in kinds:
            self.announce(kind, f"reset by {by}", active=False)
        if self._stop_line_on and self.switch(Output.STOP_LINE, False):
            self._stop_line_on = False

    def switch(self, output: Output, on: bool, *, part: TrackedPart | None = None) -> bool:
        """Scheduler thread: set an output; False (and an actuator alarm) when the device refuses."""
        try:
            self._actuator.set_output(output, on)
        except ActuatorError as exc:
            self.actuator_failed(exc, part=part)
            return False
        return True

    def actuator_failed(self, exc: ActuatorError, *, part: TrackedPart | None = None) -> None:
        self._counters.add("errors")
        log.error("reject actuator: %s", exc)
        self.alarm(AlarmKind.ACTUATOR_ERROR, str(exc), part=part)
