"""The `mqtt:` section of station.yaml and the station's topics."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineinspect.config import parse_station
from lineinspect.errors import ConfigError
from lineinspect.line.mqtt import MqttSettings, StationTopics

RECIPES = [{"id": "bracket", "model": "default"}]


def test_station_without_mqtt_section_means_embedded_demo_broker() -> None:
    assert parse_station({"recipes": RECIPES}, "station.yaml").mqtt is None


def test_mqtt_section_is_read_with_tls_and_defaults() -> None:
    cfg = parse_station(
        {
            "recipes": RECIPES,
            "mqtt": {"host": "broker.plant", "port": 8883, "username": "s1", "tls": {"ca_file": "certs/ca.pem"}},
        },
        "station.yaml",
    )
    assert cfg.mqtt is not None
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.ca_file == Path("certs/ca.pem")
    assert cfg.mqtt.persistent_session is True
    assert cfg.mqtt.outbox_file == Path("var/outbox.sqlite")


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"hots": "x"}, r"mqtt.hots: Extra inputs are not permitted"),
        ({"password": "secret"}, r"mqtt.password: Extra inputs are not permitted"),
        ({"port": 0}, r"mqtt.port: Input should be greater than or equal to 1"),
        ({"tls": {"cert_file": "c.pem"}}, r"mqtt.tls: Value error, cert_file and key_file go together"),
        ({"reconnect_min_delay_s": 10, "reconnect_max_delay_s": 5}, r"reconnect_max_delay_s must not be below"),
    ],
)
def test_bad_mqtt_section_names_the_field(mqtt: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_station({"recipes": RECIPES, "mqtt": mqtt}, "station.yaml")


def test_password_comes_from_the_named_environment_variable() -> None:
    settings = MqttSettings(password_env="PLANT_MQTT_PW")
    assert settings.password({"PLANT_MQTT_PW": "s3cret"}) == "s3cret"
    assert settings.password({"PLANT_MQTT_PW": ""}) is None
    assert settings.password({}) is None


def test_topics_follow_the_station_uns_path() -> None:
    cfg = parse_station({"recipes": RECIPES, "station": {"id": "st7"}}, "station.yaml")
    topics = StationTopics(cfg.station.path)
    assert topics.result == "acme/plant1/area1/line1/cell1/lineinspect/st7/result"
    assert topics.status == "acme/plant1/area1/line1/cell1/lineinspect/st7/status"
    assert topics.camera_status("cam1") == "acme/plant1/area1/line1/cell1/lineinspect/st7/camera/cam1/status"
