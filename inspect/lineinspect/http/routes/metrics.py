"""GET /metrics: the station's metrics in the Prometheus text format, for a Prometheus scrape."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from lineinspect.line.metrics import CONTENT_TYPE, StationMetrics
from lineinspect.line.status import StatusProvider


def metrics_router(metrics: StationMetrics, status: StatusProvider | None = None) -> APIRouter:
    """`GET /metrics` exposing `metrics` (its own registry) and the numbers of `status()`, read at scrape time."""
    router = APIRouter(tags=["metrics"])

    # Plain `def`: a scrape reads the station status (locks of other threads) off the event loop.
    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format."}},
    )
    def get_metrics() -> Response:
        return Response(content=metrics.exposition(status), media_type=CONTENT_TYPE)

    return router
