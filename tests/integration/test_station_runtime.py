"""The station runtime against a real Mosquitto: parts → results on MQTT, reject wiring, overload, camera loss."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from lineinspect.core.result import Result
from tests.helpers.graphs import slow_brightness_anomaly
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_runtime import DRY_RUN_REJECT, STATION_PATH, running_station, subscribed, write_line_station
from tests.helpers.waiting import wait_for


class Collected:
    """A result sink that keeps what it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.results: list[Result] = []

    def __call__(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def __len__(self) -> int:
        with self._lock:
            return len(self.results)


def camera_states(sub_messages: list) -> list[str]:
    return [m.json()["state"] for m in sub_messages]


def test_station_publishes_one_result_per_part_with_right_verdicts_and_consecutive_sequences(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    expected = write_line_station(tmp_path, mosquitto.port, parts="gbgb")
    sink = Collected()
    with subscribed(mosquitto.port) as sub:
        with running_station(tmp_path, result_sinks=(sink,)) as station:
            wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
            ids = [station.trigger("cam1", part_id=f"P{i}") for i in range(4)]
            sub.wait_until(lambda: len(sub.results()) >= 4, 10, "4 results did not arrive")
            # A subscriber can see the last result before its PUBACK reaches the station.
            wait_for(lambda: station.status().to_payload()["outbox"]["depth"] == 0, 5, "outbox drained on PUBACK")
            status = station.status().to_payload()
        sub.wait_until(lambda: sub.received("/status")[-1].json()["state"] == "offline", 5, "offline not published")
        bodies = [m.json() for m in sub.received("/result")]
        online = [m for m in sub.received("/status") if m.json()["state"] == "online"]
        cam_states = camera_states(sub.received("/camera/cam1/status"))
    assert [b["verdict"] for b in bodies] == expected
    assert [b["sequence"] for b in bodies] == [1, 2, 3, 4]
    assert [b["trigger_id"] for b in bodies] == ids
    assert [b["part_id"] for b in bodies] == ["P0", "P1", "P2", "P3"]
    assert all(b["station"] == STATION_PATH and b["camera_id"] == "cam1" and b["simulated"] for b in bodies)
    assert all("end_to_end" in b["timings_ms"] and "infer" in b["timings_ms"] for b in bodies)
    assert online, "no online status"
    assert "connected" in cam_states
    # The sinks saw the same results, stamped.
    assert [(r.sequence, r.result_id) for r in sink.results] == [(b["sequence"], b["result_id"]) for b in bodies]
    assert status["counts"] == {"pass": 2, "fail": 2, "undecided": 0, "skipped": 0, "late": 0, "outbox_refused": 0}
    assert status["station"]["path"] == STATION_PATH and status["station"]["state"] == "running"
    assert status["broker"]["connected"] is True and status["outbox"]["depth"] == 0
    assert status["reject"] is None
    json.dumps(status)  # JSON-able for /v1/status


def test_reject_dry_run_fires_for_failed_and_undecided_parts_only(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="gbg", reject=DRY_RUN_REJECT)
    sink = Collected()
    with subscribed(mosquitto.port) as sub, running_station(tmp_path, result_sinks=(sink,)) as station:
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
        for _ in range(3):
            station.trigger("cam1")
        wait_for(lambda: len(sink) == 3, 5, "3 results")
        shutil.rmtree(tmp_path / "parts")  # the camera is lost: the next part cannot be seen
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] != "connected", 5, "camera lost")
        station.trigger("cam1")
        wait_for(lambda: len(sink) == 4, 5, "the unseen part's result")
        tracker = station.tracker
        assert tracker is not None
        wait_for(lambda: tracker.counters.snapshot()["parts_tracked"] == 4, 2, "4 parts tracked")
        wait_for(lambda: tracker.counters.snapshot()["fired"] + tracker.counters.snapshot()["passed"] == 4, 3, "done")
        counters = tracker.counters.snapshot()
        reject = station.status().to_payload()["reject"]
    assert (reject["backend"], reject["mode"]) == ("dry_run", "timed")  # the dashboard says "dry run"
    verdicts = [r.verdict.value for r in sink.results]
    assert verdicts == ["pass", "fail", "pass", "undecided"]
    assert "not inspected: camera" in sink.results[3].reason
    assert counters["fired"] == 2 and counters["passed"] == 2 and counters["late"] == 0
    lines = [json.loads(line) for f in sorted((tmp_path / "audit").glob("*.jsonl")) for line in f.open()]
    fired_ids = {rec["result_id"] for rec in lines if rec["event"] == "fire"}
    assert fired_ids == {sink.results[1].result_id, sink.results[3].result_id}
    # Commissioning: the dry run publishes what it would have switched.
    events = [m.json() for m in sub.received("/reject/event")]
    assert all(e["dry_run"] for e in events)
    pulses = [e for e in events if e["action"] == "set_output" and e["output"] == "ejector" and e["on"]]
    assert len(pulses) == 2


def test_overload_makes_each_uninspected_part_undecided_and_counted(tmp_path: Path, mosquitto: Mosquitto) -> None:
    slow_brightness_anomaly(tmp_path / "models" / "slow", matmuls=30, side=384)
    write_line_station(
        tmp_path,
        mosquitto.port,
        parts="g",
        recipes=[{"id": "part", "model": "slow"}],
        line={"budget_ms": 60, "inspection_threads": 1},
        camera={"queue": {"size": 2, "full_policy": "undecided_new"}},
    )
    triggers = 30
    with subscribed(mosquitto.port) as sub:
        with running_station(tmp_path) as station:
            wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
            for _ in range(triggers):  # all at once: far faster than one part per inspection
                station.trigger("cam1")
            sub.wait_until(lambda: len(sub.results()) >= triggers, 15, "every triggered part's result")
            counts = station.status().to_payload()["counts"]
        bodies = [m.json() for m in sub.received("/result")]
    assert len(bodies) == triggers
    assert sorted(b["trigger_id"] for b in bodies) == list(range(1, triggers + 1))
    undecided = [b for b in bodies if b["verdict"] == "undecided"]
    assert len(undecided) >= triggers // 2, [b["reason"] for b in bodies]
    assert all(b["reason"].startswith(("late:", "not inspected: inspection queue full")) for b in undecided)
    assert counts["undecided"] == len(undecided)
    assert counts["pass"] + counts["undecided"] == triggers
    assert counts["skipped"] + counts["late"] >= len(undecided)


def test_camera_loss_and_recovery_show_on_mqtt_and_in_status(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="g")
    parts, away = tmp_path / "parts", tmp_path / "parts-away"
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
        parts.rename(away)
        wait_for(
            lambda: station.status().to_payload()["cameras"][0]["state"] in ("lost", "reconnecting"), 5, "camera lost"
        )
        lost_status = station.status().to_payload()["cameras"][0]
        away.rename(parts)
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera back")
        station.trigger("cam1")
        sub.wait_until(lambda: len(sub.results()) >= 1, 5, "a result after recovery")
        sub.wait_until(
            lambda: camera_states(sub.received("/camera/cam1/status"))[-1:] == ["connected"], 5, "connected on MQTT"
        )
        states = camera_states(sub.received("/camera/cam1/status"))
    assert "disappeared" in (lost_status["last_error"] or "")
    lost_at = states.index("lost")
    assert "connected" in states[lost_at:]
    assert sub.received("/result")[0].json()["verdict"] == "pass"


def test_http_trigger_makes_one_result_per_part_and_refuses_bad_requests(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from fastapi.testclient import TestClient

    from lineinspect.assemble import build_inspector
    from lineinspect.config import HttpSection, load_station
    from lineinspect.http.app import create_app
    from lineinspect.http.routes.triggers import triggers_router

    write_line_station(tmp_path, mosquitto.port, parts="bg")
    sink = Collected()
    with running_station(tmp_path, result_sinks=(sink,)) as station:
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
        modes = {c: s.trigger_mode for c, s in station.supervisors.items()}
        app = create_app(
            build_inspector(tmp_path, load_station(tmp_path)),
            HttpSection(),
            api_key="k3y",
            routers=[triggers_router(station.trigger, modes, run_id=station.run_id)],
        )
        with TestClient(app) as client:
            denied = client.post("/v1/cameras/cam1/trigger")
            assert denied.status_code == 401 and "X-API-Key" in denied.json()["detail"]
            unknown = client.post("/v1/cameras/cam9/trigger", headers={"X-API-Key": "k3y"})
            assert unknown.status_code == 404
            assert unknown.json()["detail"] == "no camera 'cam9'; this station has ['cam1']"
            extra = client.post("/v1/cameras/cam1/trigger", headers={"X-API-Key": "k3y"}, json={"part": "A1"})
            assert extra.status_code == 422
            first = client.post("/v1/cameras/cam1/trigger", headers={"X-API-Key": "k3y"}, json={"part_id": "A1"})
            second = client.post("/v1/cameras/cam1/trigger", headers={"X-API-Key": "k3y"})
        assert (first.status_code, second.status_code) == (202, 202)
        assert second.json()["trigger_id"] == first.json()["trigger_id"] + 1
        assert first.json()["run_id"] == station.run_id
        wait_for(lambda: len(sink) == 2, 5, "2 results")
    assert [(r.part_id, r.verdict.value) for r in sink.results] == [("A1", "fail"), (None, "pass")]
    # The answer names the part as its result does: the run and the trigger.
    assert [(r.run_id, r.trigger_id) for r in sink.results] == [
        (station.run_id, first.json()["trigger_id"]),
        (station.run_id, second.json()["trigger_id"]),
    ]
