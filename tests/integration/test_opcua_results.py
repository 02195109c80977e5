"""The station's OPC UA server as the MES sees it: an asyncua client logs in over Basic256Sha256 SignAndEncrypt
with a user name and password and reads the system state and each camera's latest result (OPC 40100 types)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from lineinspect.core.result import ResultSinks, Verdict
from lineinspect.line.capture.supervisor import CameraState
from lineinspect.line.opcua_results.server import MACHINE_VISION_URI, OpcUaResultServer
from lineinspect.line.opcua_results.settings import OpcUaServerSettings
from tests.helpers.certs import OpcUaCertificates, make_opcua_certs
from tests.helpers.line_results import line_result
from tests.helpers.mosquitto import Mosquitto, free_port
from tests.helpers.station_runtime import running_station, subscribed, write_line_station

pytest.importorskip("asyncua")

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

NODESET = Path(__file__).resolve().parents[3] / "shared" / "vendor" / "opcua" / "Opc.Ua.MachineVision.NodeSet2.xml"
CLIENT_URI = "urn:test:mes"


def server_section(certs: OpcUaCertificates, nodeset: Path, *, password_env: str = "MES_PW") -> dict[str, Any]:
    """station.yaml's opcua_server: a free port, the server's certificate, one user `mes`."""
    return {
        "port": free_port(),
        "nodeset_file": str(nodeset),
        "certificate_file": str(certs.server_cert),
        "private_key_file": str(certs.server_key),
        "users": [{"username": "mes", "password_env": password_env}],
    }


@pytest.fixture
def certs(tmp_path: Path) -> OpcUaCertificates:
    return make_opcua_certs(tmp_path / "pki", server_uri="urn:lineinspect:st1", client_uri=CLIENT_URI)


@pytest.fixture
def served(certs: OpcUaCertificates) -> Iterator[tuple[OpcUaResultServer, dict[str, CameraState]]]:
    if not NODESET.is_file():
        pytest.skip(f"{NODESET} not found (the MachineVision NodeSet2 of shared/vendor/opcua)")
    settings = OpcUaServerSettings.model_validate(server_section(certs, NODESET))
    states = {"cam1": CameraState.CONNECTED, "cam2": CameraState.LOST}
    server = OpcUaResultServer(
        settings,
        files=settings.files(Path("/")),
        passwords=settings.passwords({"MES_PW": "s3cret"}),
        station_id="st1",
        station_path="acme/s1/a1/l1/cell1/lineinspect/st1",
        run_id="run-1",
        camera_ids=["cam1", "cam2"],
        camera_states=lambda: dict(states),
    )
    server.start()
    try:
        assert server.ready.wait(30), "the OPC UA server did not start"
        yield server, states
    finally:
        server.close()


async def _read(
    server: OpcUaResultServer,
    certs: OpcUaCertificates,
    password: str,
    *,
    station_id: str = "st1",
    cameras: tuple[str, ...] = ("cam1", "cam2"),
) -> dict[str, Any]:
    client = Client(server.endpoint, timeout=10)
    client.application_uri = CLIENT_URI
    client.set_user("mes")
    client.set_password(password)
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certs.client_cert),
        str(certs.client_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    async with client:
        await client.load_data_type_definitions()
        mv = await client.get_namespace_index(MACHINE_VISION_URI)
        ns = await client.get_namespace_index(f"urn:lineinspect:{station_id}")
        station = await client.nodes.objects.get_child(f"{ns}:{station_id}")
        seen: dict[str, Any] = {"station_state": await (await station.get_child(f"{ns}:SystemState")).read_value()}
        for camera in cameras:
            system = await station.get_child([f"{ns}:Cameras", f"{ns}:{camera}"])
            latest = await system.get_child([f"{mv}:ResultManagement", f"{mv}:Results", f"{ns}:LatestResult"])
            seen[camera] = {
                "state": await (await system.get_child(f"{mv}:SystemState")).read_value(),
                "result": await latest.read_value(),
                "verdict": await (await latest.get_child(f"{ns}:Verdict")).read_value(),
                "part_id": await (await latest.get_child(f"{mv}:PartId")).read_value(),
            }
        return seen


def test_mes_reads_state_and_latest_result_per_camera_when_logged_in(
    served: tuple[OpcUaResultServer, dict[str, CameraState]], certs: OpcUaCertificates
) -> None:
    # given results of two cameras delivered through the station's sinks (the latest of cam1 wins)
    server, _states = served
    sinks = ResultSinks([server])
    first = line_result(camera="cam1", part_id="A1", sequence=1)
    latest_cam1 = line_result(camera="cam1", verdict=Verdict.FAIL, part_id="A2", sequence=3)
    cam2 = line_result(camera="cam2", verdict=Verdict.UNDECIDED, part_id="B1", sequence=2)
    for result in (first, cam2, latest_cam1):
        sinks(result)

    # when the MES reads them (the server writes within its poll period)
    def read() -> dict[str, Any]:
        return asyncio.run(_read(server, certs, "s3cret"))

    seen = read()
    for _ in range(20):
        if seen["cam1"]["result"].ResultId.Id == latest_cam1.result_id and seen["cam2"]["result"].ResultId.Id:
            break
        seen = read()

    # then each camera shows its latest result in the MachineVision ResultDataType, and its system state
    one, two = seen["cam1"], seen["cam2"]
    assert one["result"].ResultId.Id == latest_cam1.result_id
    assert one["result"].ResultState == 1  # Completed: the part was judged
    assert one["result"].PartId.Id == "A2"
    assert one["result"].InternalRecipeId.Id == "bracket"
    created = one["result"].CreationTime
    assert (created if created.tzinfo else created.replace(tzinfo=UTC)) == latest_cam1.decided_at
    assert one["result"].ProcessingTimes.ProcessingDuration == pytest.approx(15.0)
    assert json.loads(one["result"].ResultContent[0].Value)["result_id"] == latest_cam1.result_id
    assert one["verdict"] == "fail"
    assert one["part_id"].Id == "A2"
    assert two["result"].ResultId.Id == cam2.result_id
    assert two["result"].ResultState == 4  # Failed: no verdict (undecided)
    assert two["verdict"] == "undecided"
    assert one["state"].State == 1  # PRD: camera connected
    assert two["state"].State == 5  # UDT: camera lost
    assert "lost" in two["state"].StateDescription
    assert seen["station_state"].State == 5  # a camera down: the station is down


def test_wrong_password_is_refused(
    served: tuple[OpcUaResultServer, dict[str, CameraState]], certs: OpcUaCertificates
) -> None:
    server, _ = served
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        asyncio.run(_read(server, certs, "wrong"))


def test_unsecured_connection_is_refused(served: tuple[OpcUaResultServer, dict[str, CameraState]]) -> None:
    server, _ = served

    async def anonymous() -> None:
        async with Client(server.endpoint, timeout=5) as client:
            await client.nodes.objects.read_browse_name()

    with pytest.raises(Exception, match=r"No matching endpoints|Bad"):
        asyncio.run(anonymous())


def test_server_failure_raises_its_alarm_and_never_reaches_the_sink(certs: OpcUaCertificates, tmp_path: Path) -> None:
    # given a nodeset file that is not one
    broken = tmp_path / "broken.xml"
    broken.write_text("<not a nodeset/>", encoding="utf-8")
    settings = OpcUaServerSettings.model_validate(server_section(certs, broken))
    alarms: list[tuple[str, str]] = []
    server = OpcUaResultServer(
        settings,
        files=settings.files(Path("/")),
        passwords={"mes": "x"},
        station_id="st1",
        station_path="p",
        run_id="r",
        camera_ids=["cam1"],
        camera_states=dict,
        on_alarm=lambda kind, message: alarms.append((kind, message)),
    )
    server.start()
    try:
        from tests.helpers.waiting import wait_for

        wait_for(lambda: bool(alarms), 30, "the server_failed alarm")
        # when results keep coming, then the sink takes them at once (the line never waits for the server)
        for i in range(1000):
            server(line_result(camera="cam1", sequence=i))
    finally:
        server.close()
    assert alarms[0][0] == "server_failed"
    assert "nodeset_file" in alarms[0][1]


def test_a_running_station_shows_each_part_it_published_as_the_latest_result(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """station.yaml's opcua_server on a running station: the OPC UA latest result is the one the MES got on MQTT."""
    if not NODESET.is_file():
        pytest.skip(f"{NODESET} not found (the MachineVision NodeSet2 of shared/vendor/opcua)")
    certs = make_opcua_certs(tmp_path / "pki", server_uri="urn:lineinspect:teststation", client_uri=CLIENT_URI)
    monkeypatch.setenv("LINEINSPECT_TEST_MES_PW", "s3cret")
    section = server_section(certs, NODESET, password_env="LINEINSPECT_TEST_MES_PW")
    expected = write_line_station(tmp_path / "station", mosquitto.port, parts="gb", opcua_server=section)
    with subscribed(mosquitto.port) as mes, running_station(tmp_path / "station") as station:
        server = next(o for o in station.outputs if isinstance(o, OpcUaResultServer))
        assert server.ready.wait(30), "the station's OPC UA server did not start"
        for part_id in ("P-1", "P-2"):
            station.trigger("cam1", part_id=part_id)
        mes.wait_until(lambda: len(mes.received("/result")) == len(expected), 20, "both results on MQTT")
        last = mes.received("/result")[-1].json()
        seen: dict[str, Any] = {}
        for _ in range(40):  # the server takes the latest result within its poll period
            seen = asyncio.run(_read(server, certs, "s3cret", station_id="teststation", cameras=("cam1",)))
            if seen["cam1"]["result"].ResultId.Id == last["result_id"]:
                break
            time.sleep(0.1)
    assert seen["cam1"]["result"].ResultId.Id == last["result_id"]
    assert seen["cam1"]["part_id"].Id == "P-2"
    assert seen["cam1"]["verdict"] == last["verdict"] == expected[-1]
    assert seen["cam1"]["state"].State == 1  # PRD: the camera is connected
