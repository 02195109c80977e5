"""Reject path against asyncua's OPC UA server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import ActuatorError
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import AuditTrail
from lineinspect.line.reject.opcua import OpcUaActuator
from lineinspect.line.reject.settings import OpcUaBackend, RejectSettings
from lineinspect.line.reject.tracker import RejectTracker
from tests.helpers.mosquitto import free_port
from tests.helpers.reject_peers import OpcUaPlc, part_ref, running_opcua_plc
from tests.helpers.waiting import wait_for

N = OpcUaPlc.node_id


@pytest.fixture(scope="module")
def opcua_server() -> Iterator[OpcUaPlc]:
    # One server for the module: asyncua takes ~1.5 s to build its address space.
    with running_opcua_plc() as server:
        yield server


@pytest.fixture
def plc(opcua_server: OpcUaPlc) -> Iterator[OpcUaPlc]:
    opcua_server.ejector_changes.clear()
    opcua_server.pulse_calls.clear()
    for name in ("ResultValid", "AirLow", "Ejector"):
        opcua_server.set(name, False)
    yield opcua_server
    opcua_server.end_method_threads()  # the server lives for the module; a test's method-call thread does not


def settings_for(endpoint: str, **raw: Any) -> RejectSettings:
    backend = {"type": "opcua", "endpoint": endpoint, **raw.pop("backend", {})}
    return RejectSettings.model_validate({"backend": backend, "line_rate_parts_per_min": 600, **raw})


def tracker_for(settings: RejectSettings, tmp_path: Path, alarms: list[Alarm] | None = None) -> RejectTracker:
    assert isinstance(settings.backend, OpcUaBackend)
    actuator = OpcUaActuator(settings.backend, pulse_width_ms=settings.pulse_width_ms)
    return RejectTracker(
        settings, actuator, AuditTrail(tmp_path), on_alarm=alarms.append if alarms is not None else None
    )


def test_verdict_written_in_server_types_with_ack(plc: OpcUaPlc, tmp_path: Path) -> None:
    settings = settings_for(
        plc.endpoint,
        mode="verdict_to_plc",
        backend={
            "verdict_node": N("Verdict"),
            "part_number_node": N("PartNumber"),
            "result_valid_node": N("ResultValid"),
            "ack_node": N("Ack"),
        },
        inspection_budget_ms=50,
        plc_deadline_ms=200,
        handshake={"enabled": True, "ack_timeout_ms": 80},
    )
    tracker = tracker_for(settings, tmp_path)
    tracker.start()
    try:
        tracker.part_entered(part_ref(4242))
        tracker.verdict_ready(4242, "r-1", Verdict.FAIL)
        wait_for(lambda: tracker.counters.snapshot()["verdicts_written"] == 1, what="verdict written")
        wait_for(lambda: plc.value("ResultValid") is False, what="result-valid off after the ack")
    finally:
        tracker.close()
    assert plc.value("Verdict") == 2 and plc.value("PartNumber") == 4242
    assert tracker.counters.snapshot()["acks_missing"] == 0


def test_timed_pulse_switches_ejector_node_on_then_off(plc: OpcUaPlc, tmp_path: Path) -> None:
    settings = settings_for(
        plc.endpoint,
        mode="timed",
        backend={"ejector_node": N("Ejector")},
        inspection_budget_ms=20,
        delay_ms=40,
        pulse_width_ms=30,
    )
    tracker = tracker_for(settings, tmp_path)
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.UNDECIDED)
        wait_for(lambda: [v for _, v in plc.ejector_changes] == [True, False], what="ejector node on, then off")
    finally:
        tracker.close()
    (t_on, _), (t_off, _) = plc.ejector_changes
    assert 15 <= (t_off - t_on) / 1e6 < 100
    assert tracker.counters.snapshot()["undecided_rejected"] == 1


def test_pulse_method_is_called_with_width(plc: OpcUaPlc, tmp_path: Path) -> None:
    settings = settings_for(
        plc.endpoint,
        mode="timed",
        backend={"pulse_method": N("Pulse")},
        inspection_budget_ms=20,
        delay_ms=30,
        pulse_width_ms=25,
    )
    tracker = tracker_for(settings, tmp_path)
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: plc.pulse_calls == [25], what="pulse method called once")
    finally:
        tracker.close()


def test_unknown_node_is_refused_at_start(plc: OpcUaPlc, tmp_path: Path) -> None:
    settings = settings_for(
        plc.endpoint, mode="timed", backend={"ejector_node": "ns=2;s=Reject.Nope"}, inspection_budget_ms=20, delay_ms=40
    )
    tracker = tracker_for(settings, tmp_path)
    with pytest.raises(ActuatorError, match=r"node ns=2;s=Reject\.Nope cannot be read.*node ids in reject\.backend"):
        tracker.start()


def test_unreachable_endpoint_is_refused_at_start(tmp_path: Path) -> None:
    settings = settings_for(
        f"opc.tcp://127.0.0.1:{free_port()}/x",
        mode="timed",
        backend={"ejector_node": N("Ejector")},
        inspection_budget_ms=20,
        delay_ms=40,
    )
    tracker = tracker_for(settings, tmp_path)
    with pytest.raises(ActuatorError, match=r"opcua opc\.tcp://127\.0\.0\.1:\d+/x: connecting"):
        tracker.start()


def test_air_low_node_raises_alarm(plc: OpcUaPlc, tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    settings = settings_for(
        plc.endpoint,
        mode="timed",
        backend={"ejector_node": N("Ejector"), "air_low_node": N("AirLow")},
        inputs={"air_low": True, "poll_ms": 5},
        inspection_budget_ms=20,
        delay_ms=40,
    )
    tracker = tracker_for(settings, tmp_path, alarms)
    tracker.start()
    try:
        plc.set("AirLow", True)
        wait_for(lambda: [a.kind for a in alarms] == [AlarmKind.AIR_LOW], what="air-low alarm")
    finally:
        tracker.close()
