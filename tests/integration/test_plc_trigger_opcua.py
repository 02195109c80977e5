"""PLC trigger over OPC UA against asyncua's own server, into a running station, results at the MES."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lineinspect.config import parse_station
from lineinspect.errors import ConfigError
from lineinspect.line.plc_trigger.trigger import PlcTrigger, TriggerState
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.plc_trigger_peers import (
    ALARM_SOURCE,
    CODES,
    RECIPES,
    OpcUaLinePlc,
    RecipeCalls,
    camera_connected,
    opcua_source,
    plc_alarm_kinds,
    plc_triggered,
    running_opcua_line,
    write_plc_station,
)
from tests.helpers.station_runtime import running_station, subscribed
from tests.helpers.subscriber import Subscriber
from tests.helpers.waiting import wait_for


def results(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.received("/result")]


def test_subscribed_trigger_gives_one_result_per_edge_with_the_plcs_part_id_and_selects_recipes(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    codes = [1, 1, 2, 2, 2, 7, 1, 1, 2, 2]
    part_ids = [f"SN-{i:03d}/x" for i in range(len(codes))]
    select = RecipeCalls()
    unknown_seen = False
    with running_opcua_line() as plc:
        write_plc_station(tmp_path, mosquitto.port, opcua_source(plc.endpoint))
        with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
            wait_for(lambda: camera_connected(station), 5, "camera connected")
            with plc_triggered(tmp_path, station, select) as trigger:
                wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 10, "PLC connected")
                acked = []
                for part_id, code in zip(part_ids, codes, strict=True):
                    acked.append(plc.handshake(part_id, product_code=code))
                    if code == 7:
                        unknown_seen = "unknown_product_code" in plc_alarm_kinds(station)
                sub.wait_until(lambda: len(sub.received("/result")) >= len(codes), 10, "every result arrived")
                status = trigger.status()
                kinds_at_end = plc_alarm_kinds(station)
    bodies = results(sub)
    assert status.mode == "subscription", "the server supports subscriptions: no polling"
    assert [b["part_id"] for b in bodies] == part_ids
    assert [b["trigger_id"] for b in bodies] == acked
    assert len({b["result_id"] for b in bodies}) == len(codes)
    assert select.calls == [("cam1", "part-a"), ("cam1", "part-b"), ("cam1", "part-a"), ("cam1", "part-b")]
    assert unknown_seen and "unknown_product_code" not in kinds_at_end
    assert status.triggers == len(codes) and status.missed == 0


def test_a_server_that_refuses_subscriptions_is_polled_and_short_pulses_are_not_merged(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with running_opcua_line(refuse_subscriptions=True) as plc:
        source = opcua_source(plc.endpoint, ack_node=None, ack_trigger_id_node=None, poll_ms=2)
        write_plc_station(tmp_path, mosquitto.port, source)
        with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
            wait_for(lambda: camera_connected(station), 5, "camera connected")
            with plc_triggered(tmp_path, station) as trigger:
                wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 10, "PLC connected")
                for i in range(5):
                    plc.set_part(f"P{i}", product_code=1)
                    plc.write(Trigger=True)
                    wait_for(lambda i=i: trigger.status().triggers == i + 1, 5, f"part {i} taken")
                    plc.write(Trigger=False)
                    # No ack: the PLC holds the bit low for longer than a poll (the test waits for the poll).
                    wait_for(lambda: plc_polled_low(trigger), 5, "the poll saw the trigger low")
                sub.wait_until(lambda: len(sub.received("/result")) >= 5, 10, "every result arrived")
                mode = trigger.status().mode
    assert mode == "poll"
    assert [b["part_id"] for b in results(sub)] == [f"P{i}" for i in range(5)]


def plc_polled_low(trigger: PlcTrigger) -> bool:
    edges = trigger.plc._edges  # type: ignore[attr-defined]
    return edges.last is False


def test_plc_server_stopped_mid_run_is_an_alarm_and_parts_flow_again_after_it_restarts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    plc = OpcUaLinePlc()
    plc.start()
    write_plc_station(
        tmp_path, mosquitto.port, opcua_source(plc.endpoint, timeout_ms=500), reconnect={"min_ms": 100, "max_ms": 300}
    )
    try:
        with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
            wait_for(lambda: camera_connected(station), 5, "camera connected")
            with plc_triggered(tmp_path, station) as trigger:
                wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 10, "PLC connected")
                for i in range(2):
                    plc.handshake(f"C{i}", product_code=1)
                plc.stop()
                wait_for(lambda: "plc_unreachable" in plc_alarm_kinds(station), 8, "lost PLC raised an alarm")
                assert any(a["source"] == ALARM_SOURCE for a in station.status().to_payload()["alarms"])
                plc = OpcUaLinePlc(port=plc.port)
                plc.start()
                wait_for(lambda: "plc_unreachable" not in plc_alarm_kinds(station), 10, "alarm cleared on reconnect")
                assert trigger.status().mode == "subscription"
                for i in range(2, 4):
                    plc.handshake(f"C{i}", product_code=1)
                sub.wait_until(lambda: len(sub.received("/result")) >= 4, 10, "every result arrived")
    finally:
        plc.stop()
    assert [b["part_id"] for b in results(sub)] == [f"C{i}" for i in range(4)]
    raised = [m.json() for m in sub.received("/alarm") if m.json()["kind"] == "plc_unreachable"]
    assert [a["active"] for a in raised] == [True, False]


def test_a_wrong_node_id_is_an_alarm_naming_the_field(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running_opcua_line() as plc:
        write_plc_station(tmp_path, mosquitto.port, opcua_source(plc.endpoint, part_id_node="ns=2;s=Line.NoSuchNode"))
        with running_station(tmp_path) as station, plc_triggered(tmp_path, station) as trigger:
            wait_for(lambda: "plc_unreachable" in plc_alarm_kinds(station), 10, "alarm raised")
            message = next(a.message for a in station.events.active_alarms if a.source == ALARM_SOURCE)
            assert trigger.status().state is not TriggerState.CONNECTED
    assert "plc_triggers[0].source.part_id_node 'ns=2;s=Line.NoSuchNode' cannot be read" in message


def test_product_codes_without_a_product_code_node_are_refused() -> None:
    source = opcua_source("opc.tcp://127.0.0.1:4840", product_code_node=None)
    raw = {"recipes": RECIPES, "plc_triggers": [{"camera": "cam1", "source": source, "product_codes": CODES}]}
    with pytest.raises(ConfigError, match=r"product_codes is set but source\.product_code_node is not"):
        parse_station(raw, "station.yaml")
