"""How the reject scheduler thread gets to a due time: GIL held across it, real-time priority, CPU pin.

Figures (how late pulses are at a Modbus server, under inspection load) come from bench/bench_reject.py; these
tests only check what must hold on any machine, with margins of tens of milliseconds.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.reject import tracker as tracker_module
from lineinspect.line.reject.audit import AuditTrail
from lineinspect.line.reject.dryrun import DryRunActuator
from lineinspect.line.reject.schedule import MS_NS, Schedule
from lineinspect.line.reject.tracker import RejectTracker, close_in, spin_ns_for
from tests.helpers.reject_peers import part_ref, reject_settings
from tests.helpers.waiting import wait_for

settings = reject_settings


@pytest.fixture
def python_thread_wanting_the_gil() -> Iterator[None]:
    """A thread running pure Python (as an inspection thread's pre/post-processing does), with a 50 ms switch
    interval so that a GIL hand-over is slow enough to see beside a loaded machine's noise."""
    stop = threading.Event()

    def busy() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=busy, name="test-busy-python")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(previous)


def lateness_ms(spin_ms: float, *, ahead_ms: float = 20) -> float:
    due_ns = time.monotonic_ns() + int(ahead_ms * MS_NS)
    close_in(due_ns, spin_ns=int(spin_ms * MS_NS))
    return (time.monotonic_ns() - due_ns) / MS_NS


@pytest.mark.parametrize("spin_ms", [0, 1, 5, 30])
def test_close_in_never_returns_before_the_due_time(spin_ms: float) -> None:
    assert lateness_ms(spin_ms, ahead_ms=3) >= 0


def test_spin_keeps_the_gil_so_a_python_thread_cannot_make_the_pulse_late(python_thread_wanting_the_gil: None) -> None:
    # The spin starts at once (it is longer than the wait) and keeps the GIL: the busy thread could only force
    # it away after a whole switch interval (50 ms), long after the due time.
    assert lateness_ms(spin_ms=30) < 15


def test_sleeping_up_to_the_due_time_waits_for_the_gil_behind_a_python_thread(
    python_thread_wanting_the_gil: None,
) -> None:
    # What made pulses late before: every sleep hands the GIL over, and getting it back waits for the busy
    # thread's switch interval.
    assert lateness_ms(spin_ms=0) > 20


@pytest.mark.parametrize(
    ("spin_ms", "realtime", "expected_ns"),
    [
        (None, True, 5 * MS_NS),  # one switch interval
        (None, False, 0),  # a spinning normal thread is preempted mid-spin: sleep instead
        (1.5, False, 1_500_000),
        (0.0, True, 0),
    ],
)
def test_spin_follows_the_switch_interval_unless_set(spin_ms: float | None, realtime: bool, expected_ns: int) -> None:
    assert spin_ns_for(spin_ms, realtime=realtime, switch_interval_s=0.005) == expected_ns


def test_schedule_asks_whether_the_next_action_must_be_on_time_when_asked() -> None:
    schedule = Schedule()
    must = [True]
    schedule.at(10, lambda _due: None, on_time=lambda: must[0])
    schedule.at(20, lambda _due: None)
    assert schedule.next_on_time() == (10, True)
    must[0] = False  # e.g. the part's verdict came in as pass meanwhile
    assert schedule.next_on_time() == (10, False)
    schedule.pop_due(10)
    assert schedule.next_on_time() == (20, False)


def can_use_fifo() -> bool:
    result: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            result.append(True)
        except (OSError, AttributeError):
            result.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def scheduler_thread() -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == "reject-scheduler")


@pytest.mark.skipif(not can_use_fifo(), reason="needs CAP_SYS_NICE (or an RTPRIO limit) for SCHED_FIFO")
def test_scheduler_thread_runs_with_fifo_priority_on_its_pinned_cpu_and_only_it(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    callers_cpus = os.sched_getaffinity(0)
    tracker = RejectTracker(
        settings(scheduler_priority=50, scheduler_cpus=[cpu]), DryRunActuator(), AuditTrail(tmp_path)
    )
    tracker.start()
    try:
        native_id = scheduler_thread().native_id
        assert native_id is not None
        wait_for(lambda: os.sched_getaffinity(native_id) == {cpu}, timeout_s=2, what="scheduler pinned")
        assert os.sched_getscheduler(native_id) == os.SCHED_FIFO
        assert os.sched_getparam(native_id).sched_priority == 50
    finally:
        tracker.close()
    # The caller's thread (an inspection thread, say) is left as it was.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and os.sched_getaffinity(0) == callers_cpus


def pulses_one_failed_part(tracker: RejectTracker, events: list[dict[str, Any]]) -> None:
    """Start the tracker, fail one part, wait for its pulse on and off at the (dry-run) ejector, close."""
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: len([e for e in events if e.get("output") == "ejector"]) == 2, what="pulse on and off")
    finally:
        tracker.close()


def test_without_realtime_permission_the_tracker_says_what_to_grant_and_still_pulses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(tracker_module.os, "sched_setscheduler", refuse)
    events: list[dict[str, Any]] = []
    tracker = RejectTracker(settings(), DryRunActuator(events.append), AuditTrail(tmp_path))
    with caplog.at_level(logging.WARNING, logger="lineinspect.line.reject.tracker"):
        pulses_one_failed_part(tracker, events)
    assert "reject.scheduler_priority 50 not applied" in caplog.text and "CAP_SYS_NICE" in caplog.text


def test_a_cpu_this_process_may_not_use_is_reported_and_the_scheduler_still_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = max(os.sched_getaffinity(0)) + 64
    events: list[dict[str, Any]] = []
    tracker = RejectTracker(settings(scheduler_cpus=[missing]), DryRunActuator(events.append), AuditTrail(tmp_path))
    with caplog.at_level(logging.WARNING, logger="lineinspect.line.reject.tracker"):
        pulses_one_failed_part(tracker, events)
    assert f"reject.scheduler_cpus [{missing}] not applied" in caplog.text
