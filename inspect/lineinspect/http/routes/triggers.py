"""POST /v1/cameras/{camera_id}/trigger: a part trigger from outside (a PLC gateway, an MES, a test rig).

For cameras in software-trigger mode. The part is tracked like any other: it ends as exactly one
result, `undecided` when it cannot be seen in time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.core.clock import utc_now_iso
from lineinspect.http.deps import ApiKeyChecked
from lineinspect.http.errors import ApiError
from lineinspect.line.capture.base import TriggerMode

# (camera_id, part_id=, encoder_count=) -> trigger id; the station's `trigger`.
Trigger = Callable[..., int]


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_id: str | None = Field(None, max_length=128, description="The part's id (serial, carrier), if known.")
    encoder_count: int | None = Field(None, description="Conveyor encoder count at the trigger, if known.")


def triggers_router(trigger: Trigger, trigger_modes: Mapping[str, TriggerMode], *, run_id: str) -> APIRouter:
    """run_id: the station's run; with the camera and trigger id it names the part in its result."""
    router = APIRouter(tags=["line"])

    @router.post("/v1/cameras/{camera_id}/trigger", status_code=202, summary="Trigger one part on a camera")
    def trigger_part(camera_id: str, _: ApiKeyChecked, request: TriggerRequest | None = None) -> dict[str, Any]:
        mode = trigger_modes.get(camera_id)
        if mode is None:
            raise ApiError(404, "unknown_camera", f"no camera '{camera_id}'; this station has {sorted(trigger_modes)}")
        if mode is not TriggerMode.SOFTWARE:
            raise ApiError(
                409,
                "not_software_triggered",
                f"camera '{camera_id}' runs in {mode.value} trigger mode; set acquisition.trigger.mode: software "
                f"in cameras/{camera_id}.yaml to trigger it over HTTP",
            )
        body = request or TriggerRequest()
        trigger_id = trigger(camera_id, part_id=body.part_id, encoder_count=body.encoder_count)
        # Answered only after the part is journaled: from here on it ends as a result, whatever happens.
        return {"camera_id": camera_id, "run_id": run_id, "trigger_id": trigger_id, "at": utc_now_iso()}

    return router
