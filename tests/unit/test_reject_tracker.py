"""RejectTracker policy with the dry-run actuator (what it would switch, and when), and its pieces on their own.

The pieces (AlarmLatch, InputWatch, TimedEjection, PlcVerdicts) are driven by hand here: no scheduler thread,
the test runs the schedule's actions itself, against an actuator that records every call.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import Verdict
from lineinspect.errors import ConfigError
from lineinspect.line.reject.actuator import ActuatorError, InputStates, Output, VerdictCode
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import AuditRecord, AuditTrail, RejectCounters, read_audit
from lineinspect.line.reject.context import TrackerContext
from lineinspect.line.reject.dryrun import DryRunActuator
from lineinspect.line.reject.inputs import InputWatch
from lineinspect.line.reject.latch import AlarmLatch
from lineinspect.line.reject.plc_verdicts import PlcVerdicts
from lineinspect.line.reject.schedule import MS_NS, InFlight, Schedule, TrackedPart
from lineinspect.line.reject.settings import RejectSettings
from lineinspect.line.reject.timed import TimedEjection
from lineinspect.line.reject.tracker import RejectTracker
from lineinspect.line.reject.wiring import build_reject_tracker
from tests.helpers.reject_peers import part_ref, reject_settings
from tests.helpers.waiting import wait_for


class Recorder:
    """Dry-run events with the monotonic time they were reported."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic_ns(), event))

    def ejector(self) -> list[tuple[int, bool]]:
        return [(t, e["on"]) for t, e in self.events if e.get("output") == "ejector"]

    def verdicts(self) -> list[tuple[int, int]]:
        return [(e["verdict_code"], e["part_number"]) for _, e in self.events if e["action"] == "write_verdict"]


settings = reject_settings


def make(s: RejectSettings, tmp_path: Path, **kwargs: Any) -> tuple[RejectTracker, Recorder, list[Alarm]]:
    recorder = Recorder()
    alarms: list[Alarm] = []
    tracker = RejectTracker(s, DryRunActuator(recorder), AuditTrail(tmp_path), on_alarm=alarms.append, **kwargs)
    tracker.start()
    return tracker, recorder, alarms


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return list(read_audit(next(tmp_path.glob("reject-audit-*.jsonl"))))


# --- the tracker with its scheduler thread ---------------------------------------------------------------


def test_undecided_part_is_rejected_by_default(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(), tmp_path)
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.UNDECIDED)
        wait_for(lambda: len(rec.ejector()) == 2, what="pulse on and off")
    finally:
        tracker.close()
    assert [on for _, on in rec.ejector()] == [True, False]
    assert tracker.counters.snapshot()["undecided_rejected"] == 1


def test_undecided_part_passes_when_reject_undecided_is_false(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(reject_undecided=False), tmp_path)
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.UNDECIDED)
        wait_for(lambda: tracker.counters.snapshot()["passed"] == 1, what="part decided")
    finally:
        tracker.close()
    assert rec.ejector() == []
    assert [r["event"] for r in audit(tmp_path)] == ["skip"]


def test_rejects_closer_than_pulse_width_merge_into_one_longer_pulse(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(), tmp_path)
    t0 = time.monotonic_ns()
    try:
        for n, offset_ms in ((1, 0), (2, 4)):  # 4 ms apart, faster than the line rate allows
            tracker.part_entered(part_ref(n, trigger_ns=t0 + offset_ms * 1_000_000))
            tracker.verdict_ready(n, f"r-{n}", Verdict.FAIL)
        wait_for(lambda: len(rec.ejector()) == 2, what="ejector on and off")
    finally:
        tracker.close()
    (t_on, on), (t_off, off) = rec.ejector()
    assert (on, off) == (True, False)
    assert (t_off - t_on) / 1e6 >= 4 + 10 - 1  # held until the second part's pulse ended
    counters = tracker.counters.snapshot()
    assert counters["fired"] == 2 and counters["pulses_merged"] == 1
    fires = [r for r in audit(tmp_path) if r["event"] == "fire"]
    assert [r["result_id"] for r in fires] == ["r-1", "r-2"] and fires[1]["detail"] == "merged into the running pulse"


def test_encoder_mode_fires_when_counts_are_travelled(tmp_path: Path) -> None:
    position = itertools.count(0, 10)  # each read moves the belt 10 counts
    s = settings(delay_ms=None, encoder_counts=400, encoder_counts_per_s_max=20_000)
    tracker, rec, _ = make(s, tmp_path, encoder_position=lambda: next(position))
    try:
        tracker.part_entered(part_ref(1, encoder_count=0))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: len(rec.ejector()) == 2, timeout_s=2, what="pulse on and off")
    finally:
        tracker.close()
    assert [on for _, on in rec.ejector()] == [True, False]


def test_encoder_mode_needs_the_encoder_count_of_the_part(tmp_path: Path) -> None:
    s = settings(delay_ms=None, encoder_counts=400, encoder_counts_per_s_max=20_000)
    tracker, _, _ = make(s, tmp_path, encoder_position=lambda: 0)
    try:
        with pytest.raises(ValueError, match="needs a PartRef with its encoder_count"):
            tracker.part_entered(part_ref(1))
    finally:
        tracker.close()
    assert tracker.counters.snapshot()["parts_tracked"] == 0


def test_encoder_mode_without_encoder_is_refused(tmp_path: Path) -> None:
    s = settings(delay_ms=None, encoder_counts=400, encoder_counts_per_s_max=20_000)
    audit_trail = AuditTrail(tmp_path)
    try:
        with pytest.raises(ConfigError, match="no encoder input"):
            RejectTracker(s, DryRunActuator(), audit_trail)
    finally:
        audit_trail.close()


def test_verdict_to_plc_writes_undecided_when_verdict_misses_budget(tmp_path: Path) -> None:
    s = settings(mode="verdict_to_plc", delay_ms=None, plc_deadline_ms=40)
    tracker, rec, alarms = make(s, tmp_path)
    try:
        tracker.part_entered(part_ref(5))
        tracker.part_entered(part_ref(6))
        tracker.verdict_ready(6, "r-6", Verdict.PASS)
        wait_for(lambda: tracker.counters.snapshot()["late"] == 1, what="part 5 decided at the budget")
        tracker.verdict_ready(5, "r-5", Verdict.PASS)  # after the budget: counted, not written
    finally:
        tracker.close()
    assert rec.verdicts() == [(1, 6), (3, 5)]
    counters = tracker.counters.snapshot()
    assert counters["late"] == 1 and counters["late_verdicts"] == 1 and counters["verdicts_written"] == 2
    assert alarms == []
    late = next(r for r in audit(tmp_path) if r["event"] == "late_verdict")
    assert (late["part_number"], late["detail"]) == (5, "part already decided as undecided (verdict too late)")


def test_too_many_parts_in_flight_raises_overflow_alarm(tmp_path: Path) -> None:
    tracker, _, alarms = make(settings(max_parts_in_flight=2, delay_ms=500), tmp_path)
    try:
        for n in range(3):
            tracker.part_entered(part_ref(n))
    finally:
        tracker.close()
    assert [a.kind for a in alarms] == [AlarmKind.TRACKING_OVERFLOW]
    assert "part 2 is not tracked" in alarms[0].message and alarms[0].part_number == 2


def test_overflow_stops_the_line_from_the_scheduler_thread(tmp_path: Path) -> None:
    # The overflow is noticed on the caller's thread; the actuator is still switched only by the scheduler.
    actuator = ScriptedActuator()
    s = settings(max_parts_in_flight=1, delay_ms=500, stop_line=True)
    tracker = RejectTracker(s, actuator, AuditTrail(tmp_path))
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.part_entered(part_ref(2))
        wait_for(lambda: (Output.STOP_LINE, True) in actuator.outputs(), what="stop line on")
        assert [a.kind for a in tracker.active_alarms] == [AlarmKind.TRACKING_OVERFLOW]
        tracker.reset_alarms()
        wait_for(lambda: actuator.outputs()[-1] == (Output.STOP_LINE, False), what="stop line off")
        assert tracker.active_alarms == []
    finally:
        tracker.close()
    assert set(actuator.threads) == {"reject-scheduler"}


def test_audit_reader_skips_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "reject-audit-2025-01-01.jsonl"
    path.write_text(json.dumps({"event": "fire"}) + "\n" + '{"event": "fi')
    assert list(read_audit(path)) == [{"event": "fire"}]


def test_build_reject_tracker_writes_audit_under_station_dir(tmp_path: Path) -> None:
    rec = Recorder()
    tracker = build_reject_tracker(settings(audit_dir="audit"), tmp_path, publish=rec)
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: len(rec.ejector()) == 2, what="pulse on and off")
    finally:
        tracker.close()
    records = list(read_audit(next((tmp_path / "audit").glob("*.jsonl"))))
    assert [r["event"] for r in records] == ["fire", "pulse_end"]
    assert all(e["dry_run"] for _, e in rec.events)


# --- the pieces, driven by hand ---------------------------------------------------------------------------


class ScriptedActuator:
    """Records every call (and the thread it came from); `inputs` is what the next read returns."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threads: list[str] = []
        self.inputs = InputStates()
        self.refuse: set[Output] = set()
        self.reads = 0

    @property
    def describe(self) -> str:
        return "scripted"

    def check_reachable(self) -> None:
        pass

    def set_output(self, output: Output, on: bool) -> None:
        self.threads.append(threading.current_thread().name)
        self.calls.append(("set", output, on))
        if output in self.refuse:
            raise ActuatorError(f"scripted: {output.value} refused")

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        self.threads.append(threading.current_thread().name)
        self.calls.append(("verdict", code, part_number))

    def read_inputs(self) -> InputStates:
        self.reads += 1
        return self.inputs

    def close(self) -> None:
        pass

    def outputs(self, output: Output | None = None) -> list[tuple[Output, bool]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "set" and (output is None or c[1] is output)]


class AuditList:
    """Stands in for AuditTrail: keeps the records in memory."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, rec: AuditRecord) -> None:
        self.records.append(rec)

    def events(self) -> list[str]:
        return [r.event.value for r in self.records]


class Rig:
    """One set of pieces around a schedule the test runs itself."""

    def __init__(self, s: RejectSettings, *, on_alarm: Any = None) -> None:
        self.settings = s
        self.actuator = ScriptedActuator()
        self.audit = AuditList()
        self.counters = RejectCounters()
        self.alarms: list[Alarm] = []
        self.schedule = Schedule()
        self.parts = InFlight(capacity=s.max_parts_in_flight)
        self.latch = AlarmLatch(
            self.actuator,
            self.audit,
            self.counters,
            on_alarm=on_alarm or self.alarms.append,
            stop_line=s.stop_line,
            deadline_clear_after_parts=s.deadline_clear_after_parts,
        )
        ctx = TrackerContext(s, self.actuator, self.schedule, self.parts, self.latch, self.audit, self.counters)
        self.inputs = InputWatch(ctx)
        self.timed = TimedEjection(ctx, inputs=self.inputs)
        self.plc = PlcVerdicts(ctx)

    def part(self, n: int, verdict: Verdict | None, *, trigger_ns: int | None = None) -> TrackedPart:
        part = TrackedPart(part_ref(n, trigger_ns=trigger_ns))
        assert self.parts.add(part)
        if verdict is not None:
            assert self.parts.attach(n, f"r-{n}", verdict) is part
        return part

    def run_schedule(self) -> None:
        """Run every scheduled action in time order, however far ahead it is due."""
        while (item := self.schedule.pop_due(2**62)) is not None:
            due_ns, action = item
            action(due_ns)


def test_alarm_latch_keeps_the_line_stopped_until_reset() -> None:
    rig = Rig(settings(backend={"type": "modbus", "host": "127.0.0.1", "stop_line_coil": 9}, stop_line=True))
    rig.latch.alarm(AlarmKind.BIN_FULL, "bin full")
    rig.latch.alarm(AlarmKind.AIR_LOW, "air low")
    rig.latch.clear(AlarmKind.BIN_FULL, "bin full cleared")  # the condition went, the stop line stays
    assert rig.actuator.outputs() == [(Output.STOP_LINE, True)]
    assert [a.kind for a in rig.latch.active] == [AlarmKind.AIR_LOW]
    rig.latch.reset()
    assert rig.actuator.outputs() == [(Output.STOP_LINE, True), (Output.STOP_LINE, False)]
    assert rig.latch.active == []
    rig.latch.alarm(AlarmKind.AIR_LOW, "air low")  # after a reset the next alarm stops the line again
    assert rig.actuator.outputs()[-1] == (Output.STOP_LINE, True)
    assert [(a.kind, a.active) for a in rig.alarms] == [
        (AlarmKind.BIN_FULL, True),
        (AlarmKind.AIR_LOW, True),
        (AlarmKind.BIN_FULL, False),
        (AlarmKind.AIR_LOW, False),  # the reset clears it where everyone can see
        (AlarmKind.AIR_LOW, True),
    ]
    assert rig.alarms[3].message == "reset by the operator"
    assert rig.counters.snapshot()["alarms"] == 3
    assert [r.verdict for r in rig.audit.records] == [None, None, "cleared", "cleared", None]


def test_alarm_latch_without_stop_line_switches_nothing() -> None:
    rig = Rig(settings())
    rig.latch.alarm(AlarmKind.AIR_LOW, "air low")
    rig.latch.reset()
    assert rig.actuator.calls == []


def test_refused_stop_line_counts_an_error_but_raises_no_second_alarm() -> None:
    rig = Rig(settings(backend={"type": "modbus", "host": "127.0.0.1", "stop_line_coil": 9}, stop_line=True))
    rig.actuator.refuse.add(Output.STOP_LINE)
    rig.latch.alarm(AlarmKind.AIR_LOW, "air low")
    assert [a.kind for a in rig.alarms] == [AlarmKind.AIR_LOW]
    assert rig.counters.snapshot()["errors"] == 1


def test_failing_alarm_publisher_does_not_lose_the_alarm() -> None:
    def broken(alarm: Alarm) -> None:
        raise RuntimeError("MQTT down")

    rig = Rig(settings(), on_alarm=broken)
    rig.latch.alarm(AlarmKind.AIR_LOW, "air low")
    assert [a.kind for a in rig.latch.active] == [AlarmKind.AIR_LOW]
    assert rig.audit.events() == ["alarm"]


def test_overlapping_rejects_give_one_pulse_that_ends_with_the_later_one() -> None:
    rig = Rig(settings())
    first, second = rig.part(1, Verdict.FAIL), rig.part(2, Verdict.UNDECIDED)
    now = time.monotonic_ns()
    rig.timed.decide(first, now)
    rig.timed.decide(second, now)  # the first pulse is still on
    assert rig.actuator.outputs() == [(Output.EJECTOR, True)]
    rig.run_schedule()  # the first pulse's own end leaves the output on; the second's switches it off
    assert rig.actuator.outputs() == [(Output.EJECTOR, True), (Output.EJECTOR, False)]
    ends = [r for r in rig.audit.records if r.event.value == "pulse_end"]
    assert [r.part_number for r in ends] == [2]
    assert second.fired_ns is not None and ends[0].scheduled_ns == second.fired_ns + 10 * MS_NS
    counters = rig.counters.snapshot()
    assert (counters["fired"], counters["pulses_merged"], counters["undecided_rejected"]) == (2, 1, 1)


def test_reject_after_the_pulse_ended_is_a_pulse_of_its_own() -> None:
    rig = Rig(settings())
    first, second = rig.part(1, Verdict.FAIL), rig.part(2, Verdict.FAIL)
    rig.timed.decide(first, time.monotonic_ns())
    rig.run_schedule()
    rig.timed.decide(second, time.monotonic_ns())
    rig.run_schedule()
    assert [on for _, on in rig.actuator.outputs(Output.EJECTOR)] == [True, False, True, False]
    assert rig.counters.snapshot()["pulses_merged"] == 0


def test_part_without_verdict_at_the_ejector_is_rejected_as_late() -> None:
    rig = Rig(settings())
    part = rig.part(1, None)
    rig.timed.decide(part, time.monotonic_ns())
    assert rig.actuator.outputs() == [(Output.EJECTOR, True)]
    assert rig.audit.events() == ["late", "fire"]
    assert rig.parts.attach(1, "r-1", Verdict.PASS) is None  # decided: a verdict now comes too late
    assert rig.parts.was_decided(1)


@pytest.mark.parametrize(
    ("verdict", "reject_undecided", "timed_to_the_ms"),
    [
        (Verdict.FAIL, True, True),
        (None, True, True),  # no verdict yet: it may be late, and a late part is rejected
        (Verdict.UNDECIDED, True, True),
        (Verdict.UNDECIDED, False, False),
        (Verdict.PASS, True, False),  # nothing to switch: the scheduler need not spin for it
    ],
)
def test_only_decisions_that_may_pulse_are_timed_to_the_ms(
    verdict: Verdict | None, reject_undecided: bool, timed_to_the_ms: bool
) -> None:
    rig = Rig(settings(reject_undecided=reject_undecided))
    assert rig.timed.acts_on(rig.part(1, verdict)) is timed_to_the_ms


def test_plc_mode_times_only_the_undecided_write_at_the_budget() -> None:
    rig = Rig(settings(mode="verdict_to_plc", delay_ms=None, plc_deadline_ms=40))
    assert rig.plc.acts_on(rig.part(1, None)) and not rig.plc.acts_on(rig.part(2, Verdict.FAIL))


def test_pulse_started_more_than_half_a_width_late_raises_deadline_alarm() -> None:
    rig = Rig(settings())
    part = rig.part(1, Verdict.FAIL)
    rig.timed.decide(part, time.monotonic_ns() - 6 * MS_NS)  # width 10 ms: 6 ms late misses the part
    assert [a.kind for a in rig.alarms] == [AlarmKind.DEADLINE_MISSED]
    assert re.search(r"part 1 started \d+\.\d ms late", rig.alarms[0].message) and rig.alarms[0].result_id == "r-1"
    assert rig.counters.snapshot()["missed"] == 1


def test_deadline_missed_clears_itself_after_enough_parts_in_a_row_on_time() -> None:
    rig = Rig(settings(deadline_clear_after_parts=3))
    rig.timed.decide(rig.part(1, Verdict.FAIL), time.monotonic_ns() - 6 * MS_NS)  # 6 ms late: missed
    rig.run_schedule()
    for n, verdict in ((2, Verdict.FAIL), (3, Verdict.PASS)):  # two on time: not yet
        rig.timed.decide(rig.part(n, verdict), time.monotonic_ns())
        rig.run_schedule()
    assert [a.kind for a in rig.latch.active] == [AlarmKind.DEADLINE_MISSED]
    rig.timed.decide(rig.part(4, Verdict.FAIL), time.monotonic_ns() - 6 * MS_NS)  # late again: counting restarts
    rig.run_schedule()
    for n in (5, 6):
        rig.timed.decide(rig.part(n, Verdict.PASS), time.monotonic_ns())
    assert [a.kind for a in rig.latch.active] == [AlarmKind.DEADLINE_MISSED]
    rig.timed.decide(rig.part(7, Verdict.PASS), time.monotonic_ns())
    assert rig.latch.active == []
    assert [(a.kind, a.active) for a in rig.alarms] == [
        (AlarmKind.DEADLINE_MISSED, True),
        (AlarmKind.DEADLINE_MISSED, True),
        (AlarmKind.DEADLINE_MISSED, False),
    ]
    assert rig.alarms[-1].message == "the last 3 parts were on time (reject.deadline_clear_after_parts)"


def test_plc_deadline_missed_clears_after_verdicts_written_in_time() -> None:
    rig = Rig(plc_settings(deadline_clear_after_parts=2))
    rig.plc.decide(rig.part(1, Verdict.PASS, trigger_ns=time.monotonic_ns() - 100 * MS_NS), time.monotonic_ns())
    rig.plc.decide(rig.part(2, Verdict.PASS), time.monotonic_ns())
    assert [a.kind for a in rig.latch.active] == [AlarmKind.DEADLINE_MISSED]
    rig.plc.decide(rig.part(3, Verdict.FAIL), time.monotonic_ns())
    assert rig.latch.active == [] and [a.active for a in rig.alarms] == [True, False]


def test_refused_ejector_is_a_missed_reject_with_an_actuator_alarm() -> None:
    rig = Rig(settings())
    rig.actuator.refuse.add(Output.EJECTOR)
    rig.timed.decide(rig.part(1, Verdict.FAIL), time.monotonic_ns())
    rig.run_schedule()
    assert rig.audit.events() == ["alarm", "miss"]
    assert [a.kind for a in rig.alarms] == [AlarmKind.ACTUATOR_ERROR] and rig.alarms[0].part_number == 1
    counters = rig.counters.snapshot()
    assert (counters["missed"], counters["errors"], counters["fired"]) == (1, 1, 0)


def input_settings(**inputs: Any) -> RejectSettings:
    # 50 ms pulses: a read between pulse start and end fits in even on a loaded test machine.
    backend = {"type": "modbus", "host": "127.0.0.1", "confirm_input": 0, "bin_full_input": 1, "air_low_input": 2}
    return settings(
        backend=backend, pulse_width_ms=50, line_rate_parts_per_min=600, inputs={"poll_ms": 0.001, **inputs}
    )


def test_bin_full_raises_on_the_rising_edge_and_clears_on_the_falling_one() -> None:
    rig = Rig(input_settings(bin_full=True))
    for bin_full in (False, True, True, False):
        rig.actuator.inputs = InputStates(bin_full=bin_full)
        time.sleep(0.001)  # paces the polls: each read is due poll_ms after the last
        rig.inputs.poll_if_due()
    assert [(a.kind, a.active, a.message) for a in rig.alarms] == [
        (AlarmKind.BIN_FULL, True, "bin full (scripted)"),
        (AlarmKind.BIN_FULL, False, "bin full cleared"),
    ]
    assert rig.latch.active == [] and rig.actuator.reads == 4


def test_inputs_are_not_read_when_an_event_is_due_sooner_than_a_read_takes() -> None:
    rig = Rig(input_settings(air_low=True))
    rig.actuator.inputs = InputStates(air_low=True)
    rig.schedule.at(time.monotonic_ns(), lambda _due_ns: None)  # a pulse due now
    rig.inputs.poll_if_due()
    assert rig.actuator.reads == 0
    rig.run_schedule()
    rig.schedule.at(time.monotonic_ns() + 1_000 * MS_NS, lambda _due_ns: None)  # the next one far off
    time.sleep(0.001)  # paces the polls: the skipped read's slot (poll_ms) has to pass
    rig.inputs.poll_if_due()
    assert rig.actuator.reads == 1 and [a.kind for a in rig.alarms] == [AlarmKind.AIR_LOW]


def test_pulse_without_confirm_in_the_window_raises_confirm_missing() -> None:
    rig = Rig(input_settings(confirm={"window_ms": 80}))
    part = rig.part(1, Verdict.FAIL)
    rig.timed.decide(part, time.monotonic_ns())
    rig.run_schedule()  # pulse end, then the confirm window's end
    assert [a.kind for a in rig.alarms] == [AlarmKind.CONFIRM_MISSING]
    assert "did not see part 1 within reject.inputs.confirm.window_ms 80" in rig.alarms[0].message
    assert rig.counters.snapshot()["confirm_missing"] == 1


def test_confirm_seen_in_the_window_is_recorded_and_raises_nothing() -> None:
    rig = Rig(input_settings(confirm={"window_ms": 80}))
    part = rig.part(1, Verdict.FAIL)
    rig.timed.decide(part, time.monotonic_ns())
    rig.actuator.inputs = InputStates(confirm=True)  # the part drops into the bin
    rig.inputs.poll_if_due()
    rig.run_schedule()
    assert rig.alarms == [] and part.confirmed
    assert rig.audit.events() == ["fire", "confirm", "pulse_end"]


def plc_settings(**overrides: Any) -> RejectSettings:
    return settings(mode="verdict_to_plc", delay_ms=None, plc_deadline_ms=40, **overrides)


def test_plc_verdict_is_written_once_whichever_comes_first() -> None:
    rig = Rig(plc_settings())
    part = rig.part(7, Verdict.FAIL)
    rig.plc.verdict_arrived(part)
    rig.run_schedule()
    rig.plc.decide(part, time.monotonic_ns())  # the budget passes after the write: nothing more
    assert [c for c in rig.actuator.calls if c[0] == "verdict"] == [("verdict", VerdictCode.FAIL, 7)]
    assert rig.counters.snapshot()["verdicts_written"] == 1


def test_plc_part_without_verdict_at_budget_is_written_as_pass_when_undecided_passes() -> None:
    rig = Rig(plc_settings(reject_undecided=False))
    rig.plc.decide(rig.part(3, None), time.monotonic_ns())
    assert rig.actuator.calls == [("verdict", VerdictCode.PASS, 3)]
    write = rig.audit.records[-1]
    assert (write.verdict, write.detail) == ("pass", "verdict code 1 (late: undecided)")


def test_plc_verdict_after_the_plc_deadline_raises_deadline_alarm() -> None:
    rig = Rig(plc_settings())
    part = rig.part(1, Verdict.PASS, trigger_ns=time.monotonic_ns() - 100 * MS_NS)  # deadline 40 ms: long gone
    rig.plc.decide(part, time.monotonic_ns())
    assert [a.kind for a in rig.alarms] == [AlarmKind.DEADLINE_MISSED]
    assert "after reject.plc_deadline_ms 40" in rig.alarms[0].message
    assert rig.counters.snapshot()["missed"] == 1


def test_handshake_without_ack_gives_every_verdict_a_fresh_result_valid_edge() -> None:
    backend = {"type": "modbus", "host": "127.0.0.1", "result_valid_coil": 5}
    rig = Rig(plc_settings(backend=backend, handshake={"enabled": True}))
    for n in (1, 2):
        rig.plc.decide(rig.part(n, Verdict.PASS), time.monotonic_ns())
    valid = ("set", Output.RESULT_VALID)
    assert rig.actuator.calls == [
        (*valid, False),
        ("verdict", VerdictCode.PASS, 1),
        (*valid, True),
        (*valid, False),
        ("verdict", VerdictCode.PASS, 2),
        (*valid, True),
    ]


def test_handshake_with_missing_ack_raises_alarm_and_drops_result_valid() -> None:
    backend = {"type": "modbus", "host": "127.0.0.1", "result_valid_coil": 5, "ack_input": 2}
    rig = Rig(plc_settings(backend=backend, handshake={"enabled": True, "ack_timeout_ms": 5, "ack_poll_ms": 1}))
    rig.plc.decide(rig.part(1, Verdict.FAIL), time.monotonic_ns())
    assert rig.actuator.outputs() == [(Output.RESULT_VALID, True), (Output.RESULT_VALID, False)]
    assert [a.kind for a in rig.alarms] == [AlarmKind.ACK_MISSING] and rig.alarms[0].result_id == "r-1"
    assert rig.audit.events() == ["write", "miss", "alarm"]
    assert rig.counters.snapshot()["acks_missing"] == 1


# --- the dry-run actuator's log ---------------------------------------------------------------------------


class SteppedClock:
    """A monotonic clock in seconds that moves only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def dry_run_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.endswith("reject.dryrun") and r.levelno == level]


def test_dry_run_logs_one_summary_a_minute_at_info_and_each_action_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lineinspect.line.reject.dryrun")
    clock, counters = SteppedClock(), RejectCounters()
    actuator = DryRunActuator(counters=counters, monotonic_s=clock)
    tracker = RejectTracker(settings(), actuator, AuditTrail(tmp_path), counters=counters)
    tracker.start()
    try:
        for n, verdict in ((1, Verdict.FAIL), (2, Verdict.UNDECIDED), (3, Verdict.PASS), (4, Verdict.FAIL)):
            tracker.part_entered(part_ref(n))
            tracker.verdict_ready(n, f"r-{n}", verdict)
            time.sleep(0.05)  # one pulse (10 ms) at a time: none merge
        wait_for(lambda: len(dry_run_lines(caplog, logging.DEBUG)) == 1 + 6, what="three pulses on and off")
        assert len(dry_run_lines(caplog, logging.INFO)) == 1  # only the start-up line so far
        clock.now_s += 61
        tracker.part_entered(part_ref(5))
        tracker.verdict_ready(5, "r-5", Verdict.FAIL)
        wait_for(lambda: len(dry_run_lines(caplog, logging.INFO)) == 2, what="the minute's summary")
    finally:
        tracker.close()
    start, minute, at_close = dry_run_lines(caplog, logging.INFO)
    assert "switching nothing" in start
    assert minute == (
        "reject dry-run, last 61 s: would have rejected 3 parts (1 of them undecided); passed 1; ejector pulses 3"
    )
    assert at_close.endswith("would have rejected 1 parts (0 of them undecided); ejector pulses 1")
    assert len(dry_run_lines(caplog, logging.DEBUG)) == 1 + 8  # check_reachable, then every switch


def test_dry_run_summary_counts_the_verdicts_it_would_have_written(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lineinspect.line.reject.dryrun")
    actuator = DryRunActuator(monotonic_s=SteppedClock())
    for code in (VerdictCode.FAIL, VerdictCode.PASS, VerdictCode.PASS, VerdictCode.UNDECIDED):
        actuator.write_verdict(code, 1)
    assert dry_run_lines(caplog, logging.INFO) == []
    actuator.close()
    assert dry_run_lines(caplog, logging.INFO) == [
        "reject dry-run, last 0 s: verdicts written: fail 1, pass 2, undecided 1"
    ]
