"""Liveness and readiness, for the plant's supervisor or a container orchestrator."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from lineinspect.http.deps import Services
from lineinspect.http.errors import ErrorBody, error_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Models are loaded and uploads are accepted",
    responses={503: {"model": ErrorBody, "description": "Starting, stopping or no model loaded."}},
)
async def readyz(services: Services) -> Any:
    inspector = services.inspector
    if services.pool is None or services.pool.closed:
        return error_response(503, "not_ready", "the inspection pool is not running (starting or stopping)")
    if not inspector.models:
        return error_response(503, "not_ready", "no model is loaded")
    return JSONResponse(
        {
            "status": "ready",
            "station": services.station_path,
            "models": sorted(inspector.models),
            "recipes": sorted(inspector.recipes),
            "default_recipe": inspector.default_recipe,
        }
    )
