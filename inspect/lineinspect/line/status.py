"""StationStatus: the station at a glance, one typed snapshot.

`Station.status()` (the line) and `OfflineStatus` (`lineinspect serve`, uploads only) make it;
`/v1/status` answers its `to_payload()`, `/metrics` reads its fields, and its alarms are the
table the retained MQTT status shows (`StationEvents`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lineinspect import __version__
from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.archive.archive import ArchiveStatus
from lineinspect.line.capture.supervisor import CameraStatus
from lineinspect.line.events import StationAlarm
from lineinspect.line.mqtt import PublisherStats
from lineinspect.line.reject.alarms import Alarm

MODE_LINE = "line"  # `lineinspect run`: cameras, MQTT, reject station
MODE_OFFLINE = "offline"  # `lineinspect serve`: uploads only


class PartCounts:
    """Parts by final verdict since start, and the undecided ones by what happened to them.

    `skipped`: never inspected (no image, camera lost, queue full, stopped); `late`: past the deadline;
    `outbox_refused`: could not be stored for the MES. Counted from each final result's fields.
    """

    NAMES = (*(v.value for v in Verdict), "skipped", "late", "outbox_refused")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def observe(self, result: Result) -> None:
        """Count one final result (a result sink)."""
        kind = result.undecided_kind
        with self._lock:
            self._values[result.verdict.value] += 1
            if kind is UndecidedKind.LATE:
                self._values["late"] += 1
            elif kind is UndecidedKind.OUTBOX_REFUSED:
                self._values["outbox_refused"] += 1
            elif kind is not None and not kind.inspected:
                self._values["skipped"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    @property
    def decided(self) -> int:
        """Final results so far (every verdict)."""
        with self._lock:
            return sum(self._values[v.value] for v in Verdict)


@dataclass(frozen=True, slots=True)
class StationInfo:
    id: str
    path: str  # UNS path
    state: str  # created, starting, running, stopping, stopped; serving (offline)
    mode: str  # MODE_LINE or MODE_OFFLINE
    started_at: datetime | None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "state": self.state,
            "mode": self.mode,
            "started_at": None if self.started_at is None else iso_utc(self.started_at, "seconds"),
            "version": __version__,
        }


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    host: str
    port: int
    embedded: bool  # the demo's embedded loopback broker
    stats: PublisherStats

    def to_payload(self) -> dict[str, Any]:
        return {**asdict(self.stats), "host": self.host, "port": self.port, "embedded": self.embedded}


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    depth: int  # results stored and not yet acknowledged by the broker
    alarm: bool  # over its alarm depth

    def to_payload(self) -> dict[str, Any]:
        return {"depth": self.depth, "alarm": self.alarm}


@dataclass(frozen=True, slots=True)
class RejectStatus:
    counters: dict[str, int]
    alarms: tuple[Alarm, ...]
    backend: str  # reject.backend.type: dry_run (switches nothing), modbus, opcua, neuron
    mode: str  # reject.mode: timed or verdict_to_plc

    def to_payload(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "mode": self.mode,
            "counters": dict(self.counters),
            "alarms": [a.to_payload() for a in self.alarms],
        }


@dataclass(frozen=True, slots=True)
class HealthSample:
    """One inspected frame's measures (focus, mean_level, contrast, noise) for the camera health trend."""

    at: datetime
    measures: dict[str, float]

    def to_payload(self) -> dict[str, Any]:
        return {"at": iso_utc(self.at, "milliseconds"), **{k: round(v, 3) for k, v in self.measures.items()}}


@dataclass(frozen=True, slots=True)
class CameraHealthStatus:
    """A camera's frames over time (line/camera_health.py): implausible frames, averages against the baseline."""

    camera_id: str
    frames: int  # inspected frames seen (plausible or not)
    implausible_total: int
    implausible_in_row: int
    implausible_alarm: bool
    drift_alarm: bool
    drift_warn_share: float
    averages: dict[str, float]  # measure → average over the recent plausible frames
    baseline: dict[str, float] | None  # measure → the taught baseline's median; None: the card has none
    drift_shares: dict[str, float]  # measure → (average − baseline) / baseline
    history: tuple[HealthSample, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "frames": self.frames,
            "implausible_total": self.implausible_total,
            "implausible_in_row": self.implausible_in_row,
            "implausible_alarm": self.implausible_alarm,
            "drift_alarm": self.drift_alarm,
            "drift_warn_share": self.drift_warn_share,
            "averages": {k: round(v, 3) for k, v in self.averages.items()},
            "baseline": None if self.baseline is None else {k: round(v, 3) for k, v in self.baseline.items()},
            "drift_shares": {k: round(v, 4) for k, v in self.drift_shares.items()},
            "history": [h.to_payload() for h in self.history],
        }


@dataclass(frozen=True, slots=True)
class StationStatus:
    station: StationInfo
    counts: dict[str, int]
    cameras: tuple[CameraStatus, ...] = ()
    broker: BrokerStatus | None = None
    outbox: OutboxStatus | None = None
    reject: RejectStatus | None = None
    alarms: tuple[StationAlarm, ...] = field(default_factory=tuple)
    archive: ArchiveStatus | None = None  # None: the station keeps no frames
    recipes: dict[str, str | None] = field(default_factory=dict)  # each camera's active recipe
    setup: int | None = None  # the generation of loaded recipes and models (None: offline)
    camera_health: tuple[CameraHealthStatus, ...] = ()  # the cameras' frame measures over time

    def to_payload(self) -> dict[str, Any]:
        """The JSON of `GET /v1/status`."""
        return {
            "station": self.station.to_payload(),
            "cameras": [c.to_payload() for c in self.cameras],
            "broker": None if self.broker is None else self.broker.to_payload(),
            "outbox": None if self.outbox is None else self.outbox.to_payload(),
            "reject": None if self.reject is None else self.reject.to_payload(),
            "alarms": [a.to_payload() for a in self.alarms],
            "counts": dict(self.counts),
            "archive": None if self.archive is None else self.archive.to_payload(),
            "recipes": dict(self.recipes),
            "setup": self.setup,
            "camera_health": [h.to_payload() for h in self.camera_health],
        }


StatusProvider = Callable[[], StationStatus]


class OfflineStatus:
    """Status of `lineinspect serve` alone: no cameras, broker or reject station; uploads counted.

    `observe_result` is a result sink; call the object for the status. archive: the image archive of
    uploads, when there is one (its status is shown; its alarms are its status's `problem`).
    """

    def __init__(
        self, *, station_id: str, station_path: str, archive: Callable[[], ArchiveStatus] | None = None
    ) -> None:
        self.station_id = station_id
        self.station_path = station_path
        self.archive = archive
        self.started_at = utc_now()
        self.counts = PartCounts()

    def observe_result(self, result: Result) -> None:
        self.counts.observe(result)

    def __call__(self) -> StationStatus:
        info = StationInfo(self.station_id, self.station_path, "serving", MODE_OFFLINE, self.started_at)
        archive = None if self.archive is None else self.archive()
        return StationStatus(station=info, counts=self.counts.snapshot(), archive=archive)
