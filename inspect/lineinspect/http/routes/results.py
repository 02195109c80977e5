"""GET /v1/results: the station's recent results from its ResultStore, newest first.

`GET /v1/results/summary` gives the dashboard its numbers (counts by verdict,
yield per camera, defect Pareto); `GET /v1/results/{result_id}` one result.
Only what the store still holds is served (it keeps a bounded number of
results); the MES has the complete record.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BeforeValidator, StringConstraints

from lineinspect.core.clock import utc_now
from lineinspect.core.result import Verdict
from lineinspect.http.errors import ApiError, ErrorBody
from lineinspect.line.results_store import MAX_QUERY_LIMIT, MAX_SQLITE_INT, ResultStore

VERDICTS = tuple(v.value for v in Verdict)
# One verdict or a comma-separated list (`fail,undecided`), as the OpenAPI states it.
VERDICT_LIST_PATTERN = rf"^ *({'|'.join(VERDICTS)})( *, *({'|'.join(VERDICTS)}))* *$"
MAX_WINDOW_MIN = 366 * 24 * 60

_BAD_QUERY: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "A query parameter is malformed or out of range."}
}

_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: object) -> object:
    """pydantic reads `since=186` as 186 s after 1970; a number here is a mistake, not a time: refuse it."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(f"{value!r} is a number; give an ISO 8601 time with a zone, e.g. 2024-05-01T06:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]
SinceQuery = Annotated[
    IsoTime | None,
    Query(description="Decided at or after this UTC time, ISO 8601 with a zone, e.g. 2024-05-01T06:00:00Z."),
]
UntilQuery = Annotated[IsoTime | None, Query(description="Decided before this UTC time (ISO 8601 with a zone).")]


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(
            422,
            "invalid_request",
            f"query.{name}: {value.isoformat()} has no time zone; add Z for UTC or an offset, "
            f"e.g. {value.isoformat()}Z",
        )
    return value


def _time_range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    # since >= until is an empty range, answered with no results (the OpenAPI cannot state the order, so a
    # refusal would be a schema-valid request rejected).
    return _aware("since", since), _aware("until", until)


def _verdicts(values: list[str] | None) -> list[str] | None:
    """`verdict=fail&verdict=undecided` or `verdict=fail,undecided`."""
    if not values:
        return None
    wanted: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item not in VERDICTS:
                raise ApiError(
                    422, "invalid_request", f"query.verdict: {item!r} is not a verdict; use {', '.join(VERDICTS)}"
                )
            wanted.append(item)
    return wanted


def results_router(store: ResultStore) -> APIRouter:
    """Routes over `store`: `GET /v1/results`, `/v1/results/summary`, `/v1/results/{result_id}`."""
    router = APIRouter(prefix="/v1/results", tags=["results"])

    # Plain `def`: SQLite calls run in the threadpool, not on the event loop.
    @router.get(
        "",
        summary="Recent results, newest first",
        description="Filter by camera, verdict (repeat or comma-separate: `verdict=fail,undecided` = the "
        "rejects), source (`camera` or `upload`), decided time, `part_id` or `result_id`; page with `offset` or "
        "`before_sequence`.",
        responses=_BAD_QUERY,
    )
    def list_results(
        camera: Annotated[str | None, Query(description="Camera id.", min_length=1, max_length=200)] = None,
        verdict: Annotated[
            list[Annotated[str, StringConstraints(pattern=VERDICT_LIST_PATTERN)]] | None,
            Query(description="pass, fail, undecided; several allowed."),
        ] = None,
        source: Annotated[
            Literal["camera", "upload"] | None, Query(description="camera: station cameras; upload: HTTP uploads.")
        ] = None,
        since: SinceQuery = None,
        until: UntilQuery = None,
        before_sequence: Annotated[
            int | None,
            Query(ge=0, le=MAX_SQLITE_INT, description="Only results with a smaller station sequence (paging)."),
        ] = None,
        part_id: Annotated[
            str | None, Query(description="Only this part (its part_id, as the PLC or MES gave it).", max_length=200)
        ] = None,
        result_id: Annotated[str | None, Query(description="Only this result.", max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT, description="At most this many results.")] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000, description="Skip this many newest matches.")] = 0,
    ) -> dict[str, Any]:
        since, until = _time_range(since, until)
        results = store.query(
            camera=camera,
            verdict=_verdicts(verdict),
            source=source,
            since=since,
            until=until,
            before_sequence=before_sequence,
            part_id=part_id,
            result_id=result_id,
            limit=limit,
            offset=offset,
        )
        return {
            "count": len(results),
            "limit": limit,
            "offset": offset,
            # Another page may exist only when this one is full.
            "next_offset": offset + len(results) if len(results) == limit else None,
            "results": results,
        }

    @router.get(
        "/summary",
        summary="Counts by verdict, yield per camera and the defect Pareto",
        description="Over `window_min` minutes up to now, or `since`/`until` (both: where they overlap), or "
        "everything stored. A range whose `since` is not before its `until` is empty.",
        responses=_BAD_QUERY,
    )
    def results_summary(
        window_min: Annotated[
            int | None, Query(ge=1, le=MAX_WINDOW_MIN, description="The last this many minutes (server clock).")
        ] = None,
        since: SinceQuery = None,
        until: UntilQuery = None,
    ) -> dict[str, Any]:
        since, until = _time_range(since, until)
        if window_min is not None:
            # With since/until as well: the part of that range inside the window (the schema cannot forbid both).
            window_start = utc_now() - timedelta(minutes=window_min)
            since = window_start if since is None else max(since, window_start)
        summary = store.summary(since=since, until=until)
        summary["window_min"] = window_min
        return summary

    @router.get(
        "/{result_id}",
        summary="One result by its result_id",
        responses={404: {"model": ErrorBody, "description": "Not stored (unknown, or pruned by retention)."}},
    )
    def get_result(result_id: str) -> dict[str, Any]:
        payload = store.get(result_id)
        if payload is None:
            raise ApiError(
                404,
                "unknown_result",
                f"no result {result_id!r} is stored here; the store keeps only recent results "
                "(the MES has older ones), or the id is wrong",
            )
        return payload

    return router
