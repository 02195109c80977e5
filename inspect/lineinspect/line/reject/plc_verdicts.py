"""PlcVerdicts (`mode: verdict_to_plc`): the PLC's shift register fires; this service writes verdicts.

A verdict is written (code + part number) as soon as it arrives; a part
without a verdict at trigger + `inspection_budget_ms` gets the undecided code
(pass when `reject_undecided` is false). A write after trigger +
`plc_deadline_ms` is counted as missed and raised as DEADLINE_MISSED: the PLC
may have decided without it. Enough writes in a row in time clear it (AlarmLatch).

Handshake (`handshake.enabled`): result-valid goes on after the verdict. With
an ack input mapped the scheduler then reads the ack every `ack_poll_ms` for
up to `ack_timeout_ms` (ACK_MISSING when it does not come) and switches
result-valid off; without one, result-valid is switched off just before the
next verdict, so every verdict gets a fresh edge.
"""

from __future__ import annotations

import time

from lineinspect.core.part import PartRef
from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import ActuatorError, Output, VerdictCode
from lineinspect.line.reject.alarms import AlarmKind
from lineinspect.line.reject.audit import AuditEvent
from lineinspect.line.reject.context import TrackerContext
from lineinspect.line.reject.schedule import MS_NS, TrackedPart


class PlcVerdicts:
    """`decision_due_ns` and `verdict_arrived` from any thread; the writes on the scheduler thread."""

    def __init__(self, ctx: TrackerContext) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._handshake = ctx.settings.handshake.enabled
        # With an ack mapped the scheduler waits for it; without one result-valid is re-armed before each verdict.
        self._ack_wait = self._handshake and "ack" in ctx.settings.backend.input_addresses()

    def decision_due_ns(self, ref: PartRef) -> int:
        """Trigger + inspection_budget_ms: a part still without a verdict then is written as undecided."""
        return ref.deadline_ns(self._settings.inspection_budget_ms)

    def acts_on(self, part: TrackedPart) -> bool:
        """At the budget only a part still without a verdict gets a write (the undecided code)."""
        return part.verdict is None

    def verdict_arrived(self, part: TrackedPart) -> None:
        self._ctx.schedule.at(time.monotonic_ns(), lambda due_ns: self.decide(part, due_ns))

    def decide(self, part: TrackedPart, due_ns: int) -> None:
        """Write the part's verdict (undecided without one); whichever of arrival and budget comes first."""
        if not self._ctx.settle(part, due_ns, late_because="no verdict by the inspection budget"):
            return
        verdict = part.verdict
        if verdict is None:
            verdict = Verdict.UNDECIDED if self._settings.reject_undecided else Verdict.PASS
        if verdict is Verdict.UNDECIDED:
            self._ctx.counters.add("undecided_rejected")
        code = VerdictCode.of(verdict)
        try:
            if self._handshake and not self._ack_wait:
                self._ctx.actuator.set_output(Output.RESULT_VALID, False)  # a fresh edge for every verdict
            self._ctx.actuator.write_verdict(code, part.part_number)
            actual = time.monotonic_ns()
            if self._handshake:
                self._ctx.actuator.set_output(Output.RESULT_VALID, True)
        except ActuatorError as exc:
            self._ctx.alarms.actuator_failed(exc, part=part)
            return
        self._ctx.counters.add("verdicts_written")
        plc_deadline_ms = self._settings.plc_deadline_ms or 0
        deadline_ns = part.ref.deadline_ns(plc_deadline_ms)
        late_ms = (actual - deadline_ns) / MS_NS
        self._ctx.audit.record(
            part.audit_record(
                AuditEvent.WRITE,
                verdict=verdict.value,
                scheduled_ns=deadline_ns,
                actual_ns=actual,
                error_ms=late_ms,
                detail=f"verdict code {int(code)}" + (" (late: undecided)" if part.verdict is None else ""),
            )
        )
        if actual <= deadline_ns:
            self._ctx.alarms.deadline_met()
        else:
            self._ctx.counters.add("missed")
            self._ctx.alarms.deadline_missed(
                f"verdict for part {part.part_number} written {late_ms:.1f} ms after "
                f"reject.plc_deadline_ms {plc_deadline_ms:g}; the PLC may have decided without it",
                part=part,
            )
        if self._ack_wait:
            self._await_ack(part)

    def stop(self) -> None:
        """Nothing is left switched on between verdicts that the scheduler must switch off."""

    def _await_ack(self, part: TrackedPart) -> None:
        handshake = self._settings.handshake
        start = time.monotonic_ns()
        deadline = start + int(handshake.ack_timeout_ms * MS_NS)
        acked = False
        try:
            while True:
                if self._ctx.actuator.read_inputs().ack:
                    acked = True
                    break
                if time.monotonic_ns() >= deadline:
                    break
                time.sleep(handshake.ack_poll_ms / 1000.0)
            self._ctx.actuator.set_output(Output.RESULT_VALID, False)
        except ActuatorError as exc:
            self._ctx.alarms.actuator_failed(exc, part=part)
            return
        now = time.monotonic_ns()
        if acked:
            self._ctx.audit.record(
                part.audit_record(AuditEvent.ACK, scheduled_ns=start, actual_ns=now, error_ms=(now - start) / MS_NS)
            )
            return
        self._ctx.counters.add("acks_missing")
        self._ctx.audit.record(
            part.audit_record(AuditEvent.MISS, scheduled_ns=deadline, actual_ns=now, detail="no ack")
        )
        self._ctx.alarms.alarm(
            AlarmKind.ACK_MISSING,
            f"PLC did not acknowledge the verdict of part {part.part_number} within "
            f"reject.handshake.ack_timeout_ms {handshake.ack_timeout_ms} ({self._ctx.actuator.describe})",
            part=part,
        )
