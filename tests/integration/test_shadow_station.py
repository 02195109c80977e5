"""A shadow model on a running station: it sees every part the line can spare, never actuates, never changes a
result, and its verdicts are compared with production over HTTP and the CLI; then it is promoted and reloaded."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from lineinspect.cli import main
from lineinspect.core.modelcard import ModelCard, write_card
from lineinspect.line.station import Station
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_runtime import DRY_RUN_REJECT, running_station, subscribed, write_line_station
from tests.helpers.waiting import wait_for
from tests.integration.test_changeover_station import card_sha, http_for

PARTS = 20


def blind_model(model_dir: Path) -> Path:
    """A brightness model whose thresholds nothing reaches: it passes every part (a bad candidate)."""
    brightness_anomaly(model_dir, size=48)
    card = ModelCard.model_validate(yaml.safe_load((model_dir / "model.yaml").read_text()))
    assert card.anomaly is not None
    anomaly = card.anomaly.model_copy(update={"image_threshold": 2.0, "pixel_threshold": 2.0, "score_max": 4.0})
    write_card(card.model_copy(update={"anomaly": anomaly}), model_dir)
    return model_dir


def compared(station: Station) -> int:
    assert station.shadow is not None
    return station.shadow.counts().compared


def test_a_shadow_model_is_compared_on_live_parts_without_acting_then_promoted_at_a_reload(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    recipes = [{"id": "part", "model": "bright", "shadow": "blind"}]
    write_line_station(tmp_path, mosquitto.port, parts="gb", recipes=recipes, reject=DRY_RUN_REJECT)
    blind_model(tmp_path / "models" / "blind")
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station, http_for(station, tmp_path) as http:
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera")
        for i in range(PARTS):
            station.trigger("cam1", part_id=f"P{i}")
            time.sleep(0.05)  # the line's pace (20 parts/s), so the shadow has room
        sub.wait_until(lambda: len(sub.received("/result")) >= PARTS, 10, "every result")
        assert station.shadow is not None
        wait_for(lambda: compared(station) + station.shadow.counts().skipped_busy >= PARTS, 10, "shadow done")
        tracker = station.tracker
        assert tracker is not None
        wait_for(lambda: tracker.counters.snapshot()["fired"] + tracker.counters.snapshot()["passed"] >= PARTS, 5, "")
        report = http.get("/v1/shadow/report").json()
        counters = tracker.counters.snapshot()
        results = [m.json() for m in sub.received("/result")]
        # Promote the shadow (the CLI edits station.yaml) and reload: from the next part on, it is production.
        assert main(["model", "promote", "blind", "--recipe", "part", "--station-dir", str(tmp_path)]) == 0
        assert http.post("/v1/reload").status_code == 200
        station.trigger("cam1", part_id="after")
        sub.wait_until(lambda: any(m.json()["part_id"] == "after" for m in sub.received("/result")), 5, "after")
        after = next(m.json() for m in sub.received("/result") if m.json()["part_id"] == "after")
    # Production alone decided and actuated: every bad part failed and was ejected, the shadow changed nothing.
    assert all(r["model"]["id"] == "bright" for r in results)
    assert [r["verdict"] for r in results] == ["pass", "fail"] * (PARTS // 2)
    assert counters["fired"] == PARTS // 2
    # The shadow would have passed the bad parts: exactly those are the disagreements.
    n = compared(station)
    assert n >= PARTS // 2
    assert report["parts"] == n and report["confusion"]["fail"]["pass"] == len(report["disagreements"])
    assert {d["production_verdict"] for d in report["disagreements"]} == {"fail"}
    assert report["models"][0]["shadow"]["sha256"] == card_sha(tmp_path / "models" / "blind")
    assert after["model"]["id"] == "blind" and after["verdict"] == "pass"
