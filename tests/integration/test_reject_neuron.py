"""Reject path through EMQX Neuron's MQTT north app: a real Mosquitto plus a client answering as Neuron does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import ActuatorError, Output
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import AuditTrail
from lineinspect.line.reject.neuron import NeuronActuator
from lineinspect.line.reject.settings import NeuronBackend, RejectSettings
from lineinspect.line.reject.tracker import RejectTracker
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.reject_peers import NeuronResponder, part_ref
from tests.helpers.waiting import wait_for

TAGS = {"ejector": 0, "verdict": 0, "part_no": 0, "valid": 0, "ack": 0, "bin_full": 0}


@pytest.fixture
def neuron(mosquitto: Mosquitto) -> Iterator[NeuronResponder]:
    responder = NeuronResponder(
        mosquitto.host, mosquitto.port, app="mqtt-north", node="plc1", group="reject", tags=TAGS
    )
    yield responder
    responder.close()


def backend(mosquitto: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {
        "type": "neuron",
        "host": mosquitto.host,
        "port": mosquitto.port,
        "app": "mqtt-north",
        "node": "plc1",
        "group": "reject",
        "response_timeout_ms": 300,
        "ejector_tag": "ejector",
        "verdict_tag": "verdict",
        "part_number_tag": "part_no",
        **extra,
    }


def timed(mosquitto: Mosquitto, **extra: Any) -> RejectSettings:
    return RejectSettings.model_validate(
        {
            "mode": "timed",
            "backend": backend(mosquitto, **extra.pop("backend", {})),
            "inspection_budget_ms": 20,
            "actuator_latency_ms": 10,
            "delay_ms": 40,
            "pulse_width_ms": 20,
            "line_rate_parts_per_min": 600,
            **extra,
        }
    )


def tracker_for(settings: RejectSettings, tmp_path: Path, alarms: list[Alarm] | None = None) -> RejectTracker:
    assert isinstance(settings.backend, NeuronBackend)
    return RejectTracker(
        settings,
        NeuronActuator(settings.backend),
        AuditTrail(tmp_path),
        on_alarm=alarms.append if alarms is not None else None,
    )


def test_pulse_is_two_acknowledged_tag_writes(mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path) -> None:
    tracker = tracker_for(timed(mosquitto), tmp_path)
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: neuron.writes("ejector") == [1, 0], what="ejector tag 1, then 0")
    finally:
        tracker.close()
    write = next(r for r in neuron.requests if r.get("tag") == "ejector")
    assert set(write) == {"uuid", "node", "group", "tag", "value"}
    assert (write["node"], write["group"]) == ("plc1", "reject")
    assert tracker.counters.snapshot()["fired"] == 1 and tracker.counters.snapshot()["errors"] == 0


def test_verdict_to_plc_writes_part_number_then_verdict(
    mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path
) -> None:
    settings = RejectSettings.model_validate(
        {
            "mode": "verdict_to_plc",
            "backend": backend(mosquitto, result_valid_tag="valid", ack_tag="ack"),
            "inspection_budget_ms": 30,
            "plc_deadline_ms": 150,
            "line_rate_parts_per_min": 300,
            "handshake": {"enabled": True, "ack_timeout_ms": 100, "ack_poll_ms": 5},
        }
    )
    alarms: list[Alarm] = []
    tracker = tracker_for(settings, tmp_path, alarms)
    tracker.start()
    try:
        tracker.part_entered(part_ref(99))
        tracker.verdict_ready(99, "r-99", Verdict.PASS)
        wait_for(lambda: neuron.writes("valid") == [1, 0], what="result-valid tag 1, then 0")
    finally:
        tracker.close()
    assert neuron.writes("part_no") == [99] and neuron.writes("verdict") == [1]
    # Neuron's ack tag stays 0 here: the PLC never acknowledged.
    assert [a.kind for a in alarms] == [AlarmKind.ACK_MISSING]


def test_neuron_error_code_raises_alarm_with_its_meaning(
    mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path
) -> None:
    neuron.errors["ejector"] = 3002
    alarms: list[Alarm] = []
    tracker = tracker_for(timed(mosquitto), tmp_path, alarms)
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: bool(alarms), what="an alarm")
    finally:
        tracker.close()
    assert alarms[0].kind is AlarmKind.ACTUATOR_ERROR and alarms[0].result_id == "r-1"
    assert "Neuron error 3002 (plugin disconnected (Neuron cannot reach the PLC))" in alarms[0].message
    assert tracker.counters.snapshot()["missed"] == 1


def test_unknown_tag_is_reported_by_name(mosquitto: Mosquitto, neuron: NeuronResponder) -> None:
    settings = timed(mosquitto, backend={"ejector_tag": "no_such_tag"})
    assert isinstance(settings.backend, NeuronBackend)
    actuator = NeuronActuator(settings.backend)
    try:
        actuator.check_reachable()
        with pytest.raises(ActuatorError, match=r"Neuron error 2201 \(tag not exist"):
            actuator.set_output(Output.EJECTOR, True)
    finally:
        actuator.close()


def test_silent_gateway_is_refused_at_start(mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path) -> None:
    neuron.silent = True
    tracker = tracker_for(timed(mosquitto), tmp_path)
    with pytest.raises(ActuatorError, match=r"Neuron did not answer on /neuron/mqtt-north/read/resp within 300 ms"):
        tracker.start()


def test_gateway_going_silent_raises_alarm(mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    tracker = tracker_for(timed(mosquitto), tmp_path, alarms)
    tracker.start()
    try:
        neuron.silent = True
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: bool(alarms), what="an alarm")
    finally:
        tracker.close()
    assert alarms[0].kind is AlarmKind.ACTUATOR_ERROR and "did not answer" in alarms[0].message


def test_bin_full_tag_read_through_neuron_raises_alarm(
    mosquitto: Mosquitto, neuron: NeuronResponder, tmp_path: Path
) -> None:
    alarms: list[Alarm] = []
    settings = timed(mosquitto, backend={"bin_full_tag": "bin_full"}, inputs={"bin_full": True, "poll_ms": 10})
    tracker = tracker_for(settings, tmp_path, alarms)
    tracker.start()
    try:
        neuron.tags["bin_full"] = 1
        wait_for(lambda: [a.kind for a in alarms] == [AlarmKind.BIN_FULL], what="bin-full alarm")
    finally:
        tracker.close()


def test_broker_down_is_refused_at_start(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = timed(mosquitto)
    mosquitto.stop()
    tracker = tracker_for(settings, tmp_path)
    with pytest.raises(ActuatorError, match=r"cannot connect to the MQTT broker.*reject\.backend\.host"):
        tracker.start()
