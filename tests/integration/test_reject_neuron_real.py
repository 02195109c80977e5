"""Reject path through a real EMQX Neuron: tracker → Mosquitto → Neuron's MQTT north app → Modbus TCP → pymodbus.

The Neuron is built by `make neuron` (tests/helpers/neuron_peer.py skips these tests, naming the missing path and
the build log, where it is not). Everything is counted where the PLC is: the coil writes the pymodbus server saw.
test_reject_neuron.py covers the same protocol against a client imitating Neuron, without the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineinspect.core.result import Verdict
from lineinspect.line.reject.actuator import ActuatorError, Output
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.reject.audit import read_audit
from lineinspect.line.reject.neuron import NeuronActuator
from lineinspect.line.reject.settings import NeuronBackend, RejectSettings
from tests.helpers.mosquitto import Mosquitto, free_port, running_mosquitto
from tests.helpers.neuron_peer import (
    CoilTag,
    NeuronPeer,
    NorthApp,
    SouthNode,
    neuron_binary_or_skip,
    running_neuron,
)
from tests.helpers.reject_peers import ModbusPlc, part_ref, running_modbus_plc
from tests.helpers.waiting import holds, wait_for
from tests.integration.test_reject_neuron import timed, tracker_for

EJECTOR = 3  # coil of the `ejector` tag (0-based protocol address)
READ_ONLY = 4  # coil of `ejector_ro`, a tag Neuron holds as read-only
BEYOND_PLC = 1000  # coil of `ejector_far`: the PLC (coils 0..31) refuses it
SPACING_MS = 100.0  # 600 parts/min

# A line the real gateway can serve on a shared 2-core machine: request → coil took a median 3.3-3.6 ms, p99 12-19 ms,
# max 20-24 ms here (bench/bench_neuron.py).
LINE = {
    "delay_ms": 100,
    "pulse_width_ms": 80,
    "actuator_latency_ms": 40,  # the tolerance: the coil is on by trigger + delay + this, at most half a pulse
    "inspection_budget_ms": 20,
    "line_rate_parts_per_min": 60_000 / SPACING_MS,
}


# The second app has the Write Request / Response Topics a plant may set (Neuron >= 2.4.5) and, like an app that
# only carries commands, is subscribed to no group.
PLANT_APP = NorthApp(
    "mqtt-plant", "plant/line1/reject/write/req", "plant/line1/reject/write/resp", subscribes_groups=False
)


@dataclass
class Gateway:
    broker: Mosquitto
    plc: ModbusPlc
    neuron: NeuronPeer


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One Neuron for the module (one per machine, ~4 s to stop): apps `mqtt-north` (default topics) and
    `mqtt-plant` on a Mosquitto, `plc1` on a pymodbus server, `plc_absent` on a port nobody listens on."""
    binary = neuron_binary_or_skip()
    with running_mosquitto() as broker, running_modbus_plc() as plc:
        tags = (
            CoilTag("ejector", EJECTOR),
            CoilTag("ejector_ro", READ_ONLY, writable=False),
            CoilTag("ejector_far", BEYOND_PLC),
        )
        plc1 = SouthNode("plc1", "reject", plc.port, tags)
        absent = SouthNode("plc_absent", "reject", free_port(), (CoilTag("ejector", 0),), expect_link=False)
        with running_neuron(
            binary,
            tmp_path_factory.mktemp("neuron"),
            broker_host=broker.host,
            broker_port=broker.port,
            norths=(NorthApp("mqtt-north"), PLANT_APP),
            souths=(plc1, absent),
        ) as neuron:
            yield Gateway(broker, plc, neuron)


@pytest.fixture
def gateway(gateway_process: Gateway) -> Gateway:
    """The module's gateway, running (a test that killed it gets it back) and with no coil writes seen yet."""
    g = gateway_process
    if g.neuron.process is None or g.neuron.process.poll() is not None:
        g.neuron.restart()
    g.plc.coil_writes.clear()  # nothing writes between tests: the tracker of the last test is closed
    return g


def line(g: Gateway, **backend: object) -> RejectSettings:
    return timed(g.broker, backend={"response_timeout_ms": 300, **backend}, **LINE)


def test_failed_and_undecided_parts_get_one_coil_pulse_each_on_time(gateway: Gateway, tmp_path: Path) -> None:
    alarms: list[Alarm] = []
    tracker = tracker_for(line(gateway), tmp_path, alarms)
    verdicts = [Verdict.FAIL, Verdict.PASS, Verdict.UNDECIDED, Verdict.PASS, Verdict.FAIL, Verdict.PASS]
    spacing_ns = int(SPACING_MS * 1e6)
    tracker.start()
    try:
        t0 = time.monotonic_ns()
        for i, verdict in enumerate(verdicts):
            tracker.part_entered(part_ref(i + 1, trigger_ns=t0 + i * spacing_ns))
            tracker.verdict_ready(i + 1, f"r-{i + 1}", verdict)
        last_decision_s = (len(verdicts) * SPACING_MS + LINE["delay_ms"] + LINE["pulse_width_ms"]) / 1000
        wait_for(lambda: len(gateway.plc.pulses(EJECTOR)) == 3, timeout_s=last_decision_s + 3, what="three pulses")
        holds(lambda: len(gateway.plc.coil_writes) == 6, 0.2, what="no coil write beyond the three pulses")
    finally:
        tracker.close()
    # Only the ejector coil, on and off three times, and each pulse where its part was.
    assert [(a, v) for _, a, v in gateway.plc.coil_writes] == [(EJECTOR, True), (EJECTOR, False)] * 3
    tolerance_ms = LINE["actuator_latency_ms"]
    for (on_ns, off_ns), part_index in zip(gateway.plc.pulses(EJECTOR), (0, 2, 4), strict=True):
        late_ms = (on_ns - (t0 + part_index * spacing_ns)) / 1e6 - LINE["delay_ms"]
        assert 0 <= late_ms <= tolerance_ms, f"part {part_index + 1}: coil on {late_ms:.1f} ms after its due time"
        width_ms = (off_ns - on_ns) / 1e6
        assert abs(width_ms - LINE["pulse_width_ms"]) <= tolerance_ms, f"pulse {width_ms:.1f} ms wide"
    # Every write was answered with error 0 in time: a missing or non-zero answer would have raised an alarm.
    assert alarms == []


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ({"ejector_tag": "no_such_tag"}, r"Neuron error 2201 \(tag not exist"),
        ({"ejector_tag": "ejector_ro"}, r"Neuron error 3004 \(tag not allowed to write"),
        ({"node": "plc_absent"}, r"Neuron error 3002 \(plugin disconnected"),
    ],
    ids=["unknown-tag", "read-only-tag", "plc-unreachable"],
)
def test_refused_write_raises_with_neurons_code(gateway: Gateway, backend: dict[str, str], message: str) -> None:
    settings = line(gateway, **backend)
    assert isinstance(settings.backend, NeuronBackend)
    actuator = NeuronActuator(settings.backend)
    try:
        actuator.check_reachable()
        with pytest.raises(ActuatorError, match=message):
            actuator.set_output(Output.EJECTOR, True)
    finally:
        actuator.close()
    assert gateway.plc.coil_writes == []


def test_write_topics_set_in_neuron_are_used_when_named_in_the_backend(gateway: Gateway) -> None:
    settings = line(
        gateway,
        app=PLANT_APP.name,
        write_request_topic=PLANT_APP.write_request_topic,
        write_response_topic=PLANT_APP.write_response_topic,
    )
    assert isinstance(settings.backend, NeuronBackend)
    actuator = NeuronActuator(settings.backend)
    try:
        actuator.check_reachable()
        actuator.set_output(Output.EJECTOR, True)
        actuator.set_output(Output.EJECTOR, False)
    finally:
        actuator.close()
    # Neuron answers once the Modbus request is sent, so the PLC may see the write a moment after the answer.
    wait_for(lambda: len(gateway.plc.coil_writes) == 2, timeout_s=1, what="both coil writes at the PLC")
    assert [(a, v) for _, a, v in gateway.plc.coil_writes] == [(EJECTOR, True), (EJECTOR, False)]


def test_an_output_tag_the_plc_refuses_is_refused_at_start_as_neuron_would_answer_its_writes_0(
    gateway: Gateway,
) -> None:
    plc1 = gateway.neuron.souths[0]
    wait_for(
        lambda: "error" in gateway.neuron.read_tags(plc1)["ejector_far"], what="Neuron's poll of coil 1000 failing"
    )
    settings = line(gateway, ejector_tag="ejector_far")
    assert isinstance(settings.backend, NeuronBackend)
    actuator = NeuronActuator(settings.backend)
    try:
        with pytest.raises(ActuatorError, match=r"the PLC refuses to read output tag ejector_far \(Neuron error 3000"):
            actuator.check_reachable()
        # What it would have let through: Neuron answers the write with error 0, as its Modbus driver answers when
        # the request is sent, not when the PLC replies; and the coil is never written.
        actuator.set_output(Output.EJECTOR, True)
    finally:
        actuator.close()
    holds(lambda: gateway.plc.coil_writes == [], 0.1, what="no coil written by the refused write")


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ({"node": "no_such_node"}, r"checking the gateway: Neuron error 2003 \(node not exist"),
        ({"group": "no_such_group"}, r"checking the gateway: Neuron error 2106 \(group not exist"),
        ({"app": "not-this-app"}, r"Neuron did not answer on /neuron/not-this-app/read/resp within 300 ms"),
    ],
    ids=["unknown-node", "unknown-group", "unknown-app"],
)
def test_wrong_gateway_settings_are_refused_at_start(
    gateway: Gateway, tmp_path: Path, backend: dict[str, str], message: str
) -> None:
    tracker = tracker_for(line(gateway, **backend), tmp_path)
    with pytest.raises(ActuatorError, match=message):
        tracker.start()


def test_neuron_killed_mid_run_raises_alarm_and_rejects_are_missed_until_it_returns(
    gateway: Gateway, tmp_path: Path
) -> None:
    alarms: list[Alarm] = []
    tracker = tracker_for(line(gateway), tmp_path, alarms)
    plc = gateway.plc
    tracker.start()
    try:
        tracker.part_entered(part_ref(1))
        tracker.verdict_ready(1, "r-1", Verdict.FAIL)
        wait_for(lambda: len(plc.pulses(EJECTOR)) == 1, what="part 1 pulsed through Neuron")

        gateway.neuron.kill()
        writes_before = len(plc.coil_writes)
        tracker.part_entered(part_ref(2))
        tracker.verdict_ready(2, "r-2", Verdict.FAIL)
        tracker.part_entered(part_ref(3))
        tracker.verdict_ready(3, "r-3", Verdict.PASS)
        tracker.part_entered(part_ref(4))  # no verdict by the ejector: late, rejected as undecided
        wait_for(lambda: len(alarms) == 2, what="an actuator alarm for each part to reject")
        assert len(plc.coil_writes) == writes_before, "a coil was written while Neuron was down"

        gateway.neuron.restart()
        tracker.part_entered(part_ref(5))
        tracker.verdict_ready(5, "r-5", Verdict.FAIL)
        wait_for(lambda: len(plc.pulses(EJECTOR)) == 2, timeout_s=10, what="part 5 pulsed after Neuron returned")
    finally:
        tracker.close()
    assert [(a.kind, a.part_number) for a in alarms] == [(AlarmKind.ACTUATOR_ERROR, 2), (AlarmKind.ACTUATOR_ERROR, 4)]
    assert "Neuron did not answer on /neuron/mqtt-north/write/resp within 300 ms" in alarms[0].message
    assert alarms[0].result_id == "r-2"
    # The alarm stays latched after the gateway is back, until the operator resets it.
    assert [a.kind for a in tracker.active_alarms] == [AlarmKind.ACTUATOR_ERROR]
    records = list(read_audit(next(tmp_path.glob("*.jsonl"))))
    assert sorted(r["part_number"] for r in records if r["event"] == "miss") == [2, 4]
    assert sorted(r["part_number"] for r in records if r["event"] == "fire") == [1, 5]
