"""The Sparkplug B edge node against a real Mosquitto, as a SCADA host's decoding subscriber sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.core.result import ResultSinks, Verdict
from lineinspect.line.sparkplug.node import REBIRTH, BrokerLink, SparkplugNode
from lineinspect.line.sparkplug.payload import DataType, Decoded, Metric, decode, encode
from tests.helpers.line_results import line_result
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, NODE = "plant1", "st1"


class ScadaHost:
    """Subscribes to the group and decodes every message: (message type, device or None, payload), in order."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, str | None, Decoded]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="scada-host")
        self.client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the SCADA host did not subscribe"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        with self._lock:
            self.messages.append((parts[2], parts[4] if len(parts) > 4 else None, decode(bytes(message.payload))))

    def of(self, kind: str) -> list[tuple[str, str | None, Decoded]]:
        with self._lock:
            return [m for m in self.messages if m[0] == kind]

    def rebirth(self) -> None:
        payload = encode([Metric(REBIRTH, DataType.BOOLEAN, True)], timestamp_ms=0, seq=None)
        self.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _node(port: int) -> SparkplugNode:
    link = BrokerLink("127.0.0.1", port, "station-spb", keepalive_s=5)
    return SparkplugNode(
        link,
        group_id=GROUP,
        edge_node_id=NODE,
        camera_ids=["cam1", "cam2"],
        station_path="acme/st1",
        queue_results=1000,
    )


def test_births_then_data_in_order_with_seq_wrapping_and_rebirth(mosquitto: Mosquitto) -> None:
    scada = ScadaHost(mosquitto.port)
    node = _node(mosquitto.port)
    node.start()
    try:
        # given the node's births
        wait_for(lambda: len(scada.of("DBIRTH")) == 2, 10, "NBIRTH and both DBIRTHs")
        nbirth = scada.of("NBIRTH")[0][2]
        assert nbirth.seq == 0 and nbirth.metrics["bdSeq"] == 0 and nbirth.metrics[REBIRTH] is False
        assert nbirth.datatypes["bdSeq"] == DataType.UINT64
        births = scada.messages[:3]
        assert [(k, d) for k, d, _ in births] == [("NBIRTH", None), ("DBIRTH", "cam1"), ("DBIRTH", "cam2")]
        assert births[1][2].metrics["Result/Verdict"] is None  # nothing inspected yet: null, typed
        assert births[1][2].datatypes["Result/Verdict"] == DataType.STRING

        # when 300 results arrive through the station's sinks
        sinks = ResultSinks([node])
        results = [
            line_result(
                camera="cam1" if i % 3 else "cam2",
                verdict=Verdict.FAIL if i % 7 == 0 else Verdict.PASS,
                part_id=f"P{i}",
                sequence=i,
            )
            for i in range(300)
        ]
        for result in results:
            sinks(result)
        wait_for(lambda: len(scada.of("DDATA")) == 300, 20, "300 DDATA")

        # then one DDATA each, in order, each on its camera's device, seq counting on from the births, wrapping
        data = scada.of("DDATA")
        assert [d.metrics["Result/Id"] for _, _, d in data] == [r.result_id for r in results]
        assert [dev for _, dev, _ in data] == [r.camera_id for r in results]
        seqs = [m[2].seq for m in scada.messages]
        assert seqs == [i % 256 for i in range(len(seqs))]
        assert data[-1][2].metrics["Result/Part Id"] == "P299"
        assert data[0][2].metrics["Result/Verdict"] == "fail"

        # when the SCADA host asks for a rebirth, then births come again with the same bdSeq and seq from 0
        before = len(scada.messages)
        scada.rebirth()
        wait_for(lambda: len(scada.of("DBIRTH")) == 4, 10, "rebirth")
        again = [m for m in scada.messages[before:] if m[0] != "NCMD"]  # the host hears its own command too
        assert [k for k, _, _ in again[:3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
        assert again[0][2].seq == 0 and again[0][2].metrics["bdSeq"] == 0
        cam1 = next(d for k, dev, d in again if dev == "cam1")
        assert cam1.metrics["Result/Id"] == results[-1].result_id  # the latest result in the DBIRTH
        assert node.stats().births == 2
    finally:
        node.close()
        scada.close()


def test_clean_stop_sends_ndeath_with_the_births_bdseq(mosquitto: Mosquitto) -> None:
    scada = ScadaHost(mosquitto.port)
    node = _node(mosquitto.port)
    node.start()
    try:
        wait_for(lambda: len(scada.of("DBIRTH")) == 2, 10, "births")
    finally:
        node.close()
    try:
        wait_for(lambda: len(scada.of("NDEATH")) == 1, 5, "NDEATH on stop")
        death = scada.of("NDEATH")[0][2]
        assert death.seq is None
        assert death.metrics["bdSeq"] == scada.of("NBIRTH")[0][2].metrics["bdSeq"]
    finally:
        scada.close()


NODE_PROCESS = """
import sys, time
from lineinspect.line.sparkplug.node import BrokerLink, SparkplugNode
node = SparkplugNode(BrokerLink("127.0.0.1", int(sys.argv[1]), "killed-station", keepalive_s=5),
                     group_id="plant1", edge_node_id="st1", camera_ids=["cam1"], station_path="acme/st1")
node.start()
time.sleep(60)
"""


def test_death_certificate_is_delivered_when_the_station_dies(mosquitto: Mosquitto) -> None:
    # given a station process that is born on the broker
    scada = ScadaHost(mosquitto.port)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
    proc = subprocess.Popen([sys.executable, "-c", NODE_PROCESS, str(mosquitto.port)], env=env)
    try:
        wait_for(lambda: len(scada.of("DBIRTH")) == 1, 20, "the station's births")
        # when it is killed (no MQTT DISCONNECT, no NDEATH of its own)
        proc.kill()
        proc.wait(10)
        # then the broker delivers its will: the NDEATH with the bdSeq of its NBIRTH
        wait_for(lambda: len(scada.of("NDEATH")) == 1, 10, "NDEATH from the will")
        assert scada.of("NDEATH")[0][2].metrics["bdSeq"] == scada.of("NBIRTH")[0][2].metrics["bdSeq"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        scada.close()


def test_reconnect_is_a_new_session_with_the_next_bdseq(mosquitto: Mosquitto) -> None:
    # given a node born on the broker
    scada = ScadaHost(mosquitto.port)
    node = SparkplugNode(
        BrokerLink("127.0.0.1", mosquitto.port, "station-spb", keepalive_s=5, reconnect_max_delay_s=1),
        group_id=GROUP,
        edge_node_id=NODE,
        camera_ids=["cam1"],
        station_path="acme/st1",
    )
    node.start()
    try:
        wait_for(lambda: node.stats().births == 1, 10, "births")
        scada.close()
        # when the broker dies and comes back
        mosquitto.stop()
        mosquitto.start()
        scada = ScadaHost(mosquitto.port)
        # then the node is born again in a new session whose bdSeq is the next one
        wait_for(lambda: len(scada.of("NBIRTH")) >= 1, 15, "NBIRTH after reconnect")
        nbirth = scada.of("NBIRTH")[-1][2]
        assert nbirth.metrics["bdSeq"] == 1 and nbirth.seq == 0
    finally:
        node.close()
        scada.close()


def test_station_publishes_its_parts_as_ddata_beside_the_result_channel(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from tests.helpers.station_runtime import running_station, write_line_station

    # given a station with a sparkplug section on its own broker
    expected = write_line_station(tmp_path, mosquitto.port, parts="gb", sparkplug={"group_id": GROUP})
    scada = ScadaHost(mosquitto.port)
    try:
        with running_station(tmp_path) as station:
            wait_for(lambda: len(scada.of("DBIRTH")) == 1, 15, "the station's births")
            # when two parts pass the camera
            for _ in expected:
                station.trigger("cam1", part_id="P")
            wait_for(lambda: len(scada.of("DDATA")) == 2, 20, "a DDATA per part")
        # then the SCADA host saw each verdict on the camera's device, and the station's clean stop
        verdicts = [d.metrics["Result/Verdict"] for _, dev, d in scada.of("DDATA") if dev == "cam1"]
        assert verdicts == expected
        assert scada.of("NBIRTH")[0][2].metrics["Properties/Station"] == station.station_path
        wait_for(lambda: len(scada.of("NDEATH")) == 1, 5, "NDEATH on stop")
    finally:
        scada.close()
