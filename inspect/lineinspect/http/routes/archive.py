"""The archived frame of a result and its reviews.

`GET /v1/results/{result_id}/image` answers the frame as the camera delivered it (PNG), `?overlay=true`
with the result's defects drawn on it (rendered now, from the stored result: nothing is stored twice),
`?max_width=` scaled down for thumbnails; 404 `image_not_kept` / `archive_off` with the reason when there
is none. `POST /v1/results/{result_id}/review` (API key) records an operator's judgement of the part, an
audit record beside the result (the result itself is never changed); `GET .../reviews` lists them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.core.clock import utc_now
from lineinspect.core.defects import Box, Defect
from lineinspect.core.overlay import draw_overlay
from lineinspect.core.result import Finding, Result, UndecidedKind, Verdict
from lineinspect.http.deps import ApiKeyChecked, Services
from lineinspect.http.errors import ApiError, ErrorBody
from lineinspect.line.archive.archive import ImageArchive, NotKept, encode_png
from lineinspect.line.archive.index import ArchiveIndex
from lineinspect.line.archive.reviews import LABEL_VERDICTS, ReviewLabel
from lineinspect.line.results_store import ResultStore

MAX_MASK_BYTES = 5_000_000
NO_KEY_NAME = "no-key"  # who a review is by when the station has no API key


class ReviewBody(BaseModel):
    """An operator's judgement of one part."""

    model_config = ConfigDict(extra="forbid")

    label: ReviewLabel = Field(
        ...,
        description="confirmed_defect or false_reject (for a failed or undecided part), escape or confirmed_good "
        "(for a passed part).",
    )
    defect_class: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The defect's class (confirmed_defect, escape); default: the result's first counting class.",
    )
    box_px: tuple[float, float, float, float] | None = Field(
        None, description="The defect's box [x0, y0, x1, y1] in pixels of the frame."
    )
    mask_png_base64: str | None = Field(
        None,
        description="The defect painted as a PNG of the frame's size, base64; pixels above 127 are defect.",
    )
    note: str | None = Field(None, max_length=2000, description="Free text for the record.")
    reviewer: str | None = Field(None, max_length=100, description="Who looked (as typed; the API key is recorded).")


def _not_found(exc: NotKept) -> ApiError:
    return ApiError(404, exc.code, exc.message)


def _archive_or_404(archive: ImageArchive | None) -> ImageArchive:
    if archive is None:
        raise ApiError(
            404,
            "archive_off",
            "this station keeps no frames: there is no archive: section in its station.yaml",
        )
    return archive


def overlay_view(payload: dict[str, Any]) -> Result:
    """Enough of a result, from its stored payload, to draw its overlay (boxes, classes, scores, verdict)."""
    findings = []
    for d in payload.get("defects", []):
        x0, y0, x1, y1 = d["box_px"]
        defect = Defect(
            d["class"],
            float(d["score"] or 0.0),
            Box(x0, y0, x1, y1),
            area_px=float(d["area_px"] or 0.0),
            length_px=float(d["length_px"] or 0.0),
            width_px=float(d["width_px"] or 0.0),
        )
        findings.append(Finding(defect, bool(d["counts"]), d.get("why") or ""))
    verdict = Verdict(payload["verdict"])
    decided = datetime.fromisoformat(payload["decided_at"])
    kind = payload.get("undecided_kind")
    return Result(
        result_id=payload["result_id"],
        verdict=verdict,
        undecided_kind=UndecidedKind(kind)
        if kind
        else (UndecidedKind.INFERENCE if verdict is Verdict.UNDECIDED else None),
        reason=payload.get("reason") or "",
        score=payload.get("score"),
        findings=tuple(findings),
        captured_at=decided,
        decided_at=decided,
        recipe_id=None,
        recipe_version=None,
        model_id=None,
        model_sha256=None,
    )


def _scaled(image: np.ndarray, max_width: int | None) -> np.ndarray:
    if max_width is None or image.shape[1] <= max_width:
        return image
    height = max(1, round(image.shape[0] * max_width / image.shape[1]))
    return cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)


def _decode_mask(text: str, width: int, height: int) -> bytes:
    """The painted mask as PNG bytes, checked: base64, a PNG, the frame's size."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, "invalid_request", "body.mask_png_base64: not base64; send the PNG's bytes base64-encoded"
        ) from None
    if len(data) > MAX_MASK_BYTES:
        raise ApiError(413, "upload_too_large", f"body.mask_png_base64: {len(data)} bytes; at most {MAX_MASK_BYTES}")
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ApiError(422, "invalid_request", "body.mask_png_base64: not a readable image; send a grayscale PNG")
    if mask.shape != (height, width):
        raise ApiError(
            422,
            "invalid_request",
            f"body.mask_png_base64: the mask is {mask.shape[1]}x{mask.shape[0]} px but the frame is "
            f"{width}x{height} px; paint it on the frame's own size",
        )
    if not (mask > 127).any():
        raise ApiError(422, "invalid_request", "body.mask_png_base64: no pixel is painted (all 127 or darker)")
    return encode_png(((mask > 127) * 255).astype(np.uint8))


def _check_box(box: tuple[float, float, float, float], width: int | None, height: int | None) -> None:
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise ApiError(
            422, "invalid_request", f"body.box_px {list(box)}: give [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
        )
    if width is not None and height is not None and (x0 < 0 or y0 < 0 or x1 > width or y1 > height):
        raise ApiError(422, "invalid_request", f"body.box_px {list(box)}: outside the {width}x{height} px frame")


def archive_router(archive: ImageArchive | None, store: ResultStore) -> APIRouter:
    """Routes over the station's image archive (None: the station has none) and its results store."""
    router = APIRouter(prefix="/v1/results", tags=["archive"])

    @router.get(
        "/{result_id}/image",
        summary="The archived frame of a result (PNG)",
        description="The frame as the camera delivered it; `overlay=true`: with the result's defects and "
        "verdict drawn; `max_width`: scaled down (thumbnails).",
        responses={
            200: {"content": {"image/png": {}}, "description": "The frame."},
            404: {"model": ErrorBody, "description": "Not kept: sampled out, skipped, evicted, or no archive."},
        },
        response_class=Response,
    )
    def get_image(
        result_id: str,
        overlay: Annotated[bool, Query(description="Draw the result's defects and verdict on the frame.")] = False,
        max_width: Annotated[int | None, Query(ge=16, le=8192, description="Scale down to this width in px.")] = None,
    ) -> Response:
        try:
            stored = _archive_or_404(archive).frame(result_id)
        except NotKept as exc:
            raise _not_found(exc) from None
        image = stored.image
        if overlay:
            if image.dtype != np.uint8:  # 16-bit frames: drawn on an 8-bit view
                image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
            image = draw_overlay(image, overlay_view(stored.row.payload))
        return Response(
            encode_png(_scaled(image, max_width)), media_type="image/png", headers={"Cache-Control": "max-age=3600"}
        )

    @router.post(
        "/{result_id}/review",
        summary="Record an operator's review of a part",
        status_code=201,
        responses={
            401: {"model": ErrorBody, "description": "API key missing or wrong."},
            404: {"model": ErrorBody, "description": "Unknown result, or the station keeps no frames."},
            413: {"model": ErrorBody, "description": f"The mask PNG is over {MAX_MASK_BYTES} bytes."},
            422: {"model": ErrorBody, "description": "The review does not fit the part (label, box, mask)."},
        },
    )
    def post_review(result_id: str, body: ReviewBody, _key: ApiKeyChecked, services: Services) -> JSONResponse:
        index = _index_or_404(archive)
        row = index.get(result_id)
        payload = row.payload if row is not None else store.get(result_id)
        if payload is None:
            raise ApiError(
                404,
                "unknown_result",
                f"no result {result_id!r} is archived or stored here; check the id (the dashboard's search finds a "
                "part by its part id)",
            )
        verdict = payload["verdict"]
        if verdict not in LABEL_VERDICTS[body.label]:
            fits = sorted(label.value for label, verdicts in LABEL_VERDICTS.items() if verdict in verdicts)
            raise ApiError(
                422,
                "invalid_request",
                f"body.label: a {verdict} part cannot be marked {body.label.value}; use {' or '.join(fits)}",
            )
        image = payload.get("image") or {}
        width, height = image.get("width"), image.get("height")
        if body.box_px is not None:
            _check_box(body.box_px, width, height)
        mask = None
        if body.mask_png_base64 is not None:
            if width is None or height is None:
                raise ApiError(422, "invalid_request", "body.mask_png_base64: this result has no frame to paint on")
            mask = _decode_mask(body.mask_png_base64, width, height)
        key_name = services.settings.api_key_env if services.api_key else NO_KEY_NAME
        review = index.add_review(
            result_id=result_id,
            label=body.label.value,
            defect_class=body.defect_class,
            box_px=body.box_px,
            mask_png=mask,
            note=body.note,
            reviewer=body.reviewer,
            key_name=key_name,
            at=utc_now(),
        )
        assert archive is not None
        archive.count_review()
        return JSONResponse(review.to_payload(), status_code=201)

    @router.get(
        "/{result_id}/reviews",
        summary="The reviews of a part, oldest first (the last one counts)",
        responses={404: {"model": ErrorBody, "description": "The station keeps no frames (no archive)."}},
    )
    def get_reviews(result_id: str) -> dict[str, Any]:
        reviews = _index_or_404(archive).reviews(result_id)
        return {"result_id": result_id, "reviews": [r.to_payload() for r in reviews]}

    return router


def _index_or_404(archive: ImageArchive | None) -> ArchiveIndex:
    try:
        return _archive_or_404(archive).index
    except NotKept as exc:
        raise _not_found(exc) from None
