"""GET /v1/status: the station at a glance (station, cameras, broker, outbox, reject station, alarms, counts).

The status comes from a provider: the station runtime's `Station.status`, or `OfflineStatus` when
`lineinspect serve` runs alone (uploads only). Both give a `StationStatus`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lineinspect.line.status import StatusProvider


def status_router(provider: StatusProvider) -> APIRouter:
    """`GET /v1/status` answering `provider().to_payload()`."""
    router = APIRouter(prefix="/v1", tags=["status"])

    # Plain `def`: the provider takes locks of camera and MQTT threads; keep it off the event loop.
    @router.get(
        "/status",
        summary="Station, cameras, broker, outbox, reject station, alarms and counts",
        description="`station` {id, path, state, mode, started_at, version}; `cameras`: one status per camera "
        "(state, queue, counters, SDK stream statistics); `broker`: MQTT connection and counters; `outbox` "
        "{depth, alarm}; `reject`: reject counters and alarms (null without a reject station); `alarms`: every "
        "active alarm (source reject or station); `counts`: parts by verdict, skipped, late, outbox_refused.",
    )
    def get_status() -> dict[str, Any]:
        return provider().to_payload()

    return router
