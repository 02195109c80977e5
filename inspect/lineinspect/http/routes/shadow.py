"""GET /v1/shadow/report: how a shadow model compares with production on the line's own parts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from lineinspect.http.errors import ApiError
from lineinspect.line.shadow import ShadowStore


def shadow_router(store: ShadowStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["shadow"])

    # Plain `def`: the store is SQLite; keep it off the event loop.
    @router.get(
        "/shadow/report",
        summary="Shadow vs production: agreement, verdict confusion, per class, the parts they disagree on",
    )
    def get_report(
        recipe: Annotated[str | None, Query(max_length=128, description="Only this recipe's parts.")] = None,
        since: Annotated[datetime | None, Query(description="Only parts decided since (ISO 8601 with a zone).")] = None,
        disagreements: Annotated[
            int, Query(ge=0, le=1000, description="Disagreeing parts listed, newest first.")
        ] = 100,
    ) -> dict[str, Any]:
        if since is not None and since.tzinfo is None:
            raise ApiError(422, "invalid_request", f"query.since: {since.isoformat()} has no time zone; add Z for UTC")
        return store.report(recipe=recipe, since=since, disagreements_max=disagreements)

    return router
