"""A running station's controls as the plant uses them: its HTTP API (as `lineinspect run` serves it) and MQTT
commands sent as a MES would, each waiting for its answer on `<prefix>/command/response`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.assemble import build_http_app
from lineinspect.config import load_station
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.results_store import IN_MEMORY, ResultStore
from lineinspect.line.station import Station
from tests.helpers.station_runtime import STATION_PATH
from tests.helpers.subscriber import Subscriber


@contextmanager
def http_for(station: Station, station_dir: Path) -> Iterator[TestClient]:
    """The station's HTTP API as `lineinspect run` serves it."""
    store = ResultStore(IN_MEMORY, retain_rows=100)
    app = build_http_app(
        station.book.current,
        load_station(station_dir),
        api_key=None,
        store=store,
        metrics=StationMetrics(),
        status=station.status,
        result_sinks=[],
        station=station,
    )
    try:
        with TestClient(app) as client:
            yield client
    finally:
        store.close()


class Commander:
    """Sends MQTT commands as a plant's MES would and waits for each answer."""

    def __init__(self, port: int, sub: Subscriber) -> None:
        self.sub = sub
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"mes-{uuid.uuid4().hex[:6]}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, name: str, **body: Any) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        self.client.publish(f"{STATION_PATH}/command/{name}", json.dumps({"request_id": request_id, **body}), qos=1)

        def answer() -> dict[str, Any] | None:
            for m in self.sub.received("/command/response"):
                if m.json().get("request_id") == request_id:
                    return m.json()
            return None

        self.sub.wait_until(lambda: answer() is not None, 10, f"answer to {name}")
        found = answer()
        assert found is not None
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
