"""RejectTracker policy with the dry-run actuator (what it would switch, and when)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.recipe import Verdict
from lineinspect.errors import ConfigError
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import AuditTrail, read_audit
from lineinspect.line.reject.dryrun import DryRunActuator
from lineinspect.line.reject.settings import RejectSettings
from lineinspect.line.reject.tracker import RejectTracker
from lineinspect.line.reject.wiring import build_reject_tracker


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


def settings(**overrides: Any) -> RejectSettings:
    raw: dict[str, Any] = {
        "mode": "timed",
        "backend": {"type": "dry_run"},
        "inspection_budget_ms": 10,
        "actuator_latency_ms": 1,
        "delay_ms": 30,
        "pulse_width_ms": 10,
        "line_rate_parts_per_min": 3000,
    }
    raw.update(overrides)
    return RejectSettings.model_validate(raw)


def make(s: RejectSettings, tmp_path: Path, **kwargs: Any) -> tuple[RejectTracker, Recorder, list[Alarm]]:
    recorder = Recorder()
    alarms: list[Alarm] = []
    tracker = RejectTracker(s, DryRunActuator(recorder), AuditTrail(tmp_path), on_alarm=alarms.append, **kwargs)
    tracker.start()
    return tracker, recorder, alarms


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return list(read_audit(next(tmp_path.glob("reject-audit-*.jsonl"))))


def test_undecided_part_is_rejected_by_default(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(), tmp_path)
    try:
        tracker.part_entered(1)
        tracker.verdict_ready(1, "r-1", Verdict.UNDECIDED)
        time.sleep(0.08)
    finally:
        tracker.close()
    assert [on for _, on in rec.ejector()] == [True, False]
    assert tracker.counters.snapshot()["undecided_rejected"] == 1


def test_undecided_part_passes_when_reject_undecided_is_false(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(reject_undecided=False), tmp_path)
    try:
        tracker.part_entered(1)
        tracker.verdict_ready(1, "r-1", Verdict.UNDECIDED)
        time.sleep(0.06)
    finally:
        tracker.close()
    assert rec.ejector() == []
    assert [r["event"] for r in audit(tmp_path)] == ["skip"]


def test_rejects_closer_than_pulse_width_merge_into_one_longer_pulse(tmp_path: Path) -> None:
    tracker, rec, _ = make(settings(), tmp_path)
    t0 = time.monotonic_ns()
    try:
        for n, offset_ms in ((1, 0), (2, 4)):  # 4 ms apart, faster than the line rate allows
            tracker.part_entered(n, trigger_ns=t0 + offset_ms * 1_000_000)
            tracker.verdict_ready(n, f"r-{n}", Verdict.FAIL)
        time.sleep(0.1)
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
        tracker.part_entered(1, encoder_count=0)
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        deadline = time.monotonic() + 2
        while len(rec.ejector()) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        tracker.close()
    assert [on for _, on in rec.ejector()] == [True, False]


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
        tracker.part_entered(5)
        tracker.part_entered(6)
        tracker.verdict_ready(6, "r-6", Verdict.PASS)
        time.sleep(0.05)
        tracker.verdict_ready(5, "r-5", Verdict.PASS)  # after the budget: counted, not written
    finally:
        tracker.close()
    assert rec.verdicts() == [(1, 6), (3, 5)]
    counters = tracker.counters.snapshot()
    assert counters["late"] == 1 and counters["late_verdicts"] == 1 and counters["verdicts_written"] == 2
    assert alarms == []


def test_too_many_parts_in_flight_raises_overflow_alarm(tmp_path: Path) -> None:
    tracker, _, alarms = make(settings(max_parts_in_flight=2, delay_ms=500), tmp_path)
    try:
        for n in range(3):
            tracker.part_entered(n)
    finally:
        tracker.close()
    assert [a.kind for a in alarms] == [AlarmKind.TRACKING_OVERFLOW]
    assert "part 2 is not tracked" in alarms[0].message


def test_audit_reader_skips_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "reject-audit-2025-01-01.jsonl"
    path.write_text(json.dumps({"event": "fire"}) + "\n" + '{"event": "fi')
    assert list(read_audit(path)) == [{"event": "fire"}]


def test_build_reject_tracker_writes_audit_under_station_dir(tmp_path: Path) -> None:
    rec = Recorder()
    tracker = build_reject_tracker(settings(audit_dir="audit"), tmp_path, publish=rec)
    tracker.start()
    try:
        tracker.part_entered(1)
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        time.sleep(0.06)
    finally:
        tracker.close()
    records = list(read_audit(next((tmp_path / "audit").glob("*.jsonl"))))
    assert [r["event"] for r in records] == ["fire", "pulse_end"]
    assert all(e["dry_run"] for _, e in rec.events)
