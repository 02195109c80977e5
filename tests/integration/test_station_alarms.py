"""Alarms as the plant sees them: each raised by its condition and cleared when it ends, the same in
`/v1/status`, `/metrics` and the retained MQTT status (a real Mosquitto, a running station, a real full disk)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lineinspect.core.part import PartRef
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.station import Station
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.small_disk import fill, small_disk
from tests.helpers.station_control import Commander, http_for
from tests.helpers.station_runtime import DRY_RUN_REJECT, running_station, subscribed, write_line_station
from tests.helpers.subscriber import Subscriber
from tests.helpers.waiting import wait_for

LINE = {"trigger_rate_parts_per_min": 600}


def active(station: Station) -> set[str]:
    """Active alarm kinds as /v1/status lists them."""
    return {a["kind"] for a in station.status().to_payload()["alarms"]}


def metric_alarms(station: Station) -> set[str]:
    """Active alarm kinds as /metrics exports them."""
    text = StationMetrics().exposition(station.status).decode()
    return {
        s.labels["kind"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "lineinspect_alarm_active" and s.value == 1
    }


def retained_status(port: int) -> dict[str, object]:
    """The station status a consumer connecting now is given (the retained message)."""
    with subscribed(port) as late:
        late.wait_until(lambda: bool(late.received("/lineinspect/teststation/status")), 5, "retained status")
        status: dict[str, object] = late.received("/lineinspect/teststation/status")[-1].json()
        return status


def alarm_events(sub: Subscriber) -> list[tuple[str, bool]]:
    return [(m.json()["kind"], m.json()["active"]) for m in sub.received("/alarm")]


def test_a_broker_away_is_an_alarm_everywhere_until_it_is_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="g", line=LINE, mqtt={"alarm_after_s": 1})
    with running_station(tmp_path) as station:
        wait_for(lambda: station.publisher.stats().connected, 5, "connected")
        mosquitto.stop()
        wait_for(lambda: "broker_unreachable" in active(station), 10, "broker_unreachable raised")
        assert "broker_unreachable" in metric_alarms(station)
        assert station.status().to_payload()["broker"]["disconnected_for_s"] > 1
        mosquitto.start()
        wait_for(lambda: "broker_unreachable" not in active(station), 10, "broker_unreachable cleared")
        assert "broker_unreachable" not in metric_alarms(station)
        # The retained status is the present one: online, no alarms (not the alarm raised while away).
        wait_for(lambda: retained_status(mosquitto.port)["state"] == "online", 10, "retained status online")
        assert retained_status(mosquitto.port)["alarms"] == []


def test_a_hung_broker_is_an_alarm_while_it_acknowledges_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="g", line=LINE, mqtt={"alarm_after_s": 1})
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        wait_for(lambda: len(sub.results()) >= 3, 5, "results flowing")
        mosquitto.pause()
        try:
            wait_for(lambda: "broker_not_acknowledging" in active(station), 10, "broker_not_acknowledging raised")
            broker = station.status().to_payload()["broker"]
            assert broker["connected"] is True and broker["oldest_unacked_s"] > 1  # the TCP link still looks fine
            assert "broker_not_acknowledging" in metric_alarms(station)
        finally:
            mosquitto.resume()
        wait_for(lambda: "broker_not_acknowledging" not in active(station), 10, "broker_not_acknowledging cleared")
        sub.wait_until(lambda: ("broker_not_acknowledging", False) in alarm_events(sub), 5, "cleared on MQTT")
    assert ("broker_not_acknowledging", True) in alarm_events(sub)


def test_a_full_disk_makes_parts_undecided_and_an_alarm_that_clears_when_there_is_room(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with small_disk(tmp_path / "disk", size_kib=1024) as disk:
        write_line_station(
            tmp_path, mosquitto.port, parts="g", line=LINE, mqtt={"outbox_file": str(disk / "outbox.sqlite")}
        )
        with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
            wait_for(lambda: len(sub.results()) >= 3, 5, "results flowing")
            filler = fill(disk)
            wait_for(lambda: "outbox_refused" in active(station), 10, "outbox_refused raised")
            (refusal,) = [a for a in station.status().to_payload()["alarms"] if a["kind"] == "outbox_refused"]
            assert "database or disk is full" in refusal["message"]  # the real cause, not a rollback error
            assert "outbox_refused" in metric_alarms(station)
            wait_for(lambda: station.counts.snapshot()["outbox_refused"] >= 2, 5, "parts refused")
            filler.unlink()
            wait_for(lambda: not {"outbox_refused", "journal_refused"} & active(station), 10, "alarms cleared")
            stored_again = len(sub.results())
            sub.wait_until(lambda: len(sub.results()) >= stored_again + 3, 5, "results flowing again")
            wait_for(lambda: retained_status(mosquitto.port)["state"] == "online", 10, "retained status online")
        assert ("outbox_refused", True) in alarm_events(sub) and ("outbox_refused", False) in alarm_events(sub)
        retained = [json.loads(m.payload) for m in sub.received("/lineinspect/teststation/status")]
        assert any(s["state"] == "alarm" for s in retained)


def test_a_passing_deadline_miss_clears_itself_and_the_retained_status(tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="gb", reject={**DRY_RUN_REJECT, "deadline_clear_after_parts": 3})
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        tracker = station.tracker
        assert tracker is not None
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")
        # A part announced two seconds after its trigger (a stalled host): its pulse is due long before now.
        tracker.part_entered(PartRef("cam1", 9_999, time.monotonic_ns() - 2_000_000_000))
        wait_for(lambda: "deadline_missed" in active(station), 5, "deadline_missed raised")
        wait_for(lambda: retained_status(mosquitto.port)["state"] == "alarm", 5, "retained status alarm")
        for _ in range(3):  # three parts on time, pulsed or let pass, at the line's part spacing
            station.trigger("cam1")
            time.sleep(0.5)
        wait_for(lambda: tracker.counters.snapshot()["parts_tracked"] == 4, 5, "3 parts tracked")
        wait_for(lambda: "deadline_missed" not in active(station), 10, "deadline_missed cleared")
        assert "deadline_missed" not in metric_alarms(station)
        wait_for(lambda: retained_status(mosquitto.port)["state"] == "online", 10, "retained status online")
        assert retained_status(mosquitto.port)["alarms"] == []
        sub.wait_until(lambda: ("deadline_missed", False) in alarm_events(sub), 5, "cleared on MQTT")
    assert alarm_events(sub) == [("deadline_missed", True), ("deadline_missed", False)]  # the history


def test_latched_reject_alarms_are_reset_by_the_operator_over_mqtt_and_http(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A latched alarm stays until someone resets it: the MQTT command `reset_alarms` and `POST /v1/reject/reset`
    each clear it everywhere (status, retained status, `<prefix>/alarm`), say what they cleared, and the audit trail
    records who."""
    never_clears = {**DRY_RUN_REJECT, "deadline_clear_after_parts": 100_000}
    write_line_station(tmp_path, mosquitto.port, parts="g", reject=never_clears)
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        tracker = station.tracker
        assert tracker is not None
        wait_for(lambda: station.status().to_payload()["cameras"][0]["state"] == "connected", 5, "camera connected")

        def miss_a_deadline(trigger_id: int) -> None:
            tracker.part_entered(PartRef("cam1", trigger_id, time.monotonic_ns() - 2_000_000_000))
            wait_for(lambda: "deadline_missed" in active(station), 5, "deadline_missed raised")

        miss_a_deadline(9_001)
        commander = Commander(mosquitto.port, sub)
        try:
            answer = commander.send("reset_alarms", operator="anna")
        finally:
            commander.close()
        assert answer["ok"] is True
        assert answer["message"] == "reset 1 reject alarm(s): deadline_missed; the stop-line output is off"
        wait_for(lambda: "deadline_missed" not in active(station), 5, "deadline_missed reset")
        wait_for(lambda: retained_status(mosquitto.port)["state"] == "online", 10, "retained status online")
        sub.wait_until(lambda: ("deadline_missed", False) in alarm_events(sub), 5, "reset on MQTT")
        cleared = [m.json() for m in sub.received("/alarm") if not m.json()["active"]]
        assert cleared[-1]["message"] == "reset by mqtt (anna)"

        miss_a_deadline(9_002)
        with http_for(station, tmp_path) as client:
            reset = client.post("/v1/reject/reset", json={"operator": "ben"})
            assert reset.status_code == 200, reset.text
            assert reset.json()["reset"] == ["deadline_missed"]
            wait_for(lambda: "deadline_missed" not in active(station), 5, "deadline_missed reset over HTTP")
            nothing = client.post("/v1/reject/reset")
            assert nothing.json() == {"reset": [], "message": "no reject alarm was active; the stop-line output is off"}
            refused = client.post("/v1/reject/reset", json={"operator": "ben", "everything": True})
            assert refused.status_code == 422 and "everything" in refused.text
    audit = "\n".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    assert "reset by mqtt (anna)" in audit and "reset by http (ben)" in audit
