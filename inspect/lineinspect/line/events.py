"""StationEvents: the station's event channel, built first so everything after it can report through it.

Alarms are state: one table of active alarms (the reject station's and the station's own), and every
raise or clear goes out as an `<prefix>/alarm` event and a retained `status` (`alarm` while any alarm of
severity `alarm` is active, `warning` while only warnings are — a camera drifting from its baseline,
parts still judged —, `online` once none is). Camera state changes become the retained camera status; reject
dry-run events go to `<prefix>/reject/event`. `/v1/status` and `/metrics` read the same table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.line.capture.supervisor import CameraStatus
from lineinspect.line.mqtt import StationTopics
from lineinspect.line.reject.alarms import Alarm

if TYPE_CHECKING:
    from lineinspect.line.changeover import Change

log = logging.getLogger(__name__)

SOURCE_REJECT = "reject"
SOURCE_STATION = "station"
SEVERITY_ALARM = "alarm"  # parts are at risk or rejected unseen: someone must act now
SEVERITY_WARNING = "warning"  # parts are still judged; act before they are not (e.g. a fouling lens)


def station_state(alarms: list[StationAlarm]) -> str:
    """The station's state for its retained status, from its active alarms."""
    if any(a.severity == SEVERITY_ALARM for a in alarms):
        return "alarm"
    return "warning" if alarms else "online"


# Camera states that are not a problem; any other one is logged as a warning.
_QUIET_CAMERA_STATES = ("connected", "stopped", "finished")


@dataclass(frozen=True, slots=True)
class StationAlarm:
    """One active alarm: where it comes from (`reject`, `station`), its kind and what to do about it."""

    source: str
    kind: str
    message: str
    since: datetime = field(default_factory=utc_now)
    result_id: str | None = None
    part_number: int | None = None
    severity: str = SEVERITY_ALARM  # SEVERITY_ALARM or SEVERITY_WARNING

    def to_payload(self, *, active: bool = True) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "severity": self.severity,
            "active": active,
            "message": self.message,
            "result_id": self.result_id,
            "part_number": self.part_number,
            "since": iso_utc(self.since, "milliseconds"),
        }


class EventPublisher(Protocol):
    """What the event channel needs of the MQTT publisher (`ResultPublisher`)."""

    topics: StationTopics

    def publish_status(self, state: str, **fields: Any) -> None: ...

    def publish_event(self, topic: str, payload: dict[str, Any]) -> None: ...

    def publish_camera_status(self, camera_id: str, state: str, **fields: Any) -> None: ...


class StationEvents:
    """Alarms (one table), camera status and reject events → MQTT. Thread-safe; hooks never raise."""

    def __init__(self, publisher: EventPublisher) -> None:
        self.publisher = publisher
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], StationAlarm] = {}
        self._recipes: dict[str, str | None] = {}  # each camera's active recipe, in every status

    # --- alarms ------------------------------------------------------------------------------------
    def raise_alarm(self, alarm: StationAlarm) -> None:
        """An alarm is (still) active: table, log, `alarm` event, retained status."""
        with self._lock:
            self._active[(alarm.source, alarm.kind)] = alarm
        if alarm.severity == SEVERITY_WARNING:
            log.warning("WARNING %s %s: %s", alarm.source, alarm.kind, alarm.message)
        else:
            log.error("ALARM %s %s: %s", alarm.source, alarm.kind, alarm.message)
        self._publish_alarm(alarm.to_payload(active=True))

    def clear_alarm(self, source: str, kind: str, message: str) -> None:
        """The condition is gone: out of the table, a cleared `alarm` event, retained status."""
        with self._lock:
            was = self._active.pop((source, kind), None)
        if was is None:
            return
        log.warning("alarm %s %s cleared: %s", source, kind, message)
        cleared = StationAlarm(
            source, kind, message, result_id=was.result_id, part_number=was.part_number, severity=was.severity
        )
        self._publish_alarm(cleared.to_payload(active=False))

    def station_alarm(self, kind: str, message: str) -> None:
        """An alarm of the station itself (e.g. the outbox refusing results)."""
        self.raise_alarm(StationAlarm(SOURCE_STATION, kind, message))

    def reject_alarm(self, alarm: Alarm) -> None:
        """The reject tracker's alarm hook: raised and cleared alarms of the reject station."""
        if alarm.active:
            self.raise_alarm(
                StationAlarm(
                    SOURCE_REJECT,
                    alarm.kind.value,
                    alarm.message,
                    since=alarm.at,
                    result_id=alarm.result_id,
                    part_number=alarm.part_number,
                )
            )
        else:
            self.clear_alarm(SOURCE_REJECT, alarm.kind.value, alarm.message)

    @property
    def active_alarms(self) -> list[StationAlarm]:
        with self._lock:
            return sorted(self._active.values(), key=lambda a: a.since)

    def _publish_alarm(self, payload: dict[str, Any]) -> None:
        try:
            self.publisher.publish_event(self.publisher.topics.alarm, payload)
            self.publish_status()
        except Exception:  # an alarm that cannot be published is still in the table, the log and /v1/status
            log.exception("publishing alarm %s failed", payload.get("kind"))

    def publish_status(self) -> None:
        """The retained status as it is now: `alarm` while any alarm of that severity is active, `warning` while
        only warnings are, else `online`; with the active alarms and each camera's active recipe."""
        alarms = self.active_alarms
        with self._lock:
            recipes = dict(self._recipes)
        self.publisher.publish_status(station_state(alarms), alarms=[a.to_payload() for a in alarms], recipes=recipes)

    # --- changeover ---------------------------------------------------------------------------------
    def changeover(self, change: Change, active: Mapping[str, str | None]) -> None:
        """A recipe changeover or model reload, accepted or refused: an event, and the status if it changed."""
        with self._lock:
            changed = dict(active) != self._recipes
            self._recipes = dict(active)
        try:
            self.publisher.publish_event(self.publisher.topics.changeover, change.to_payload())
            if changed or (change.ok and change.action == "reload"):
                self.publish_status()
        except Exception:
            log.exception("publishing changeover failed")

    # --- cameras and the reject station ------------------------------------------------------------
    def camera_status(self, status: CameraStatus) -> None:
        """The camera supervisor's hook (camera thread): the retained MQTT camera status."""
        payload = status.to_payload()
        payload.pop("camera_id")
        state = payload.pop("state")
        if state not in _QUIET_CAMERA_STATES:
            log.warning(
                "camera %s is %s: parts pass unseen or undecided (%s)", status.camera_id, state, status.last_error
            )
        self.publisher.publish_camera_status(status.camera_id, state, **payload)

    def reject_event(self, event: dict[str, Any]) -> None:
        """What the reject station did or, in dry run, would do."""
        self.publisher.publish_event(self.publisher.topics.reject_event, event)
