"""The demo's embedded broker: results flow with nothing installed but pip packages; clean stop; clear errors."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from lineinspect.line.broker import BrokerError, EmbeddedBroker
from lineinspect.line.mqtt import MqttSettings, ResultPublisher, StationTopics
from lineinspect.line.outbox import Outbox
from tests.helpers.results import make_result
from tests.helpers.subscriber import Subscriber

TOPICS = StationTopics("acme/plant1/assembly/line1/inspection/lineinspect/demo")


def test_results_and_status_flow_through_embedded_broker(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        sub = Subscriber(broker.port, f"{TOPICS.prefix}/#").start()
        try:
            with Outbox(tmp_path / "outbox.sqlite") as outbox:
                pub = ResultPublisher(MqttSettings(port=broker.port), outbox, TOPICS, client_id="lineinspect-demo")
                pub.start()
                try:
                    for part in range(30):
                        pub.publish_result(make_result(part))
                    sub.wait_until(lambda: len(sub.results()) >= 30, 10, "results did not arrive")
                    sub.wait_until(lambda: outbox.depth() == 0, 5, "outbox did not drain")
                finally:
                    pub.close()
            assert [s for s, _ in sub.results()] == list(range(1, 31))
            assert sub.received("/status")[0].json()["state"] == "online"
        finally:
            sub.close()


def test_embedded_broker_frees_its_port_when_stopped() -> None:
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    broker.stop()
    deadline = time.monotonic() + 2
    with pytest.raises(OSError):
        while time.monotonic() < deadline:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.05)


def test_embedded_broker_says_what_to_do_when_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"could not listen on 127.0.0.1:{port}.*Point `mqtt:` in station.yaml"):
            EmbeddedBroker(port=port).start()


def test_embedded_broker_refuses_a_non_loopback_address() -> None:
    with pytest.raises(BrokerError, match="loopback only"):
        EmbeddedBroker(host="0.0.0.0")
