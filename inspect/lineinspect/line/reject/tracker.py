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

Timing (bench/bench_reject.py measures it at a Modbus server, with and
without inspection threads in the process): the thread waits on the
schedule's condition until 1 ms + spin before the next event, sleeps in
0.1 ms slices until spin before it, then spins until it is due (only for an
event that may switch an output: a pulse, its end, a part not known to pass). What made
pulses late was not the clock but two waits after each wake-up:
- the GIL: a woken thread waits up to one GIL switch interval
  (sys.getswitchinterval(), 5 ms) for an inspection thread to hand it over.
  The spin (`scheduler_spin_ms`, default: one switch interval) takes the GIL
  one interval early and keeps it: no other thread can force it away sooner
  than an interval after it was taken, so the due time falls inside the hold;
- the CPU: with every core busy, a woken normal-priority thread waits for a
  time slice (we saw 3-6 ms), and a spinning one is preempted holding the GIL.
  `scheduler_priority` (SCHED_FIFO 50 by default) removes both; without it
  the default spin is 0.
`scheduler_priority` and `scheduler_cpus` (affinity) apply to this one thread.
"""

from __future__ import annotations

import logging
import os
import sys
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
_SLEEP_PHASE_NS = MS_NS  # sleep in slices this long before the spin: Condition.wait overshoots by a few 100 µs
_IDLE_WAIT_NS = 50 * MS_NS  # nothing scheduled: look again this often
_ENCODER_POLL_NS = MS_NS // 2  # how often the encoder is read while a part travels by counts


class ModeStrategy(Protocol):
    """What a mode decides; the tracker decides when (TimedEjection, PlcVerdicts)."""

    def decision_due_ns(self, ref: PartRef) -> int | None:
        """Any thread: when the part is to be decided (monotonic ns); None: once the encoder has moved far enough."""
        ...

    def acts_on(self, part: TrackedPart) -> bool:
        """Scheduler thread, shortly before the decision: may deciding it switch an output (then it is timed)?"""
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
    ) -> None:
        """`encoder_position` reads the conveyor encoder (needed with `encoder_counts`)."""
        settings.check_physics()
        if settings.encoder_counts is not None and encoder_position is None:
            raise ConfigError("reject.encoder_counts is set but the station has no encoder input to read")
        self.settings = settings
        self.actuator = actuator
        self.audit = audit
        self.counters = counters or RejectCounters()
        self._encoder_position = encoder_position
        self._spin_ns = 0  # set by the thread when it starts: it follows the switch interval at that time
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
            self._schedule.at(
                due_ns, lambda due: self._mode.decide(tracked, due), on_time=lambda: self._mode.acts_on(tracked)
            )

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
        realtime = self._tune_thread()
        self._spin_ns = spin_ns_for(
            self.settings.scheduler_spin_ms, realtime=realtime, switch_interval_s=sys.getswitchinterval()
        )
        try:
            while self._wait_for_due():
                self._process_due()
        finally:
            self._mode.stop()

    def _tune_thread(self) -> bool:
        """Real-time priority and CPU pin for this thread only (pid 0 = the calling thread on Linux).

        True when the thread runs with SCHED_FIFO.
        """
        realtime = False
        priority = self.settings.scheduler_priority
        if priority is not None:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
                realtime = True
            except (OSError, AttributeError) as exc:
                log.warning(
                    "reject.scheduler_priority %s not applied (%s): ejector pulses may start several ms late while "
                    "inspection keeps the cores busy. Give the service CAP_SYS_NICE (systemd: "
                    "AmbientCapabilities=CAP_SYS_NICE; docker: --cap-add SYS_NICE) or set it to null",
                    priority,
                    exc,
                )
        cpus = self.settings.scheduler_cpus
        if cpus is not None:
            try:
                os.sched_setaffinity(0, cpus)
            except (OSError, AttributeError, ValueError) as exc:
                allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "unknown"
                log.warning(
                    "reject.scheduler_cpus %s not applied (%s); this process may run on CPUs %s",
                    cpus,
                    exc,
                    allowed,
                )
        return realtime

    def _wait_for_due(self) -> bool:
        """Wait until the next event (or encoder / input read) is due; False when stopping."""
        cond = self._schedule.cond
        while True:
            with cond:
                if self._stop:
                    return False
                now = time.monotonic_ns()
                head = self._schedule.next_on_time()
                due, on_time = head if head is not None else (now + _IDLE_WAIT_NS, False)
                others = [now + _ENCODER_POLL_NS] if self._encoder_waiting else []
                poll_ns = self._inputs.due_ns(now)
                if poll_ns is not None:
                    others.append(poll_ns)
                if others and min(others) < due:
                    due, on_time = min(others), False  # a read: a little late does no harm
                spin_ns = self._spin_ns if on_time else 0
                wait_ns = due - now - _SLEEP_PHASE_NS - spin_ns
                if wait_ns > 0:
                    cond.wait(wait_ns / 1e9)
                    continue  # re-evaluate: a new event may be due sooner
            close_in(due, spin_ns=spin_ns)
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


def spin_ns_for(spin_ms: float | None, *, realtime: bool, switch_interval_s: float) -> int:
    """`reject.scheduler_spin_ms` in ns. None: one GIL switch interval for a SCHED_FIFO thread (the GIL is then
    held across the due time), 0 for a normal one (the kernel would preempt it mid-spin, GIL and all)."""
    if spin_ms is not None:
        return int(spin_ms * MS_NS)
    return int(switch_interval_s * 1e9) if realtime else 0


def close_in(due_ns: int, *, spin_ns: int) -> None:
    """Return at `due_ns` (monotonic), never before: short sleeps until `spin_ns` before it, then a spin.

    The sleeps let other threads run; each ends by taking the GIL back, which can take up to one switch
    interval. The spin then keeps the GIL (and the core): a waiting thread forces it away no sooner than one
    interval after it was taken, so with `spin_ns` of one interval the GIL is still held at `due_ns`.
    """
    while (left_ns := due_ns - spin_ns - time.monotonic_ns()) > 0:
        time.sleep(min(left_ns, _FINE_SLICE_NS) / 1e9)
    while time.monotonic_ns() < due_ns:
        pass


def reset_message(kinds: list[str]) -> str:
    """The answer to an operator's reset (`reset_alarms`), over HTTP and MQTT alike."""
    if not kinds:
        return "no reject alarm was active; the stop-line output is off"
    return f"reset {len(kinds)} reject alarm(s): {', '.join(kinds)}; the stop-line output is off"
