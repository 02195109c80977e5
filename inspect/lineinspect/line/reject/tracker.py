"""RejectTracker: parts between camera and ejector, and the one thread that acts on them.

Each trigger queues a part (`part_entered`); its verdict is attached later
(`verdict_ready`). One scheduler thread owns the actuator and does, in time order:

- timed mode: at trigger + `delay_ms` (or when the encoder has moved
  `encoder_counts`) it decides. fail → pulse; undecided → pulse when
  `reject_undecided`; no verdict yet → the part is *late*: counted, recorded,
  and handled as undecided (fail-safe). pass → nothing.
- verdict_to_plc mode: a verdict is written as soon as it arrives; a part
  without a verdict at trigger + `inspection_budget_ms` gets the undecided
  code. Optional handshake: result-valid on, wait for the PLC's ack, off.

Timing: the thread waits on a condition until `fine_ms` before the next
event, then sleeps in 0.1 ms slices until it is due (bench/bench_reject.py
measures the start error against waiting alone).

Overlapping pulses (two rejects closer than `pulse_width_ms`, possible only
when parts come faster than the configured spacing): the pulses *merge* — the
output stays on until the later pulse's end, so both parts are hit. Counted in
`pulses_merged`.

Inputs are polled between events (never when an event is due sooner than a
poll takes). Alarms go to `on_alarm`; with `stop_line` the stop-line output is
switched on at the first alarm and stays on until `reset_alarms()`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from lineinspect.core.recipe import Verdict
from lineinspect.errors import ConfigError
from lineinspect.line.reject.actuator import Actuator, ActuatorError, InputStates, Output, VerdictCode
from lineinspect.line.reject.alarms import Alarm, AlarmKind, AlarmSink
from lineinspect.line.reject.audit import AuditEvent, AuditRecord, AuditTrail, RejectCounters
from lineinspect.line.reject.settings import RejectMode, RejectSettings

log = logging.getLogger(__name__)

_MS = 1_000_000
_FINE_SLICE_NS = 100_000  # 0.1 ms


class _Step(Enum):
    DECIDE = 1  # timed: fire or skip; verdict_to_plc: write undecided if no verdict yet
    WRITE = 2  # verdict_to_plc: verdict arrived
    PULSE_OFF = 3
    CONFIRM_END = 4
    RESET_ALARMS = 5


@dataclass(slots=True)
class TrackedPart:
    part_number: int
    trigger_ns: int
    encoder_count: int | None
    part_id: str | None
    result_id: str | None = None
    verdict: Verdict | None = None
    decided: bool = False
    fired_ns: int | None = None
    confirmed: bool = False


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
        settings.check_physics()
        if settings.encoder_counts is not None and encoder_position is None:
            raise ConfigError("reject.encoder_counts is set but the station has no encoder input to read")
        self.settings = settings
        self.actuator = actuator
        self.audit = audit
        self.counters = counters or RejectCounters()
        self._on_alarm = on_alarm
        self._encoder_position = encoder_position
        self._fine_ns = int(fine_ms * _MS)
        self._cond = threading.Condition()
        self._events: list[tuple[int, int, _Step, TrackedPart | None]] = []
        self._seq = itertools.count()
        self._parts: dict[int, TrackedPart] = {}
        self._encoder_waiting: deque[TrackedPart] = deque()
        self._awaiting_confirm: deque[TrackedPart] = deque()
        self._recently_decided: deque[int] = deque(maxlen=4 * settings.max_parts_in_flight)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._ejector_off_ns: int | None = None  # end of the running pulse; None: output off
        self._stop_line_on = False
        self._inputs = InputStates()
        self._active: dict[AlarmKind, Alarm] = {}
        self._poll_ns = int(settings.inputs.poll_ms * _MS)
        self._next_poll_ns = 0
        self._poll_cost_ns = 0
        inputs = settings.inputs
        self._watch_inputs = inputs.confirm is not None or inputs.bin_full or inputs.air_low
        self._ack_wait = settings.handshake.enabled and _ack_mapped(settings)

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

    def part_entered(
        self,
        part_number: int,
        *,
        trigger_ns: int | None = None,
        encoder_count: int | None = None,
        part_id: str | None = None,
    ) -> None:
        """A part passed the camera trigger (trigger_ns from time.monotonic_ns())."""
        trigger_ns = time.monotonic_ns() if trigger_ns is None else trigger_ns
        part = TrackedPart(part_number, trigger_ns, encoder_count, part_id)
        s = self.settings
        with self._cond:
            self.counters.add("parts_tracked")
            if len(self._parts) >= s.max_parts_in_flight:
                overflow = True
            else:
                overflow = False
                self._parts[part_number] = part
                if s.mode is RejectMode.VERDICT_TO_PLC:
                    self._push(trigger_ns + int(s.inspection_budget_ms * _MS), _Step.DECIDE, part)
                elif s.encoder_counts is not None:
                    if encoder_count is None:
                        raise ValueError("reject.encoder_counts is set: part_entered() needs the encoder_count")
                    self._encoder_waiting.append(part)
                    self._cond.notify()
                else:
                    assert s.delay_ms is not None
                    self._push(trigger_ns + int(s.delay_ms * _MS), _Step.DECIDE, part)
        if overflow:
            self._alarm(
                AlarmKind.TRACKING_OVERFLOW,
                f"more than {s.max_parts_in_flight} parts between camera and ejector (reject.max_parts_in_flight); "
                f"part {part_number} is not tracked and will not be rejected. Check the trigger rate",
                part_number=part_number,
            )

    def verdict_ready(self, part_number: int, result_id: str, verdict: Verdict) -> None:
        """Attach the inspection's verdict to a tracked part."""
        with self._cond:
            part = self._parts.get(part_number)
            if part is not None and not part.decided:
                part.result_id = result_id
                part.verdict = verdict
                if self.settings.mode is RejectMode.VERDICT_TO_PLC:
                    self._push(time.monotonic_ns(), _Step.WRITE, part)
                return
        known = part is not None or part_number in self._recently_decided
        self.counters.add("late_verdicts")
        self._record(
            AuditEvent.LATE_VERDICT,
            result_id=result_id,
            part_number=part_number,
            verdict=verdict.value,
            detail="part already decided as undecided (verdict too late)" if known else "unknown part number",
        )

    def reset_alarms(self) -> None:
        """Operator reset: clears latched alarms and switches the stop-line output off."""
        with self._cond:
            self._push(time.monotonic_ns(), _Step.RESET_ALARMS, None)

    @property
    def active_alarms(self) -> list[Alarm]:
        with self._cond:
            return list(self._active.values())

    def close(self) -> None:
        """Stop the thread (switching a running pulse off), close the actuator and the audit trail."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.actuator.close()
        self.audit.close()

    # --- scheduler thread ----------------------------------------------------------------------------
    def _push(self, due_ns: int, step: _Step, part: TrackedPart | None) -> None:
        """Caller holds self._cond."""
        heapq.heappush(self._events, (due_ns, next(self._seq), step, part))
        self._cond.notify()

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
            while True:
                due = self._next_due()
                if due is None:
                    break
                self._process_due()
        finally:
            if self._ejector_off_ns is not None:
                self._switch(Output.EJECTOR, False, None)

    def _next_due(self) -> int | None:
        """Wait until the next event is due (or input/encoder polling is); None when stopping."""
        while True:
            with self._cond:
                if self._stop:
                    return None
                now = time.monotonic_ns()
                due = self._events[0][0] if self._events else now + 50 * _MS
                if self._encoder_waiting:
                    due = min(due, now + _MS // 2)
                if self._watch_inputs:
                    due = min(due, max(self._next_poll_ns, now))
                wait_ns = due - now - self._fine_ns
                if wait_ns > 0:
                    self._cond.wait(wait_ns / 1e9)
                    continue  # re-evaluate: a new event may be due sooner
            # The last ~fine_ms in short sleeps: Condition.wait overshoots by a few hundred µs under load,
            # and a busy spin would hold the GIL and a core that the network stack and other threads need.
            while (left_ns := due - time.monotonic_ns()) > 0:
                time.sleep(min(left_ns, _FINE_SLICE_NS) / 1e9)
            return due

    def _process_due(self) -> None:
        now = time.monotonic_ns()
        while True:
            with self._cond:
                if not self._events or self._events[0][0] > now:
                    break
                due_ns, _, step, part = heapq.heappop(self._events)
            self._do(step, part, due_ns)
        self._check_encoder()
        if self._watch_inputs and time.monotonic_ns() >= self._next_poll_ns:
            with self._cond:
                next_event = self._events[0][0] if self._events else None
            now = time.monotonic_ns()
            # Never let a slow input read delay a pulse.
            if next_event is None or next_event - now > 2 * self._poll_cost_ns + _MS:
                self._poll_inputs()
                self._poll_cost_ns = time.monotonic_ns() - now
            self._next_poll_ns = now + self._poll_ns

    def _check_encoder(self) -> None:
        if not self._encoder_waiting or self._encoder_position is None:
            return
        position = self._encoder_position()
        assert self.settings.encoder_counts is not None
        while self._encoder_waiting:
            part = self._encoder_waiting[0]
            assert part.encoder_count is not None
            if position - part.encoder_count < self.settings.encoder_counts:
                break
            self._encoder_waiting.popleft()
            self._do(_Step.DECIDE, part, time.monotonic_ns())

    def _do(self, step: _Step, part: TrackedPart | None, due_ns: int) -> None:
        if step is _Step.PULSE_OFF:
            if self._ejector_off_ns is not None and due_ns >= self._ejector_off_ns:
                self._switch(Output.EJECTOR, False, part)
                self._ejector_off_ns = None
                self._record(AuditEvent.PULSE_END, part=part, scheduled_ns=due_ns, actual_ns=time.monotonic_ns())
            return
        if step is _Step.RESET_ALARMS:
            self._reset()
            return
        assert part is not None
        if step is _Step.CONFIRM_END:
            self._confirm_end(part)
            return
        if self.settings.mode is RejectMode.TIMED:
            self._decide_timed(part, due_ns)
        else:
            self._write_verdict(part, due_ns, late=step is _Step.DECIDE)

    # timed mode
    def _decide_timed(self, part: TrackedPart, due_ns: int) -> None:
        with self._cond:
            part.decided = True
            verdict = part.verdict
            self._parts.pop(part.part_number, None)
            self._recently_decided.append(part.part_number)
        if verdict is None:
            self.counters.add("late")
            self._record(AuditEvent.LATE, part=part, scheduled_ns=due_ns, detail="no verdict at the ejector")
        reject = verdict is Verdict.FAIL or (verdict is not Verdict.PASS and self.settings.reject_undecided)
        if not reject:
            self.counters.add("passed")
            self._record(AuditEvent.SKIP, part=part, scheduled_ns=due_ns)
            return
        if verdict is not Verdict.FAIL:
            self.counters.add("undecided_rejected")
        self._fire(part, due_ns)

    def _fire(self, part: TrackedPart, due_ns: int) -> None:
        width_ns = int(self.settings.pulse_width_ms * _MS)
        merged = self._ejector_off_ns is not None
        if merged:
            actual = time.monotonic_ns()
            ok = True
            self.counters.add("pulses_merged")
        else:
            ok = self._switch(Output.EJECTOR, True, part)
            actual = time.monotonic_ns()
        error_ms = (actual - due_ns) / _MS
        if not ok:
            self.counters.add("missed")
            self._record(AuditEvent.MISS, part=part, scheduled_ns=due_ns, actual_ns=actual, error_ms=error_ms)
            return
        self.counters.add("fired")
        part.fired_ns = actual
        off_ns = actual + width_ns
        self._ejector_off_ns = max(self._ejector_off_ns or 0, off_ns)
        with self._cond:
            self._push(off_ns, _Step.PULSE_OFF, part)
            if self.settings.inputs.confirm is not None:
                self._awaiting_confirm.append(part)
                self._push(actual + int(self.settings.inputs.confirm.window_ms * _MS), _Step.CONFIRM_END, part)
        detail = "merged into the running pulse" if merged else ""
        self._record(
            AuditEvent.FIRE, part=part, scheduled_ns=due_ns, actual_ns=actual, error_ms=error_ms, detail=detail
        )
        # A start later than half a pulse means the ejector most likely missed the part.
        if error_ms > self.settings.pulse_width_ms / 2:
            self.counters.add("missed")
            self._alarm(
                AlarmKind.DEADLINE_MISSED,
                f"ejector pulse for part {part.part_number} started {error_ms:.1f} ms late "
                f"(more than half of reject.pulse_width_ms {self.settings.pulse_width_ms:g}); the part may have "
                "passed the ejector. Check host load and actuator latency",
                part=part,
            )

    # verdict_to_plc mode
    def _write_verdict(self, part: TrackedPart, due_ns: int, *, late: bool) -> None:
        with self._cond:
            if part.decided:
                return
            part.decided = True
            verdict = part.verdict
            self._parts.pop(part.part_number, None)
            self._recently_decided.append(part.part_number)
        if verdict is None:
            self.counters.add("late")
            self._record(AuditEvent.LATE, part=part, scheduled_ns=due_ns, detail="no verdict by the inspection budget")
            verdict = Verdict.UNDECIDED if self.settings.reject_undecided else Verdict.PASS
        if verdict is Verdict.UNDECIDED:
            self.counters.add("undecided_rejected")
        code = VerdictCode.of(verdict)
        s = self.settings
        try:
            if s.handshake.enabled and not self._ack_wait:
                self.actuator.set_output(Output.RESULT_VALID, False)  # a fresh edge for every verdict
            self.actuator.write_verdict(code, part.part_number)
            actual = time.monotonic_ns()
            if s.handshake.enabled:
                self.actuator.set_output(Output.RESULT_VALID, True)
        except ActuatorError as exc:
            self._actuator_failed(exc, part)
            return
        self.counters.add("verdicts_written")
        deadline_ns = part.trigger_ns + int((s.plc_deadline_ms or 0) * _MS)
        self._record(
            AuditEvent.WRITE,
            part=part,
            verdict=verdict.value,
            scheduled_ns=deadline_ns,
            actual_ns=actual,
            error_ms=(actual - deadline_ns) / _MS,
            detail=f"verdict code {int(code)}" + (" (late: undecided)" if late and part.verdict is None else ""),
        )
        if actual > deadline_ns:
            self.counters.add("missed")
            self._alarm(
                AlarmKind.DEADLINE_MISSED,
                f"verdict for part {part.part_number} written {(actual - deadline_ns) / _MS:.1f} ms after "
                f"reject.plc_deadline_ms {s.plc_deadline_ms:g}; the PLC may have decided without it",
                part=part,
            )
        if self._ack_wait:
            self._await_ack(part)

    def _await_ack(self, part: TrackedPart) -> None:
        hs = self.settings.handshake
        start = time.monotonic_ns()
        deadline = start + int(hs.ack_timeout_ms * _MS)
        acked = False
        try:
            while True:
                if self.actuator.read_inputs().ack:
                    acked = True
                    break
                if time.monotonic_ns() >= deadline:
                    break
                time.sleep(hs.ack_poll_ms / 1000.0)
            self.actuator.set_output(Output.RESULT_VALID, False)
        except ActuatorError as exc:
            self._actuator_failed(exc, part)
            return
        now = time.monotonic_ns()
        if acked:
            self._record(AuditEvent.ACK, part=part, scheduled_ns=start, actual_ns=now, error_ms=(now - start) / _MS)
            return
        self.counters.add("acks_missing")
        self._record(AuditEvent.MISS, part=part, scheduled_ns=deadline, actual_ns=now, detail="no ack")
        self._alarm(
            AlarmKind.ACK_MISSING,
            f"PLC did not acknowledge the verdict of part {part.part_number} within "
            f"reject.handshake.ack_timeout_ms {hs.ack_timeout_ms} ({self.actuator.describe})",
            part=part,
        )

    # inputs and alarms
    def _poll_inputs(self) -> None:
        try:
            states = self.actuator.read_inputs()
        except ActuatorError as exc:
            self._actuator_failed(exc, None)
            return
        previous, self._inputs = self._inputs, states
        if states.confirm and self._awaiting_confirm:
            part = self._awaiting_confirm.popleft()
            part.confirmed = True
            now = time.monotonic_ns()
            self._record(AuditEvent.CONFIRM, part=part, actual_ns=now, error_ms=(now - (part.fired_ns or now)) / _MS)
        for kind, now_on, before in (
            (AlarmKind.BIN_FULL, states.bin_full, previous.bin_full),
            (AlarmKind.AIR_LOW, states.air_low, previous.air_low),
        ):
            if now_on and not before:
                self._alarm(kind, f"{kind.value.replace('_', ' ')} ({self.actuator.describe})")
            elif before and not now_on:
                self._alarm(kind, f"{kind.value.replace('_', ' ')} cleared", active=False)

    def _confirm_end(self, part: TrackedPart) -> None:
        if part.confirmed:
            return
        if part in self._awaiting_confirm:
            self._awaiting_confirm.remove(part)
        self.counters.add("confirm_missing")
        assert self.settings.inputs.confirm is not None
        self._alarm(
            AlarmKind.CONFIRM_MISSING,
            f"reject-confirm sensor did not see part {part.part_number} within "
            f"reject.inputs.confirm.window_ms {self.settings.inputs.confirm.window_ms}: the part may still be on "
            "the line. Check the ejector, air and the confirm sensor",
            part=part,
        )

    def _switch(self, output: Output, on: bool, part: TrackedPart | None) -> bool:
        try:
            self.actuator.set_output(output, on)
        except ActuatorError as exc:
            self._actuator_failed(exc, part)
            return False
        return True

    def _actuator_failed(self, exc: ActuatorError, part: TrackedPart | None) -> None:
        self.counters.add("errors")
        log.error("reject actuator: %s", exc)
        self._alarm(AlarmKind.ACTUATOR_ERROR, str(exc), part=part)

    def _alarm(
        self,
        kind: AlarmKind,
        message: str,
        *,
        part: TrackedPart | None = None,
        active: bool = True,
        part_number: int | None = None,
    ) -> None:
        alarm = Alarm(
            kind,
            message,
            active=active,
            result_id=part.result_id if part else None,
            part_number=part.part_number if part else part_number,
        )
        with self._cond:
            if active:
                self._active[kind] = alarm
                self.counters.add("alarms")
            else:
                self._active.pop(kind, None)
        self._record(
            AuditEvent.ALARM,
            part=part,
            part_number=alarm.part_number,
            detail=f"{kind.value}: {message}",
            verdict=None if active else "cleared",
        )
        if self._on_alarm is not None:
            try:
                self._on_alarm(alarm)
            except Exception:  # a failing publisher must not stop the ejector
                log.exception("reject alarm callback failed")
        if active and self.settings.stop_line and not self._stop_line_on:
            self._stop_line_on = True
            try:
                self.actuator.set_output(Output.STOP_LINE, True)
            except ActuatorError as exc:
                # Not routed through _actuator_failed: that would raise another alarm about the same device.
                self.counters.add("errors")
                log.error("reject: stop-line output could not be switched: %s", exc)

    def _reset(self) -> None:
        with self._cond:
            self._active.clear()
        if self._stop_line_on and self._switch(Output.STOP_LINE, False, None):
            self._stop_line_on = False

    def _record(
        self,
        event: AuditEvent,
        *,
        part: TrackedPart | None = None,
        result_id: str | None = None,
        part_number: int | None = None,
        verdict: str | None = None,
        scheduled_ns: int | None = None,
        actual_ns: int | None = None,
        error_ms: float | None = None,
        detail: str = "",
    ) -> None:
        if part is not None:
            result_id = result_id or part.result_id
            part_number = part.part_number if part_number is None else part_number
            verdict = verdict or (part.verdict.value if part.verdict else None)
        self.audit.record(
            AuditRecord(
                event,
                result_id=result_id,
                part_number=part_number,
                verdict=verdict,
                scheduled_ns=scheduled_ns,
                actual_ns=actual_ns,
                error_ms=None if error_ms is None else round(error_ms, 3),
                detail=detail,
            )
        )


def _ack_mapped(settings: RejectSettings) -> bool:
    backend = settings.backend
    return getattr(backend, "ack_input", None) is not None or any(
        getattr(backend, name, None) is not None for name in ("ack_node", "ack_tag")
    )
