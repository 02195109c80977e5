"""PLC trigger over Modbus TCP against pymodbus' own server, into a running station, results at the MES."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lineinspect.assemble import build_plc_triggers, build_station
from lineinspect.config import load_station, parse_station
from lineinspect.errors import ConfigError
from lineinspect.line.plc_trigger.trigger import TriggerState
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.plc_trigger_peers import (
    ALARM_SOURCE,
    CODES,
    PART_ID_REGISTER,
    RECIPES,
    ModbusLine,
    RecipeCalls,
    ascii_words,
    camera_connected,
    modbus_source,
    plc_alarm_kinds,
    plc_triggered,
    running_trigger_plc,
    uint32_words,
    write_plc_station,
)
from tests.helpers.reject_peers import ModbusPlc, running_modbus_plc
from tests.helpers.station_runtime import running_station, subscribed, write_line_station
from tests.helpers.subscriber import Subscriber
from tests.helpers.waiting import wait_for


def results(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.received("/result")]


def test_each_plc_edge_is_one_result_with_the_plcs_part_id_and_product_codes_select_recipes(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with running_modbus_plc() as plc:
        write_plc_station(tmp_path, mosquitto.port, modbus_source(plc.port))
        select = RecipeCalls()
        line = ModbusLine(plc)
        # 12 parts: product 1, then 2, then an unknown 9, then 1 again.
        codes = [1, 1, 1, 2, 2, 2, 9, 9, 1, 1, 1, 1]
        part_ids = [f"A-{i:04d}" for i in range(len(codes))]
        acked: list[int] = []
        unknown_alarm_seen = False
        try:
            with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
                wait_for(lambda: camera_connected(station), 5, "camera connected")
                with plc_triggered(tmp_path, station, select) as trigger:
                    wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 5, "PLC connected")
                    for part_id, code in zip(part_ids, codes, strict=True):
                        acked.append(line.handshake(ascii_words(part_id, 8), product_code=code))
                        if code == 9:
                            unknown_alarm_seen |= "unknown_product_code" in plc_alarm_kinds(station)
                    sub.wait_until(lambda: len(sub.received("/result")) >= len(codes), 10, "every result arrived")
                    status = trigger.status()
                    kinds_at_end = plc_alarm_kinds(station)
                alarms = [m.json() for m in sub.received("/alarm") if m.json()["source"] == ALARM_SOURCE]
        finally:
            line.close()
    bodies = results(sub)
    assert [b["part_id"] for b in bodies] == part_ids, "one result per edge, in order, with the PLC's part id"
    assert [b["trigger_id"] for b in bodies] == acked, "the PLC was told each part's trigger id"
    assert len({b["result_id"] for b in bodies}) == len(codes)
    # A changed code selects its recipe before its part; an unchanged code calls nothing; 9 is unknown.
    assert select.calls == [("cam1", "part-a"), ("cam1", "part-b"), ("cam1", "part-a")]
    assert unknown_alarm_seen and "unknown_product_code" not in kinds_at_end
    unknown = [a for a in alarms if a["kind"] == "unknown_product_code"]
    assert [a["active"] for a in unknown] == [True, False]
    assert "code '9'" in unknown[0]["message"] and "plc_triggers[0].product_codes" in unknown[0]["message"]
    assert status.triggers == len(codes) and status.missed == 0 and status.mode == "poll"


def test_a_product_code_switches_the_station_recipe_from_its_own_part_on(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running_modbus_plc() as plc:
        write_plc_station(tmp_path, mosquitto.port, modbus_source(plc.port))
        line = ModbusLine(plc)
        codes = [1, 1, 2, 2, 1]
        try:
            with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
                wait_for(lambda: camera_connected(station), 5, "camera connected")
                with plc_triggered(tmp_path, station) as trigger:  # the station's own changeover
                    wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 5, "PLC connected")
                    for i, code in enumerate(codes):
                        line.handshake(ascii_words(f"C-{i}", 8), product_code=code)
                    sub.wait_until(lambda: len(sub.received("/result")) >= len(codes), 10, "every result arrived")
                changes = [m.json() for m in sub.received("/changeover") if m.json()["action"] == "select"]
        finally:
            line.close()
    assert [b["recipe"]["id"] for b in results(sub)] == [CODES[c] for c in codes]
    # The first code is a selection too (the trigger knows no code before it), then each change.
    assert [(c["source"], c["recipe_id"]) for c in changes] == [("plc", "part-a"), ("plc", "part-b"), ("plc", "part-a")]


def test_numeric_part_ids_from_a_pulsed_bit_and_a_counter_jump_is_an_alarm_that_clears(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    source = modbus_source(
        0,  # set below
        part_id={"address": PART_ID_REGISTER, "format": "uint32"},
        ack_coil=None,
        ack_trigger_id_register=None,
    )
    with running_trigger_plc() as plc:
        source["port"] = plc.port
        write_plc_station(tmp_path, mosquitto.port, source, missed_clear_after_parts=2)
        line = ModbusLine(plc)
        numbers = [70001, 70002, 70003, 70010, 70011, 70012]
        # The PLC counted 2 parts that never raised the trigger between 3 and 4 (counter 3 → 6).
        counters = [1, 2, 3, 6, 7, 8]
        missed_alarm: list[bool] = []
        try:
            with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
                wait_for(lambda: camera_connected(station), 5, "camera connected")
                with plc_triggered(tmp_path, station) as trigger:
                    wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 5, "PLC connected")
                    for i, (number, counter) in enumerate(zip(numbers, counters, strict=True)):
                        # A PLC without a handshake: a pulse held until the station has taken it.
                        line.set_part(uint32_words(number), product_code=1, counter=counter)
                        line.raise_trigger()
                        wait_for(lambda i=i: trigger.status().triggers == i + 1, 5, f"part {i} taken")
                        line.lower_trigger()
                        line.held_for_polls()
                        missed_alarm.append("missed_triggers" in plc_alarm_kinds(station))
                    sub.wait_until(lambda: len(sub.received("/result")) >= len(numbers), 10, "every result arrived")
                    status = trigger.status()
                alarms = [m.json() for m in sub.received("/alarm") if m.json()["kind"] == "missed_triggers"]
        finally:
            line.close()
    assert [b["part_id"] for b in results(sub)] == [str(n) for n in numbers]
    # Raised at the jump, cleared after two parts in a row; the missed parts were not triggered.
    assert missed_alarm == [False, False, False, True, True, False]
    assert status.missed == 2 and status.triggers == len(numbers)
    assert [a["active"] for a in alarms] == [True, False]
    assert "went from 3 to 6: 2 part(s)" in alarms[0]["message"]


def test_plc_lost_mid_run_is_an_alarm_and_parts_flow_again_when_it_is_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    plc = ModbusPlc()
    plc.start()
    write_plc_station(tmp_path, mosquitto.port, modbus_source(plc.port), reconnect={"min_ms": 50, "max_ms": 200})
    line = ModbusLine(plc)
    try:
        with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
            wait_for(lambda: camera_connected(station), 5, "camera connected")
            with plc_triggered(tmp_path, station) as trigger:
                wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 5, "PLC connected")
                for i in range(3):
                    line.handshake(ascii_words(f"B-{i}", 8), product_code=1)
                line.close()
                plc.stop()
                wait_for(lambda: "plc_unreachable" in plc_alarm_kinds(station), 5, "lost PLC raised an alarm")
                assert trigger.status().state in (TriggerState.LOST, TriggerState.CONNECTING)
                status_alarms = station.status().to_payload()["alarms"]
                assert any(a["kind"] == "plc_unreachable" and a["source"] == ALARM_SOURCE for a in status_alarms)
                # The PLC is back (powered up again: empty memory) on the same address.
                plc = ModbusPlc(port=plc.port)
                plc.start()
                line = ModbusLine(plc)
                wait_for(lambda: "plc_unreachable" not in plc_alarm_kinds(station), 5, "alarm cleared on reconnect")
                wait_for(lambda: trigger.status().state is TriggerState.CONNECTED, 5, "PLC connected again")
                for i in range(3, 6):
                    line.handshake(ascii_words(f"B-{i}", 8), product_code=1)
                sub.wait_until(lambda: len(sub.received("/result")) >= 6, 10, "every result arrived")
    finally:
        line.close()
        plc.stop()
    assert [b["part_id"] for b in results(sub)] == [f"B-{i}" for i in range(6)]
    raised = [m.json() for m in sub.received("/alarm") if m.json()["kind"] == "plc_unreachable"]
    assert [a["active"] for a in raised] == [True, False], "one alarm per outage, then its clear"
    assert "PLC trigger lost" in raised[0]["message"] and f"modbus 127.0.0.1:{plc.port}" in raised[0]["message"]


def test_station_starts_without_its_plc_and_says_so(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_plc_station(tmp_path, mosquitto.port, modbus_source(1))  # nothing listens on port 1
    with running_station(tmp_path) as station, plc_triggered(tmp_path, station) as trigger:
        wait_for(lambda: "plc_unreachable" in plc_alarm_kinds(station), 5, "unreachable PLC raised an alarm")
        message = next(a.message for a in station.events.active_alarms if a.kind == "plc_unreachable")
        assert station.status().station.state == "running"
    assert "127.0.0.1:1" in message and "plc_triggers[0].source.host" in message
    assert trigger.status().state is TriggerState.STOPPED


# ----------------------------------------------------------------------------- settings a user gets wrong


def station_yaml(tmp_path: Path, mosquitto_port: int, *, camera: dict[str, Any] | None = None, **entry: Any) -> Path:
    write_line_station(
        tmp_path,
        mosquitto_port,
        camera=camera,
        recipes=RECIPES,
        plc_triggers=[{"camera": "cam1", "source": modbus_source(1502), **entry}],
    )
    return tmp_path


def test_a_camera_that_is_not_software_triggered_is_refused_naming_file_and_field(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    station_yaml(tmp_path, mosquitto.port, camera={"acquisition": {"trigger": {"mode": "free_run"}}})
    station = build_station(tmp_path, load_station(tmp_path))
    try:
        with pytest.raises(ConfigError) as err:
            build_plc_triggers(load_station(tmp_path), station, None, station.events, station_dir=tmp_path)
    finally:
        station.stop()
    message = str(err.value)
    assert f"{tmp_path / 'station.yaml'}: plc_triggers[0].camera 'cam1' has trigger mode free_run" in message
    assert f"{tmp_path / 'cameras'}/cam1.yaml acquisition.trigger.mode" in message


def test_an_unknown_camera_is_refused_with_the_cameras_there_are(tmp_path: Path, mosquitto: Mosquitto) -> None:
    station_yaml(tmp_path, mosquitto.port)
    config = load_station(tmp_path).model_copy()
    config.plc_triggers[0].camera = "cam9"
    station = build_station(tmp_path, config)
    try:
        with pytest.raises(ConfigError, match=r"plc_triggers\[0\]\.camera 'cam9' is not a camera of this station"):
            build_plc_triggers(config, station, None, station.events, station_dir=tmp_path)
    finally:
        station.stop()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"trigger_input": 4}, "set exactly one of trigger_coil or trigger_input"),
        ({"part_id": {"address": 10, "format": "ascii"}}, "format ascii needs count"),
        ({"part_id": {"address": 10, "format": "uint32", "count": 2}}, "count is for format ascii only"),
        ({"product_code": {"address": 12}}, "part_id (registers 10..17) and product_code (registers 12..12) overlap"),
        ({"part_counter": {"address": 21, "format": "ascii", "count": 2}}, "part_counter.format must be uint16"),
        ({"poll_ms": 0}, "poll_ms"),
    ],
)
def test_bad_register_maps_are_refused_at_load_naming_the_field(change: dict[str, Any], says: str) -> None:
    raw = {
        "recipes": RECIPES,
        "plc_triggers": [{"camera": "cam1", "source": modbus_source(502, **change)}],
    }
    with pytest.raises(ConfigError) as err:
        parse_station(yaml.safe_load(yaml.safe_dump(raw)), "station.yaml")
    message = str(err.value)
    assert "station.yaml" in message and "plc_triggers" in message
    assert says in message


def test_product_codes_must_name_recipes_of_the_station() -> None:
    raw = {
        "recipes": RECIPES,
        "plc_triggers": [{"camera": "cam1", "source": modbus_source(502), "product_codes": {7: "part-z"}}],
    }
    with pytest.raises(ConfigError, match=r"plc_triggers\[0\]\.product_codes: code '7' names recipe 'part-z'"):
        parse_station(raw, "station.yaml")
