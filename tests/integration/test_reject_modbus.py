"""Reject path against pymodbus' own Modbus TCP server on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import ActuatorError
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import AuditTrail, read_audit
from lineinspect.line.reject.modbus import ModbusActuator
from lineinspect.line.reject.settings import RejectSettings
from lineinspect.line.reject.tracker import RejectTracker
from tests.helpers.mosquitto import free_port
from tests.helpers.reject_peers import ModbusPlc, part_ref, running_modbus_plc
from tests.helpers.waiting import holds, wait_for

EJECTOR = 3


def timed(port: int, **extra: Any) -> RejectSettings:
    backend = {"type": "modbus", "host": "127.0.0.1", "port": port, "ejector_coil": EJECTOR, "timeout_ms": 300}
    backend.update(extra.pop("backend", {}))
    raw = {
        "mode": "timed",
        "backend": backend,
        "inspection_budget_ms": 20,
        "delay_ms": 40,
        "pulse_width_ms": 15,
        "line_rate_parts_per_min": 1200,
        **extra,
    }
    return RejectSettings.model_validate(raw)


def tracker_for(settings: RejectSettings, tmp_path: Path, alarms: list[Alarm] | None = None) -> RejectTracker:
    sink = alarms.append if alarms is not None else None
    return RejectTracker(settings, ModbusActuator(settings.backend), AuditTrail(tmp_path), on_alarm=sink)  # type: ignore[arg-type]


def test_failed_part_gets_one_pulse_at_trigger_plus_delay_and_good_part_none(tmp_path: Path) -> None:
    with running_modbus_plc() as plc:
        tracker = tracker_for(timed(plc.port), tmp_path)
        tracker.start()
        try:
            t0 = time.monotonic_ns()
            tracker.part_entered(part_ref(1, trigger_ns=t0))
            tracker.part_entered(part_ref(2, trigger_ns=t0 + 50_000_000))
            tracker.verdict_ready(1, "r-1", Verdict.FAIL)
            tracker.verdict_ready(2, "r-2", Verdict.PASS)
            wait_for(
                lambda: len(plc.pulses(EJECTOR)) == 1 and tracker.counters.snapshot()["passed"] == 1,
                what="part 1 pulsed and part 2 passed",
            )
        finally:
            tracker.close()
        pulses = plc.pulses(EJECTOR)
    assert len(pulses) == 1
    on_ns, off_ns = pulses[0]
    # Behaviour, not a benchmark (bench/bench_reject.py measures the error): on after the delay, not a part late.
    assert 40 <= (on_ns - t0) / 1e6 < 40 + 50
    assert 14 <= (off_ns - on_ns) / 1e6 < 40
    counters = tracker.counters.snapshot()
    assert counters["fired"] == 1 and counters["passed"] == 1
    records = list(read_audit(next(tmp_path.glob("*.jsonl"))))
    fire = next(r for r in records if r["event"] == "fire")
    assert fire["result_id"] == "r-1" and fire["part_number"] == 1 and fire["error_ms"] is not None


def test_part_without_verdict_is_rejected_as_late(tmp_path: Path) -> None:
    with running_modbus_plc() as plc:
        tracker = tracker_for(timed(plc.port), tmp_path)
        tracker.start()
        try:
            tracker.part_entered(part_ref(7))
            wait_for(lambda: len(plc.pulses(EJECTOR)) == 1, what="late part pulsed")
            tracker.verdict_ready(7, "r-7", Verdict.PASS)  # too late: the part is already in the bin
        finally:
            tracker.close()
    counters = tracker.counters.snapshot()
    assert counters["late"] == 1 and counters["fired"] == 1 and counters["late_verdicts"] == 1


def test_verdict_and_part_number_written_with_ack_handshake(tmp_path: Path) -> None:
    with running_modbus_plc(result_valid_coil=5, ack_input=2) as plc:
        settings = RejectSettings.model_validate(
            {
                "mode": "verdict_to_plc",
                "backend": {
                    "type": "modbus",
                    "host": "127.0.0.1",
                    "port": plc.port,
                    "verdict_register": 10,
                    "part_number_register": 11,
                    "result_valid_coil": 5,
                    "ack_input": 2,
                },
                "inspection_budget_ms": 30,
                "plc_deadline_ms": 60,
                "line_rate_parts_per_min": 600,
                "handshake": {"enabled": True, "ack_timeout_ms": 50},
            }
        )
        tracker = tracker_for(settings, tmp_path)
        tracker.start()
        try:
            tracker.part_entered(part_ref(70_000))
            tracker.verdict_ready(70_000, "r-a", Verdict.FAIL)
            wait_for(lambda: tracker.counters.snapshot()["verdicts_written"] == 1, what="verdict written")
            wait_for(lambda: plc.coils.get(5) is False, what="result-valid off after the ack")
        finally:
            tracker.close()
        assert plc.register_writes[-1][1:] == (10, [2, 70_000 >> 16, 70_000 & 0xFFFF])
        assert [v for _, a, v in plc.coil_writes if a == 5] == [True, False]
    events = [r["event"] for r in read_audit(next(tmp_path.glob("*.jsonl")))]
    assert "write" in events and "ack" in events
    assert tracker.counters.snapshot()["acks_missing"] == 0


def test_missing_ack_raises_alarm_and_stops_line(tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    with running_modbus_plc(result_valid_coil=5, ack_input=2, acks=False) as plc:
        settings = RejectSettings.model_validate(
            {
                "mode": "verdict_to_plc",
                "backend": {
                    "type": "modbus",
                    "host": "127.0.0.1",
                    "port": plc.port,
                    "result_valid_coil": 5,
                    "ack_input": 2,
                    "stop_line_coil": 9,
                },
                "inspection_budget_ms": 30,
                "plc_deadline_ms": 60,
                "line_rate_parts_per_min": 600,
                "handshake": {"enabled": True, "ack_timeout_ms": 30},
                "stop_line": True,
            }
        )
        tracker = tracker_for(settings, tmp_path, alarms)
        tracker.start()
        try:
            tracker.part_entered(part_ref(1))
            tracker.verdict_ready(1, "r-1", Verdict.PASS)
            wait_for(lambda: plc.coils.get(9) is True, what="stop line on")
            tracker.reset_alarms()
            wait_for(lambda: plc.coils.get(9) is False, what="stop line off after reset")
        finally:
            tracker.close()
    # Raised, then cleared by the operator's reset.
    assert [(a.kind, a.active) for a in alarms] == [(AlarmKind.ACK_MISSING, True), (AlarmKind.ACK_MISSING, False)]
    assert "did not acknowledge" in alarms[0].message and alarms[0].result_id == "r-1"
    assert tracker.counters.snapshot()["acks_missing"] == 1


def test_bin_full_and_missing_confirm_raise_alarms(tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    with running_modbus_plc() as plc:
        settings = timed(
            plc.port,
            backend={"confirm_input": 0, "bin_full_input": 1, "air_low_input": 4},
            inputs={"confirm": {"window_ms": 40}, "bin_full": True, "air_low": True, "poll_ms": 3},
        )
        tracker = tracker_for(settings, tmp_path, alarms)
        tracker.start()
        try:
            plc.inputs[1] = True
            wait_for(lambda: any(a.kind is AlarmKind.BIN_FULL for a in alarms), what="bin-full alarm")
            plc.inputs[1] = False
            wait_for(
                lambda: any(a.kind is AlarmKind.BIN_FULL and not a.active for a in alarms), what="bin-full cleared"
            )
            tracker.part_entered(part_ref(1))
            tracker.verdict_ready(1, "r-1", Verdict.FAIL)
            wait_for(lambda: any(a.kind is AlarmKind.CONFIRM_MISSING for a in alarms), what="confirm-missing alarm")
        finally:
            tracker.close()
    confirm = next(a for a in alarms if a.kind is AlarmKind.CONFIRM_MISSING)
    assert confirm.result_id == "r-1" and "reject.inputs.confirm.window_ms 40" in confirm.message
    assert tracker.counters.snapshot()["confirm_missing"] == 1


def test_confirm_seen_in_window_raises_no_alarm(tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    with running_modbus_plc() as plc:
        settings = timed(plc.port, backend={"confirm_input": 0}, inputs={"confirm": {"window_ms": 60}, "poll_ms": 2})
        tracker = tracker_for(settings, tmp_path, alarms)
        tracker.start()
        try:
            tracker.part_entered(part_ref(1))
            tracker.verdict_ready(1, "r-1", Verdict.FAIL)
            wait_for(lambda: len(plc.pulses(EJECTOR)) == 1, what="pulse")
            plc.inputs[0] = True  # the part drops into the bin
            wait_for(
                lambda: any(r["event"] == "confirm" for r in read_audit(next(tmp_path.glob("*.jsonl")))),
                what="confirm recorded",
            )
            holds(lambda: alarms == [], 0.08, what="no alarm until the 60 ms confirm window has closed")
        finally:
            tracker.close()
    assert alarms == []
    assert any(r["event"] == "confirm" for r in read_audit(next(tmp_path.glob("*.jsonl"))))


def test_closed_port_is_refused_at_start_with_what_to_check(tmp_path: Path) -> None:
    settings = timed(free_port())
    tracker = tracker_for(settings, tmp_path)
    with pytest.raises(ActuatorError, match=r"modbus 127\.0\.0\.1:\d+ device 1: cannot connect.*reject\.backend\.host"):
        tracker.start()


def test_unmapped_address_is_refused_at_start(tmp_path: Path) -> None:
    with running_modbus_plc() as plc:
        settings = timed(plc.port, backend={"ejector_coil": 4000})
        tracker = tracker_for(settings, tmp_path)
        with pytest.raises(ActuatorError, match=r"reading ejector coil 4000 refused by the device"):
            tracker.start()


def test_plc_lost_while_running_raises_actuator_alarm(tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    plc = ModbusPlc()
    plc.start()
    try:
        tracker = tracker_for(timed(plc.port), tmp_path, alarms)
        tracker.start()
    finally:
        plc.stop()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: tracker.counters.snapshot()["missed"] == 1, what="missed reject counted")
    finally:
        tracker.close()
    assert alarms and alarms[0].kind is AlarmKind.ACTUATOR_ERROR and alarms[0].result_id == "r-1"
    assert any(r["event"] == "miss" for r in read_audit(next(tmp_path.glob("*.jsonl"))))
