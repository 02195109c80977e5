"""GET /v1/status: the station at a glance (station, cameras, broker, outbox, reject station, counts).

The dict comes from a status provider: the station runtime's `status()`, or
`OfflineStatus` when `lineinspect serve` runs alone (uploads only).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from lineinspect import __version__
from lineinspect.core.recipe import Verdict
from lineinspect.core.result import Result
from lineinspect.line.metrics import UndecidedKind, undecided_kind

StatusProvider = Callable[[], Mapping[str, Any]]


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds").replace("+00:00", "Z")


class OfflineStatus:
    """Status of `lineinspect serve` alone: no cameras, broker or reject station; uploads counted.

    Call `observe_result` with each result (a result sink); call the object for the status dict.
    """

    def __init__(self, *, station_id: str, station_path: str) -> None:
        self.station_id = station_id
        self.station_path = station_path
        self.started_at = datetime.now(UTC)
        self._lock = threading.Lock()
        self._counts = {**{v.value: 0 for v in Verdict}, "skipped": 0}

    def observe_result(self, result: Result) -> None:
        with self._lock:
            self._counts[result.verdict.value] += 1
            if result.verdict is Verdict.UNDECIDED and undecided_kind(result.reason) is UndecidedKind.SKIPPED:
                self._counts["skipped"] += 1

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        return {
            "station": {
                "id": self.station_id,
                "path": self.station_path,
                "state": "serving",
                "mode": "offline",  # uploads only; `lineinspect run` adds cameras, MQTT and rejects
                "started_at": _iso(self.started_at),
                "version": __version__,
            },
            "cameras": [],
            "broker": None,
            "outbox": None,
            "reject": None,
            "counts": counts,
        }


def status_router(provider: StatusProvider) -> APIRouter:
    """`GET /v1/status` answering `provider()` (a JSON-able dict)."""
    router = APIRouter(prefix="/v1", tags=["status"])

    # Plain `def`: the provider takes locks of camera and MQTT threads; keep it off the event loop.
    @router.get(
        "/status",
        summary="Station, cameras, broker, outbox, reject station and counts",
        description="`station` {id, path, state, started_at}; `cameras`: one status per camera (state, queue, "
        "counters, SDK stream statistics); `broker`: MQTT connection and counters; `outbox` {depth, alarm}; "
        "`reject`: reject counters and alarms (null without a reject station); `counts`: parts by verdict.",
    )
    def get_status() -> dict[str, Any]:
        return dict(provider())

    return router
