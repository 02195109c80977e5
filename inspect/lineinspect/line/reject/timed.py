"""TimedEjection (`mode: timed`): this service fires the ejector itself.

At trigger + `delay_ms` (or once the encoder has moved `encoder_counts`,
which the scheduler watches) the part is decided: fail → pulse; undecided →
pulse when `reject_undecided`; no verdict yet → the part is *late*: counted,
recorded and handled as undecided (fail-safe); pass → nothing.

A pulse keeps the ejector output on for `pulse_width_ms`. Two rejects closer
than that (possible only when parts come faster than the configured spacing)
*merge*: the output stays on until the later pulse's end, so both parts are
hit (`pulses_merged`). A pulse that starts later than half its width most
likely missed its part: counted as missed and raised as DEADLINE_MISSED. A
part decided within half a pulse width of its due time (pulsed or let pass)
is on time; enough of them in a row clear the alarm (AlarmLatch).
"""

from __future__ import annotations

import time

from lineinspect.core.part import PartRef
from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import Output
from lineinspect.line.reject.audit import AuditEvent
from lineinspect.line.reject.context import TrackerContext
from lineinspect.line.reject.inputs import InputWatch
from lineinspect.line.reject.schedule import MS_NS, TrackedPart


class TimedEjection:
    """`decision_due_ns` from any thread; the rest on the scheduler thread."""

    def __init__(self, ctx: TrackerContext, *, inputs: InputWatch) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._inputs = inputs
        self._width_ns = int(ctx.settings.pulse_width_ms * MS_NS)
        self._ejector_off_ns: int | None = None  # end of the running pulse; None: output off

    def decision_due_ns(self, ref: PartRef) -> int | None:
        """Trigger + delay_ms; None with `encoder_counts` (the scheduler decides when the belt has moved)."""
        if self._settings.encoder_counts is not None:
            return None
        assert self._settings.delay_ms is not None
        return ref.trigger_ns + int(self._settings.delay_ms * MS_NS)

    def acts_on(self, part: TrackedPart) -> bool:
        """Whether deciding the part may switch the ejector (so far: any part not known to pass)."""
        verdict = part.verdict
        return verdict is not Verdict.PASS and (verdict is not Verdict.UNDECIDED or self._settings.reject_undecided)

    def verdict_arrived(self, part: TrackedPart) -> None:
        """Nothing to do: the verdict is read when the part reaches the ejector."""

    def decide(self, part: TrackedPart, due_ns: int) -> None:
        """The part is at the ejector: pulse or let it pass."""
        if not self._ctx.settle(part, due_ns, late_because="no verdict at the ejector"):
            return
        verdict = part.verdict
        reject = verdict is Verdict.FAIL or (verdict is not Verdict.PASS and self._settings.reject_undecided)
        if not reject:
            if time.monotonic_ns() - due_ns <= self._width_ns // 2:
                self._ctx.alarms.deadline_met()
            self._ctx.counters.add("passed")
            self._ctx.audit.record(part.audit_record(AuditEvent.SKIP, scheduled_ns=due_ns))
            return
        if verdict is not Verdict.FAIL:
            self._ctx.counters.add("undecided_rejected")
        self._fire(part, due_ns)

    def stop(self) -> None:
        """The scheduler is stopping: a running pulse is switched off now, not left on."""
        if self._ejector_off_ns is not None:
            self._ctx.alarms.switch(Output.EJECTOR, False)

    def _fire(self, part: TrackedPart, due_ns: int) -> None:
        merged = self._ejector_off_ns is not None
        if merged:
            ok = True
            actual = time.monotonic_ns()
            self._ctx.counters.add("pulses_merged")
        else:
            ok = self._ctx.alarms.switch(Output.EJECTOR, True, part=part)
            actual = time.monotonic_ns()
        error_ms = (actual - due_ns) / MS_NS
        if not ok:
            self._ctx.counters.add("missed")
            self._ctx.audit.record(
                part.audit_record(AuditEvent.MISS, scheduled_ns=due_ns, actual_ns=actual, error_ms=error_ms)
            )
            return
        self._ctx.counters.add("fired")
        part.fired_ns = actual
        off_ns = actual + self._width_ns
        self._ejector_off_ns = max(self._ejector_off_ns or 0, off_ns)
        self._ctx.schedule.at(off_ns, lambda off_due_ns: self._pulse_ended(part, off_due_ns), on_time=_always)
        self._inputs.expect_confirm(part)
        self._ctx.audit.record(
            part.audit_record(
                AuditEvent.FIRE,
                scheduled_ns=due_ns,
                actual_ns=actual,
                error_ms=error_ms,
                detail="merged into the running pulse" if merged else "",
            )
        )
        # A start later than half a pulse means the ejector most likely missed the part.
        if error_ms <= self._settings.pulse_width_ms / 2:
            self._ctx.alarms.deadline_met()
        else:
            self._ctx.counters.add("missed")
            self._ctx.alarms.deadline_missed(
                f"ejector pulse for part {part.part_number} started {error_ms:.1f} ms late "
                f"(more than half of reject.pulse_width_ms {self._settings.pulse_width_ms:g}); the part may have "
                "passed the ejector. Check host load and actuator latency",
                part=part,
            )

    def _pulse_ended(self, part: TrackedPart, due_ns: int) -> None:
        # A merged pulse's own end comes before the running pulse's: the output stays on until the last one ends.
        if self._ejector_off_ns is None or due_ns < self._ejector_off_ns:
            return
        self._ctx.alarms.switch(Output.EJECTOR, False, part=part)
        self._ejector_off_ns = None
        self._ctx.audit.record(
            part.audit_record(AuditEvent.PULSE_END, scheduled_ns=due_ns, actual_ns=time.monotonic_ns())
        )


def _always() -> bool:
    return True
