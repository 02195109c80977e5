"""Changeover and reload over HTTP: `PUT /v1/cameras/{camera_id}/recipe`, `POST /v1/reload`, `GET /v1/recipes`.

The same rules as the MQTT commands and the PLC product code (`line/changeover.py`): a switch takes
effect from the camera's next part; anything refused changes nothing and says why.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.http.deps import ApiKeyChecked
from lineinspect.http.errors import ApiError
from lineinspect.line.changeover import Change, RecipeBook


class RecipeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(..., min_length=1, max_length=128, description="The recipe id to run from the next part.")


def recipes_router(book: RecipeBook) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["changeover"])

    @router.get("/recipes", summary="Each camera's active recipe, the loaded recipes and models")
    def get_recipes() -> dict[str, Any]:
        inspector = book.current
        return {
            "setup": book.setup,
            "cameras": book.active(),
            "recipes": {r.id: {"version": r.version, "model": r.model} for r in inspector.recipes.values()},
            "models": {m: model.sha256 for m, model in inspector.models.items()},
        }

    @router.put(
        "/cameras/{camera_id}/recipe",
        summary="Switch a camera's recipe (product changeover) from its next part",
        responses={404: {"description": "No such camera."}, 409: {"description": "Refused: unknown recipe."}},
    )
    def put_recipe(camera_id: str, request: RecipeRequest, _: ApiKeyChecked) -> dict[str, Any]:
        if camera_id not in book.active():
            raise ApiError(404, "unknown_camera", f"no camera '{camera_id}'; this station has {sorted(book.active())}")
        return _answer(book.select(camera_id, request.recipe, source="http"))

    @router.post(
        "/reload",
        summary="Load station.yaml's recipes and the models anew; swapped in at a part boundary",
        responses={409: {"description": "Refused: the running recipes and models stay (the message says why)."}},
    )
    def post_reload(_: ApiKeyChecked) -> dict[str, Any]:
        return _answer(book.reload(source="http"))

    return router


def _answer(change: Change) -> dict[str, Any]:
    if not change.ok:
        raise ApiError(409, "refused", change.message)
    return change.to_payload()
