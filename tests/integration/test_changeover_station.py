"""Changeover and reload on a running station at line rate, as the MES sees it (real Mosquitto).

The test triggers every part itself and switches recipes (HTTP and the MQTT command) or reloads models
between triggers, so it knows which recipe and which model each part must have been inspected with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from lineinspect.core.modelcard import ModelCard
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_control import Commander, http_for
from tests.helpers.station_runtime import running_station, subscribed, write_line_station
from tests.helpers.subscriber import Subscriber
from tests.helpers.waiting import wait_for

RECIPES = [
    {"id": "strict", "model": "bright"},  # a bright spot fails the part
    {"id": "lenient", "version": "2", "model": "bright", "max_defects": 5},  # it is tolerated
]
PARTS = 60
PACE_S = 0.02  # 50 parts/s: the line's pace, not a wait for something


def results(sub: Subscriber) -> dict[int, dict[str, Any]]:
    """Each part's result by trigger id; a part with two different results fails the test."""
    by_trigger: dict[int, dict[str, Any]] = {}
    for m in sub.received("/result"):
        r = m.json()
        seen = by_trigger.setdefault(r["trigger_id"], r)
        assert seen["result_id"] == r["result_id"], f"part {r['trigger_id']} has two results"
    return by_trigger


def test_each_part_is_inspected_with_the_recipe_active_at_its_trigger_while_switching_at_line_rate(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="b", recipes=RECIPES)
    expected: dict[int, str] = {}
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station, http_for(station, tmp_path) as http:
        commander = Commander(mosquitto.port, sub)
        try:
            wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera")
            active = "strict"
            for i in range(PARTS):
                if i == 15:
                    answer = http.put("/v1/cameras/cam1/recipe", json={"recipe": "lenient"})
                    assert answer.status_code == 200 and answer.json()["previous_recipe_id"] == "strict"
                    active = "lenient"
                if i == 30:
                    assert commander.send("recipe", camera="cam1", recipe="strict")["ok"] is True
                    active = "strict"
                if i == 40:  # refused: nothing changes
                    refused = commander.send("recipe", camera="cam1", recipe="no-such-recipe")
                    assert refused["ok"] is False and "unknown recipe 'no-such-recipe'" in refused["message"]
                    bad = http.put("/v1/cameras/cam1/recipe", json={"recipe": "no-such-recipe"})
                    assert bad.status_code == 409 and "unknown recipe" in bad.json()["detail"]
                if i == 45:
                    answer = http.put("/v1/cameras/cam1/recipe", json={"recipe": "lenient"})
                    assert answer.status_code == 200
                    active = "lenient"
                expected[station.trigger("cam1", part_id=f"P{i}")] = active
                time.sleep(PACE_S)
            sub.wait_until(lambda: len(results(sub)) >= PARTS, 15, "every part's result")
            assert http.get("/v1/recipes").json()["cameras"] == {"cam1": "lenient"}
            assert station.status().to_payload()["recipes"] == {"cam1": "lenient"}
        finally:
            commander.close()
        sub.wait_until(lambda: len(sub.received("/changeover")) >= 6, 5, "changeover events (start + 5)")
        retained = [m.json() for m in sub.received("/lineinspect/teststation/status")]
    got = results(sub)
    assert sorted(got) == sorted(expected)  # none lost, none doubled
    for trigger_id, recipe in expected.items():
        r = got[trigger_id]
        assert r["recipe"]["id"] == recipe, f"part {trigger_id}"
        assert r["recipe"]["version"] == ("2" if recipe == "lenient" else "1")
        assert r["verdict"] == ("pass" if recipe == "lenient" else "fail")  # one rule set per part, never mixed
    events = [m.json() for m in sub.received("/changeover") if m.json()["action"] != "start"]
    assert [(e["ok"], e["recipe_id"], e["source"]) for e in events] == [
        (True, "lenient", "http"),
        (True, "strict", "mqtt"),
        (False, "no-such-recipe", "mqtt"),
        (False, "no-such-recipe", "http"),
        (True, "lenient", "http"),
    ]
    assert retained[-1]["recipes"] == {"cam1": "lenient"}
    # From the first status on, the retained status names each camera's recipe.
    assert all(s.get("recipes") for s in retained if s["state"] != "offline")


def card_sha(model_dir: Path) -> str:
    return ModelCard.model_validate(yaml.safe_load((model_dir / "model.yaml").read_text())).sha256


def test_models_reload_at_line_rate_and_a_broken_model_is_refused_while_the_old_one_runs(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="gb", recipes=RECIPES)
    brightness_anomaly(tmp_path / "models" / "bright48", size=48)
    sha = {name: card_sha(tmp_path / "models" / name) for name in ("bright", "bright48")}
    expected: dict[int, str] = {}

    def point_strict_at(model: str) -> None:
        config = yaml.safe_load((tmp_path / "station.yaml").read_text())
        config["recipes"][0]["model"] = model
        (tmp_path / "station.yaml").write_text(yaml.safe_dump(config))

    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station, http_for(station, tmp_path) as http:
        commander = Commander(mosquitto.port, sub)
        try:
            wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera")
            running = sha["bright"]
            for i in range(PARTS):
                if i == 20:  # a new model beside the running one, swapped in at a part boundary
                    point_strict_at("bright48")
                    answer = http.post("/v1/reload")
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["models"]["bright48"] == sha["bright48"]
                    running = sha["bright48"]
                if i == 40:  # a model whose card does not match its file: refused, the running one stays
                    card = tmp_path / "models" / "bright" / "model.yaml"
                    card.write_text(card.read_text().replace(sha["bright"], "0" * 64))
                    point_strict_at("bright")
                    refused = commander.send("reload")
                    assert refused["ok"] is False and "the running recipes and models stay" in refused["message"]
                    assert "sha256" in refused["message"]
                expected[station.trigger("cam1", part_id=f"P{i}")] = running
                time.sleep(PACE_S)
            sub.wait_until(lambda: len(results(sub)) >= PARTS, 15, "every part's result")
            assert station.status().to_payload()["setup"] == 2
        finally:
            commander.close()
    got = results(sub)
    assert sorted(got) == sorted(expected)
    assert {t: got[t]["model"]["sha256"] for t in expected} == expected  # the exact model each part ran
