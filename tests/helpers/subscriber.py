"""A real MQTT subscriber for tests: persistent session, QoS 1, collects what arrives."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.waiting import wait_for


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to `topic_filter` at QoS 1 with a persistent session and reconnects quickly."""

    def __init__(self, port: int, topic_filter: str = "#", host: str = "127.0.0.1") -> None:
        self.host, self.port, self.topic_filter = host, port, topic_filter
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.subscribed = 0  # SUBACKs seen (one per (re)connect)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic_filter, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_subscribe(self, *args: object) -> None:
        with self._lock:
            self.subscribed += 1

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self._received.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self, timeout_s: float = 5.0) -> Subscriber:
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        self.wait_until(lambda: self.subscribed >= 1, timeout_s, "subscriber did not get its SUBACK")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def received(self, topic_suffix: str = "") -> list[Received]:
        with self._lock:
            return [m for m in self._received if m.topic.endswith(topic_suffix)]

    def results(self) -> list[tuple[int, str]]:
        """(sequence, result_id) of every result message, in arrival order (duplicates included)."""
        out = []
        for m in self.received("/result"):
            body = m.json()
            out.append((int(body["sequence"]), str(body["result_id"])))
        return out

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_for(condition, timeout_s, what)


def assert_complete_in_order(received: list[tuple[int, str]], last_sequence: int) -> None:
    """As the MES checks it: every sequence 1..last arrived, first arrivals in order, a repeat only with its
    own result_id."""
    ids: dict[int, str] = {}
    first_order: list[int] = []
    for sequence, result_id in received:
        if sequence in ids:
            assert ids[sequence] == result_id, f"sequence {sequence} arrived with two result ids"
        else:
            ids[sequence] = result_id
            first_order.append(sequence)
    assert first_order == list(range(1, last_sequence + 1)), f"missing or out of order: {first_order}"
