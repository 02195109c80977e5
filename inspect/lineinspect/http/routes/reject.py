"""The operator's reset of the reject station: `POST /v1/reject/reset`.

Alarms that prove nothing by passing (`confirm_missing`, `ack_missing`, `actuator_error`,
`tracking_overflow`) and the stop-line output stay latched until someone has looked; this is that
someone's button, the same as the MQTT command `reset_alarms`. Each alarm it clears is audited and
announced as cleared ("reset by http"); a condition still there raises its alarm again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.http.deps import ApiKeyChecked
from lineinspect.http.errors import ErrorBody
from lineinspect.line.reject.tracker import RejectTracker, reset_message


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: str | None = Field(
        None, max_length=64, description="Who resets (recorded in the audit trail with the alarms cleared)."
    )


def reject_router(tracker: RejectTracker) -> APIRouter:
    router = APIRouter(prefix="/v1/reject", tags=["reject"])

    @router.post(
        "/reset",
        summary="Reset the reject station's latched alarms and its stop-line output",
        responses={401: {"model": ErrorBody, "description": "API key missing or wrong."}},
    )
    def post_reset(_: ApiKeyChecked, request: ResetRequest | None = None) -> dict[str, Any]:
        operator = request.operator if request is not None else None
        kinds = tracker.reset_alarms(by=f"http ({operator})" if operator else "http")
        return {"reset": kinds, "message": reset_message(kinds)}

    return router
