"""RejectTracker: parts between camera and ejector, and the one thread that acts on them.

The runtime announces each part once, at its trigger (`part_entered(PartRef)`),
and attaches its verdict later (`verdict_ready`). One scheduler thread owns the
actuator and runs, in time order, what the mode scheduled:

- `timed` (TimedEjection, timed.py): decide at trigger + `delay_ms`, or when
  the encoder has moved `encoder_counts` (watched here); pulse, merge, confirm.
- `verdict_to_plc` (PlcVerdicts, plc_verdicts.py): write each verdict as it
  arrives, undecided at the inspection budget; result-valid / ack handshake.

Between events it reads the optional inputs (InputWatch, inputs.py); alarms and
the stop-line output are latched in AlarmLatch (latch.py) until `reset_alarms()`.

Timing: the thread waits on the schedule's condition until `fine_ms` before
the next event, then sleeps in 0.1 ms slices until it is due
(bench/bench_reject.py measures the start error against waiting alone).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from lineinspect.core.part import PartRef
from lineinspect.core.result import Verdict
from lineinspect.errors import ConfigError
from lineinspect.line.reject.actuator import Actuator, ActuatorError
from lineinspect.line.reject.alarms import Alarm, AlarmKind, AlarmSink
from lineinspect.line.reject.audit import AuditEvent, AuditRecord, AuditTrail, RejectCounters
from lineinspect.line.reject.context import TrackerContext
from lineinspect.line.reject.inputs import InputWatch
from lineinspect.line.reject.latch import AlarmLatch
from lineinspect.line.reject.plc_verdicts import PlcVerdicts
from lineinspect.line.reject.schedule import MS_NS, InFlight, Schedule, TrackedPart
from lineinspect.line.reject.settings import RejectMode, RejectSettings
from lineinspect.line.reject.timed import TimedEjection

log = logging.getLogger(__name__)

_FINE_SLICE_NS = 100_000  # 0.1 ms
_IDLE_WAIT_NS = 50 * MS_NS  # nothing scheduled: look again this often
_ENCODER_POLL_NS = MS_NS // 2  # how often the encoder is read while a part travels by counts


class ModeStrategy(Protocol):
    """What a mode decides; the tracker decides when (TimedEjection, PlcVerdicts)."""

    def decision_due_ns(self, ref: PartRef) -> int | None:
        """Any thread: when the part is to be decided (monotonic ns); None: once the encoder has moved far enough."""
        ...

    def verdict_arrived(self, part: TrackedPart) -> None:
        """Any thread: the part got its verdict before its decision."""
        ...

    def decide(self, part: TrackedPart, due_ns: int) -> None:
        """Scheduler thread: the part's decision is due (it may have been decided already)."""
        ...

    def stop(self) -> None:
        """Scheduler thread, on its way out: switch off what the mode left on."""
        ...


class RejectTracker:
    def __init__(
        self,
        settings: RejectSettings,
        actuator: Actuator,
        audit: AuditTrail,
        *,
        counters: RejectCounters | None = None,
        on_alarm: AlarmSink | None = None,
        encoder_position: Callable[[], int] | None = None,
        fine_ms: float = 1.0,
    ) -> None:
        """`encoder_position` reads the conveyor encoder (needed with `encoder_counts`); `fine_ms`: see the module."""
        settings.check_physics()
        if settings.encoder_counts is not None and encoder_position is None:
            raise ConfigError("reject.encoder_counts is set but the station has no encoder input to read")
        self.settings = settings
        self.actuator = actuator
        self.audit = audit
        self.counters = counters or RejectCounters()
        self._encoder_position = encoder_position
        self._fine_ns = int(fine_ms * MS_NS)
        self._schedule = Schedule()
        self._parts = InFlight(capacity=settings.max_parts_in_flight)
        self._encoder_waiting: deque[TrackedPart] = deque()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._alarms = AlarmLatch(
            actuator,
            audit,
            self.counters,
            on_alarm=on_alarm,
            stop_line=settings.stop_line,
            deadline_clear_after_parts=settings.deadline_clear_after_parts,
        )
        ctx = TrackerContext(settings, actuator, self._schedule, self._parts, self._alarms, audit, self.counters)
        self._inputs = InputWatch(ctx)
        self._mode: ModeStrategy = (
            TimedEjection(ctx, inputs=self._inputs) if settings.mode is RejectMode.TIMED else PlcVerdicts(ctx)
        )

    # --- called by the runtime (any thread) --------------------------------------------------------
    def start(self) -> None:
        """Refuse to start when the actuator cannot be reached; then run the scheduler thread."""
        try:
            self.actuator.check_reachable()
        except ActuatorError:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="reject-scheduler", daemon=True)
        self._thread.start()

    def part_entered(self, part: PartRef) -> None:
        """A part passed the camera trigger; it is tracked as part number `part.trigger_id`."""
        due_ns = self._mode.decision_due_ns(part)
        if due_ns is None and part.encoder_count is None:
            raise ValueError("reject.encoder_counts is set: part_entered() needs a PartRef with its encoder_count")
        tracked = TrackedPart(part)
        self.counters.add("parts_tracked")
        if not self._parts.add(tracked):
            limit = self.settings.max_parts_in_flight
            self._alarms.announce(
                AlarmKind.TRACKING_OVERFLOW,
                f"more than {limit} parts between camera and ejector (reject.max_parts_in_flight); "
                f"part {part.trigger_id} is not tracked and will not be rejected. Check the trigger rate",
                part_number=part.trigger_id,
            )
            # The stop-line output is switched by the thread that owns the actuator.
            self._schedule.at(time.monotonic_ns(), lambda _due_ns: self._alarms.latch_stop_line())
            return
        if due_ns is None:
            with self._schedule.cond:
                self._encoder_waiting.append(tracked)
                self._schedule.cond.notify()
        else:
            self._schedule.at(due_ns, lambda due: self._mode.decide(tracked, due))

    def verdict_ready(self, part_number: int, result_id: str, verdict: Verdict) -> None:
        """Attach the inspection's verdict to a tracked part."""
        part = self._parts.attach(part_number, result_id, verdict)
        if part is not None:
            self._mode.verdict_arrived(part)
            return
        self.counters.add("late_verdicts")
        known = self._parts.was_decided(part_number)
        self.audit.record(
            AuditRecord(
                AuditEvent.LATE_VERDICT,
                result_id=result_id,
                part_number=part_number,
                verdict=verdict.value,
                detail="part already decided as undecided (verdict too late)" if known else "unknown part number",
            )
        )

    def reset_alarms(self, by: str = "the operator") -> list[str]:
        """Operator reset: clears latched alarms and switches the stop-line output off (on the scheduler thread,
        at once). Returns the kinds active when asked; each is recorded and announced as "reset by <by>". A
        condition still there (the device still down) raises its alarm again with its next failure."""
        kinds = [alarm.kind.value for alarm in self._alarms.active]
        self._schedule.at(time.monotonic_ns(), lambda _due_ns: self._alarms.reset(by))
        return kinds

    @property
    def active_alarms(self) -> list[Alarm]:
        return self._alarms.active

    def close(self) -> None:
        """Stop the thread (switching a running pulse off), close the actuator and the audit trail."""
        with self._schedule.cond:
            self._stop = True
            self._schedule.cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.actuator.close()
        self.audit.close()

    # --- scheduler thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        priority = self.settings.scheduler_priority
        if priority is not None:
            try:
                # pid 0 = this thread on Linux: only the scheduler gets real-time priority.
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            except (OSError, AttributeError) as exc:
                log.warning(
                    "reject.scheduler_priority %s not applied (%s); give the service CAP_SYS_NICE or set it to null",
                    priority,
                    exc,
                )
        try:
            while self._wait_for_due():
                self._process_due()
        finally:
            self._mode.stop()

    def _wait_for_due(self) -> bool:
        """Wait until the next event (or encoder / input read) is due; False when stopping."""
        cond = self._schedule.cond
        while True:
            with cond:
                if self._stop:
                    return False
                now = time.monotonic_ns()
                due = self._schedule.next_due_ns()
                if due is None:
                    due = now + _IDLE_WAIT_NS
                if self._encoder_waiting:
                    due = min(due, now + _ENCODER_POLL_NS)
                poll_ns = self._inputs.due_ns(now)
                if poll_ns is not None:
                    due = min(due, poll_ns)
                wait_ns = due - now - self._fine_ns
                if wait_ns > 0:
                    cond.wait(wait_ns / 1e9)
                    continue  # re-evaluate: a new event may be due sooner
            # The last ~fine_ms in short sleeps: Condition.wait overshoots by a few hundred µs under load,
            # and a busy spin would hold the GIL and a core that the network stack and other threads need.
            while (left_ns := due - time.monotonic_ns()) > 0:
                time.sleep(min(left_ns, _FINE_SLICE_NS) / 1e9)
            return True

    def _process_due(self) -> None:
        now = time.monotonic_ns()
        while (item := self._schedule.pop_due(now)) is not None:
            due_ns, action = item
            action(due_ns)
        self._check_encoder()
        self._inputs.poll_if_due()

    def _check_encoder(self) -> None:
        """Decide every part whose encoder count is `encoder_counts` behind the belt's position, in order."""
        if not self._encoder_waiting or self._encoder_position is None:
            return
        position = self._encoder_position()
        counts = self.settings.encoder_counts
        assert counts is not None
        while self._encoder_waiting:
            part = self._encoder_waiting[0]
            assert part.ref.encoder_count is not None
            if position - part.ref.encoder_count < counts:
                break
            self._encoder_waiting.popleft()
            self._mode.decide(part, time.monotonic_ns())


def reset_message(kinds: list[str]) -> str:
    """The answer to an operator's reset (`reset_alarms`), over HTTP and MQTT alike."""
    if not kinds:
        return "no reject alarm was active; the stop-line output is off"
    return f"reset {len(kinds)} reject alarm(s): {', '.join(kinds)}; the stop-line output is off"
