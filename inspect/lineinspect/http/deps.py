"""What routes receive, as `Annotated[..., Depends(...)]` aliases.

Everything comes from the `HttpServices` that `create_app` puts on
`app.state.services`; no route reads the environment or a file. The
dependencies are `async def` because none of them blocks: FastAPI runs a
plain `def` dependency in its thread pool, a thread hop per dependency per
request that the upload path measurably paid for on a 2-core station.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from lineinspect.config import HttpSection
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import ResultSinks
from lineinspect.http.errors import ApiError
from lineinspect.http.pool import InspectionPool

if TYPE_CHECKING:  # the line runtime is not imported for a type
    from lineinspect.line.station import FrameArchive

API_KEY_HEADER = "X-API-Key"


@dataclass
class HttpServices:
    """The ready objects the app serves with.

    `pool` exists between the app's start-up and shutdown (lifespan).
    `result_sinks` are called with every upload's result (local store,
    dashboard feed); a sink that raises is logged and skipped. `archive` takes
    the frames of uploads by its rules (None: none are kept).
    """

    inspector: Inspector
    settings: HttpSection
    station_path: str | None = None
    api_key: str | None = None
    result_sinks: ResultSinks = field(default_factory=ResultSinks)
    archive: FrameArchive | None = None
    pool: InspectionPool | None = field(default=None, repr=False)


async def get_services(request: Request) -> HttpServices:
    services: HttpServices = request.app.state.services
    return services


Services = Annotated[HttpServices, Depends(get_services)]


async def get_inspector(services: Services) -> Inspector:
    return services.inspector


async def get_settings(services: Services) -> HttpSection:
    return services.settings


async def get_pool(services: Services) -> InspectionPool:
    pool = services.pool
    if pool is None or pool.closed:
        raise ApiError(503, "not_ready", "the service is starting or stopping; retry shortly", {"Retry-After": "1"})
    return pool


async def require_api_key(
    services: Services,
    x_api_key: Annotated[
        str | None, Header(alias=API_KEY_HEADER, description="The station's API key, when one is configured.")
    ] = None,
) -> None:
    """Mutating endpoints: the key must match when the station has one."""
    expected = services.api_key
    if not expected:
        return
    if not x_api_key:
        raise ApiError(401, "unauthorized", f"this endpoint needs the station's API key in the {API_KEY_HEADER} header")
    if not hmac.compare_digest(x_api_key.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "unauthorized", f"the {API_KEY_HEADER} header does not match the station's API key")


InspectorDep = Annotated[Inspector, Depends(get_inspector)]
SettingsDep = Annotated[HttpSection, Depends(get_settings)]
PoolDep = Annotated[InspectionPool, Depends(get_pool)]
ApiKeyChecked = Annotated[None, Depends(require_api_key)]
