"""GET / and /dashboard: one self-contained HTML page for the line (no CDN: plants run offline).

The page polls `/v1/status`, `/v1/results` and `/v1/results/summary` and
shows live verdicts, yield, the defect Pareto, the latest rejects with their
reason, and camera / broker / outbox health.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

DASHBOARD_FILE = "http/static/dashboard.html"


def dashboard_html() -> str:
    return resources.files("lineinspect").joinpath(DASHBOARD_FILE).read_text("utf-8")


def dashboard_router() -> APIRouter:
    """`GET /dashboard` (the page) and `GET /` (redirects to it)."""
    router = APIRouter(tags=["dashboard"])
    page = dashboard_html()

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    @router.get("/dashboard", summary="The station dashboard (HTML)", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        # no-store: after an upgrade the line's screen shows the new page at the next reload.
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return router
