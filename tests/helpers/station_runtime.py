"""A station directory for runtime tests: the `bright` model, a folder camera over generated parts, a test broker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import yaml

from lineinspect.assemble import build_station
from lineinspect.config import load_station
from lineinspect.core.result import ResultSink
from lineinspect.line.station import Station
from tests.helpers.station_dir import bad_part, good_part, write_station
from tests.helpers.subscriber import Subscriber

STATION_PATH = "acme/s1/a1/l1/cell1/lineinspect/teststation"
# Mosquitto that saves sessions at once, so a SIGKILLed broker comes back with the subscriber's subscription.
SAVE_SESSIONS = ["autosave_interval 1", "autosave_on_changes true", "user root"]
# A dry-run reject station for 2 parts/s: it logs and publishes what it would switch.
DRY_RUN_REJECT = {
    "mode": "timed",
    "backend": {"type": "dry_run"},
    "inspection_budget_ms": 300,
    "line_rate_parts_per_min": 120,
    "delay_ms": 400,
    "pulse_width_ms": 20,
    "audit_dir": "audit",
}
# Broker settings that keep a test short: reconnect every second.
FAST_MQTT = {"reconnect_min_delay_s": 1, "reconnect_max_delay_s": 1, "keepalive_s": 5, "connect_timeout_s": 2}


def write_parts(folder: Path, verdicts: str) -> list[str]:
    """One image per letter, replayed in this order: 'g' a good part, 'b' a bad one. Returns the expected verdicts."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = []
    for i, kind in enumerate(verdicts):
        image = good_part() if kind == "g" else bad_part()
        assert cv2.imwrite(str(folder / f"part{i:03d}.png"), image)
        expected.append("pass" if kind == "g" else "fail")
    return expected


def write_line_station(
    station_dir: Path,
    mqtt_port: int,
    *,
    parts: str = "gb",
    camera: dict[str, Any] | None = None,
    line: dict[str, Any] | None = None,
    recipes: list[dict[str, Any]] | None = None,
    mqtt: dict[str, Any] | None = None,
    **sections: Any,
) -> list[str]:
    """station.yaml + cameras/cam1.yaml (folder camera, software trigger, looping over `parts`)."""
    expected = write_parts(station_dir / "parts", parts)
    write_station(
        station_dir,
        recipes=recipes,
        mqtt={"port": mqtt_port, "outbox_file": "var/outbox.sqlite", **FAST_MQTT, **(mqtt or {})},
        line={"budget_ms": 2000, "inspection_threads": 1, "drain_timeout_s": 3, **(line or {})},
        **sections,
    )
    definition = {
        "source": {"backend": "folder", "path": "parts", "loop": True},
        "acquisition": {"trigger": {"mode": "software"}},
        "grab_timeout_ms": 1000,
        "liveness_check_ms": 200,
        "reconnect": {"min_ms": 100, "max_ms": 200},
        **(camera or {}),
    }
    (station_dir / "cameras").mkdir(exist_ok=True)
    (station_dir / "cameras" / "cam1.yaml").write_text(yaml.safe_dump(definition), encoding="utf-8")
    return expected


@contextmanager
def running_station(station_dir: Path, result_sinks: tuple[ResultSink, ...] = ()) -> Iterator[Station]:
    station = build_station(station_dir, load_station(station_dir), result_sinks=result_sinks)
    station.start()
    try:
        yield station
    finally:
        station.stop()


@contextmanager
def subscribed(port: int) -> Iterator[Subscriber]:
    sub = Subscriber(port, f"{STATION_PATH}/#").start()
    try:
        yield sub
    finally:
        sub.close()
