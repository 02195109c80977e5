"""TrackerContext: the one of each that the reject tracker's pieces share and act through.

The tracker makes one; TimedEjection, PlcVerdicts and InputWatch get it, so
all of them schedule on the same heap, settle parts in the same registry,
switch the same actuator and raise alarms into the same latch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lineinspect.line.reject.actuator import Actuator
from lineinspect.line.reject.audit import AuditEvent, AuditTrail, RejectCounters
from lineinspect.line.reject.latch import AlarmLatch
from lineinspect.line.reject.schedule import InFlight, Schedule, TrackedPart
from lineinspect.line.reject.settings import RejectSettings


@dataclass(frozen=True, slots=True)
class TrackerContext:
    settings: RejectSettings
    actuator: Actuator  # switched only from the scheduler thread
    schedule: Schedule
    parts: InFlight
    alarms: AlarmLatch
    audit: AuditTrail
    counters: RejectCounters

    def settle(self, part: TrackedPart, due_ns: int, *, late_because: str) -> bool:
        """Decide the part now; False when it was decided already.

        A part still without a verdict is *late*: counted and recorded (`late_because` says where it was due),
        and the mode handles it as undecided.
        """
        if not self.parts.settle(part):
            return False
        if part.verdict is None:
            self.counters.add("late")
            self.audit.record(part.audit_record(AuditEvent.LATE, scheduled_ns=due_ns, detail=late_because))
        return True
