"""The app factory: ready objects in, a FastAPI app out.

Nothing here reads the environment or a file; `lineinspect serve` (cli.py)
loads station.yaml, builds the Inspector, reads the API key and calls
`create_app`. Later parts of the service (results, status, metrics, the
dashboard) are added by passing their routers in `routers` and their result
consumers in `result_sinks`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import swagger_ui_bundle
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from lineinspect import __version__
from lineinspect.config import HttpSection
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import ResultSink, ResultSinks
from lineinspect.http.deps import HttpServices
from lineinspect.http.errors import install_error_handlers
from lineinspect.http.pool import InspectionPool
from lineinspect.http.routes import health, inspections

if TYPE_CHECKING:  # the line runtime is not imported for a type
    from lineinspect.line.station import FrameArchive

# Routers every app has; extra ones come after them.
CORE_ROUTERS: tuple[APIRouter, ...] = (health.router, inspections.router)


def create_app(
    inspector: Inspector,
    settings: HttpSection,
    *,
    station_path: str | None = None,
    api_key: str | None = None,
    routers: Sequence[APIRouter] = (),
    result_sinks: Sequence[ResultSink] = (),
    archive: FrameArchive | None = None,
) -> FastAPI:
    """Build the HTTP app around a ready Inspector.

    settings: the station's `http` section (limits, workers, timeout).
    station_path: the station's UNS path, written into every result.
    api_key: required in X-API-Key on mutating endpoints when not empty.
    routers: further routers to serve (results, status, metrics, dashboard).
    result_sinks: called with each upload's result.
    archive: keeps uploads' frames by its rules (their result's image.ref); None: none.

    The inspection pool lives between the app's start-up and shutdown, so
    serve the app with a lifespan (uvicorn does; use `with TestClient(app)`).
    """
    services = HttpServices(
        inspector=inspector,
        settings=settings,
        station_path=station_path,
        api_key=api_key or None,
        result_sinks=ResultSinks(result_sinks),
        archive=archive,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool = InspectionPool(workers=settings.inference_workers, max_waiting=settings.max_waiting)
        services.pool = pool
        try:
            yield
        finally:
            # Waiting uploads are cancelled; running inferences finish (they cannot be interrupted).
            pool.shutdown()

    app = FastAPI(
        title="lineinspect",
        version=__version__,
        description="Line-side visual quality inspection: upload an image, get a verdict with its defects.",
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their assets from a CDN: blank on a line-side box without internet.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    for router in (*CORE_ROUTERS, *routers):
        app.include_router(router)
    _serve_docs(app)
    return app


DOCS_ASSETS = "/docs-assets"


def _serve_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the installed swagger-ui-bundle package (no CDN, no internet needed)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )
