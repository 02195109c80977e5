"""LinkWatch: the broker and outbox alarms follow their conditions, raised once and cleared once."""

from __future__ import annotations

from typing import Any

from lineinspect.line.events import SEVERITY_WARNING, StationAlarm, StationEvents
from lineinspect.line.mqtt import PublisherStats, StationTopics
from lineinspect.line.watch import BROKER_NOT_ACKNOWLEDGING, BROKER_UNREACHABLE, OUTBOX_FILLING, LinkWatch

TOPICS = StationTopics("acme/s1/a1/l1/cell1/lineinspect/st1")


class Published:
    """What the event channel sends to MQTT (the publisher's side of it)."""

    topics = TOPICS

    def __init__(self) -> None:
        self.statuses: list[tuple[str, list[str]]] = []
        self.alarm_events: list[tuple[str, bool]] = []

    def publish_status(self, state: str, **fields: Any) -> None:
        self.statuses.append((state, [a["kind"] for a in fields["alarms"]]))

    def publish_event(self, topic: str, payload: dict[str, Any]) -> None:
        assert topic == TOPICS.alarm
        self.alarm_events.append((payload["kind"], payload["active"]))

    def publish_camera_status(self, camera_id: str, state: str, **fields: Any) -> None:
        pass


def stats(**changes: Any) -> PublisherStats:
    base: dict[str, Any] = {
        "connected": True,
        "published": 10,
        "acked": 10,
        "resent": 0,
        "in_flight": 0,
        "outbox_depth": 0,
        "outbox_alarm": False,
        "last_error": None,
        "disconnected_for_s": None,
        "oldest_unacked_s": None,
    }
    return PublisherStats(**(base | changes))


def watch_with(published: Published) -> tuple[LinkWatch, StationEvents]:
    events = StationEvents(published)
    watch = LinkWatch(
        lambda: stats(),
        events,
        alarm_after_s=5.0,
        outbox_max_rows=1000,
        outbox_full_alarm_s=600.0,
        where="127.0.0.1:1883",
    )
    return watch, events


def test_a_broker_down_longer_than_the_limit_is_one_alarm_cleared_when_it_is_back() -> None:
    published = Published()
    watch, events = watch_with(published)
    watch.check(stats(connected=False, disconnected_for_s=2.0, last_error="connection refused"), 0.0)
    assert events.active_alarms == []  # a reconnect blip is no alarm
    for t in (1.0, 2.0, 3.0):
        watch.check(stats(connected=False, disconnected_for_s=5.0 + t, last_error="connection refused"), t)
    (alarm,) = events.active_alarms
    assert alarm.kind == BROKER_UNREACHABLE and "unreachable for 6 s (connection refused)" in alarm.message
    watch.check(stats(), 4.0)
    assert events.active_alarms == []
    assert published.alarm_events == [(BROKER_UNREACHABLE, True), (BROKER_UNREACHABLE, False)]
    assert published.statuses == [("alarm", [BROKER_UNREACHABLE]), ("online", [])]


def test_a_connected_broker_that_acknowledges_nothing_is_an_alarm() -> None:
    published = Published()
    watch, events = watch_with(published)
    watch.check(stats(in_flight=20, oldest_unacked_s=4.0), 0.0)
    assert events.active_alarms == []
    watch.check(stats(in_flight=20, oldest_unacked_s=9.0), 1.0)
    assert [a.kind for a in events.active_alarms] == [BROKER_NOT_ACKNOWLEDGING]
    assert "acknowledged nothing for 9 s while connected (20 results in flight" in events.active_alarms[0].message
    watch.check(stats(in_flight=2, oldest_unacked_s=0.1), 2.0)
    assert events.active_alarms == []


def test_an_outbox_that_would_be_full_soon_is_an_alarm_until_it_drains() -> None:
    published = Published()
    watch, events = watch_with(published)
    # 100 rows a second towards 1000: full in about 8 s, well inside the 600 s warning.
    for second in range(3):
        watch.check(stats(connected=False, disconnected_for_s=1.0, outbox_depth=100 * second), float(second))
    assert [a.kind for a in events.active_alarms] == [OUTBOX_FILLING]
    assert "outbox holds 100 of at most 1000 results and would be full in about 9 s" in events.active_alarms[0].message
    watch.check(stats(outbox_depth=150), 3.0)  # draining: no longer growing
    assert events.active_alarms == []


def test_a_warning_alone_is_a_warning_state_and_an_alarm_beside_it_wins() -> None:
    published = Published()
    events = StationEvents(published)
    drift = StationAlarm("camera", "health_drift.cam1", "cam1 drifts", severity=SEVERITY_WARNING)
    events.raise_alarm(drift)
    events.station_alarm("outbox_refused", "disk full")
    events.clear_alarm("station", "outbox_refused", "room again")
    events.clear_alarm("camera", "health_drift.cam1", "back")
    assert [state for state, _ in published.statuses] == ["warning", "alarm", "warning", "online"]
