"""station.yaml `opcua_server:` and `sparkplug:`: bad settings give errors naming the field, and the pure parts
(SEMI E10 states, the Sparkplug payload) behave as a MES or SCADA host reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lineinspect.config import load_station
from lineinspect.errors import ConfigError
from lineinspect.line.opcua_results.settings import OpcUaServerSettings
from lineinspect.line.sparkplug.node import BrokerLink, SparkplugNode
from lineinspect.line.sparkplug.payload import DataType, Metric, decode, encode
from tests.helpers.line_results import line_result

MINIMAL: dict[str, Any] = {"recipes": [{"id": "a", "model": "default"}]}
OPCUA = {
    "nodeset_file": "Opc.Ua.MachineVision.NodeSet2.xml",
    "certificate_file": "pki/server.der",
    "private_key_file": "pki/server.pem",
    "users": [{"username": "mes", "password_env": "MES_PW"}],
}


def _load(tmp_path: Path, **sections: Any) -> None:
    (tmp_path / "station.yaml").write_text(yaml.safe_dump({**MINIMAL, **sections}), encoding="utf-8")
    load_station(tmp_path)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"opcua_server": {**OPCUA, "anonymous": True}}, "opcua_server.anonymous"),
        ({"opcua_server": {**OPCUA, "users": []}}, "opcua_server.users"),
        ({"opcua_server": {k: v for k, v in OPCUA.items() if k != "nodeset_file"}}, "opcua_server.nodeset_file"),
        (
            {"opcua_server": {**OPCUA, "users": [OPCUA["users"][0], OPCUA["users"][0]]}},
            "user names must be unique",
        ),
        ({"opcua_server": {**OPCUA, "port": 0}}, "opcua_server.port"),
        ({"sparkplug": {"group_id": "plant1", "qos": 1}}, "sparkplug.qos"),
        ({"sparkplug": {}}, "sparkplug.group_id"),
        ({"sparkplug": {"group_id": "plant/1"}}, "sparkplug.group_id"),
        ({"sparkplug": {"group_id": "p", "edge_node_id": "st#1"}}, "sparkplug.edge_node_id"),
        ({"sparkplug": {"group_id": "p", "username": "scada"}}, "username and tls go with host"),
    ],
)
def test_bad_output_settings_name_the_field(tmp_path: Path, sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"station\.yaml") as refused:
        _load(tmp_path, **sections)
    assert message in str(refused.value)


def test_opcua_server_refuses_missing_files_and_passwords_by_field(tmp_path: Path) -> None:
    settings = OpcUaServerSettings.model_validate(OPCUA)
    with pytest.raises(ConfigError, match=r"opcua_server\.nodeset_file: .*not found"):
        settings.files(tmp_path)
    with pytest.raises(ConfigError, match=r"opcua_server\.users: no password set for mes \(\$MES_PW\)"):
        settings.passwords({})
    assert settings.passwords({"MES_PW": "pw"}) == {"mes": "pw"}


def test_system_state_follows_the_cameras() -> None:
    pytest.importorskip("asyncua")
    from lineinspect.line.capture.supervisor import CameraState
    from lineinspect.line.opcua_results.server import SemiE10State, station_state, system_state

    assert system_state(CameraState.CONNECTED) == (SemiE10State.PRODUCTION, "PRD camera connected")
    assert system_state(CameraState.LOST)[0] is SemiE10State.UNSCHEDULED_DOWNTIME
    assert station_state([SemiE10State.PRODUCTION, SemiE10State.PRODUCTION]) is SemiE10State.PRODUCTION
    assert station_state([SemiE10State.PRODUCTION, SemiE10State.STANDBY]) is SemiE10State.STANDBY
    assert station_state([SemiE10State.PRODUCTION, SemiE10State.UNSCHEDULED_DOWNTIME]) is (
        SemiE10State.UNSCHEDULED_DOWNTIME
    )


def test_sparkplug_payload_round_trip_keeps_types_nulls_and_utc_times() -> None:
    at = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
    data = encode(
        [
            Metric("bdSeq", DataType.UINT64, 255),
            Metric("Result/Part Id", DataType.STRING, None),
            Metric("Result/Decided At", DataType.DATETIME, at),
            Metric("Result/Score", DataType.DOUBLE, 0.25),
        ],
        timestamp_ms=1,
        seq=None,
    )
    decoded = decode(data)
    assert decoded.seq is None
    assert decoded.metrics == {
        "bdSeq": 255,
        "Result/Part Id": None,
        "Result/Decided At": 1714543200000,
        "Result/Score": 0.25,
    }
    assert decoded.datatypes["Result/Decided At"] == DataType.DATETIME
    with pytest.raises(ValueError, match="UTC"):
        encode([Metric("t", DataType.DATETIME, datetime(2024, 5, 1))], timestamp_ms=1, seq=0)  # noqa: DTZ001
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        decode(b"\xff\xff\xff")


def test_sparkplug_sink_never_waits_and_counts_what_it_drops() -> None:
    # given a node whose broker is not there (never started): the sink must still take every result at once
    node = SparkplugNode(
        BrokerLink("127.0.0.1", 1, "x"),
        group_id="g",
        edge_node_id="n",
        camera_ids=["cam1"],
        station_path="p",
        queue_results=10,
    )
    for i in range(25):
        node(line_result(camera="cam1", sequence=i))
    node(line_result(camera=None))  # an upload: not a device of the node
    assert node.stats().dropped_full == 15
