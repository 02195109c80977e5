"""POST /v1/inspections: inspect one uploaded image with the station's Inspector.

The upload is read with a byte limit (413 as soon as it is exceeded, before
reading the body when Content-Length already says so), decoded and inspected
in the bounded pool, and answered with the result payload. A result that
takes longer than `http.inference_timeout_ms` is answered as `undecided`;
anything that goes wrong inside the inspection becomes `undecided` too, never
a 500.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Message

from lineinspect.config import HttpSection
from lineinspect.core.decode import decode_image, sniff_format
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector, UnknownRecipe, with_decode_time
from lineinspect.core.overlay import draw_overlay, encode_overlay
from lineinspect.core.result import Result, UndecidedKind, result_schema
from lineinspect.errors import ImageError
from lineinspect.http.deps import API_KEY_HEADER, ApiKeyChecked, HttpServices, PoolDep, Services
from lineinspect.http.errors import ApiError, ErrorBody
from lineinspect.http.pool import PoolFull, PoolTimeout

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["inspections"])

FILE_FIELD = "file"
RECIPE_FIELD = "recipe"
CAMERA_FIELD = "camera"
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_NAME_CHARS = 200
MAX_FORM_FIELDS = 8
RETRY_AFTER_S = 1


def pixel_limit(settings: HttpSection) -> int:
    """The most pixels one upload may decode: http.max_pixels, within its worker's share of
    http.decode_budget_pixels (decoding costs memory per pixel, whatever the file's size)."""
    return min(settings.max_pixels, settings.decode_budget_pixels // max(1, settings.inference_workers))


class UploadTooLarge(Exception):
    pass


class _LimitedReceive:
    """Wraps the ASGI receive channel; raises UploadTooLarge once `limit_bytes` of body have arrived."""

    def __init__(self, receive: Callable[[], Awaitable[Message]], limit_bytes: int) -> None:
        self._receive = receive
        self.limit_bytes = limit_bytes
        self.received_bytes = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received_bytes += len(message.get("body", b""))
            if self.received_bytes > self.limit_bytes:
                raise UploadTooLarge
        return message


@dataclass(frozen=True, slots=True)
class InspectedUpload:
    result: Result
    overlay: bytes | None = None
    overlay_media_type: str | None = None
    frame: Frame | None = None  # the decoded upload, for the image archive


def inspect_upload(
    inspector: Inspector,
    data: bytes,
    *,
    name: str,
    recipe_id: str | None,
    max_pixels: int,
    annotate: bool,
    camera_id: str | None = None,
) -> InspectedUpload:
    """Decode and inspect one upload (runs in a pool thread).

    Raises ImageError for a file that is not a usable image; every other
    failure is an `undecided` result. camera_id: the station camera that took
    the image, so its calibration (undistortion, sizes in mm) applies.
    """
    t0 = time.monotonic_ns()
    try:
        image = decode_image(data, max_pixels=max_pixels, name=name)
    except ImageError:
        raise
    except Exception as exc:  # a decoder bug on a hostile file is still the file's fault: 422, not 500
        raise ImageError("corrupt", f"{name}: cannot be decoded: {type(exc).__name__}: {exc}") from None
    decode_ms = (time.monotonic_ns() - t0) / 1e6
    frame = Frame(image=image, source=name, camera_id=camera_id)
    result = with_decode_time(inspector.inspect(frame, recipe_id), decode_ms)
    if not annotate:
        return InspectedUpload(result, frame=frame)
    media_type = "image/jpeg" if sniff_format(data) == "JPEG" else "image/png"
    try:
        overlay = encode_overlay(draw_overlay(image, result), media_type)
    except Exception:  # the verdict matters more than the picture
        log.exception("drawing the overlay of upload %s failed", name)
        return InspectedUpload(result, frame=frame)
    return InspectedUpload(result, overlay, media_type, frame)


def _result_schema_for_docs() -> dict[str, Any]:
    schema = dict(result_schema())
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


def _response_schema() -> dict[str, Any]:
    """The result payload, or with annotate=true `{result, annotated_image}`."""
    result = _result_schema_for_docs()
    annotated = {
        "type": "object",
        "additionalProperties": False,
        "required": ["result", "annotated_image"],
        "properties": {
            "result": result,
            "annotated_image": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["media_type", "base64"],
                "properties": {
                    "media_type": {"type": "string", "enum": ["image/png", "image/jpeg"]},
                    "base64": {"type": "string", "contentEncoding": "base64"},
                },
            },
        },
    }
    return {"oneOf": [result, annotated]}


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                # The server reads `file`, `recipe` and `camera` and refuses more than 8 fields (400).
                "additionalProperties": False,
                "properties": {
                    FILE_FIELD: {
                        "type": "string",
                        "format": "binary",
                        "description": "The image: PNG, JPEG, BMP, TIFF, WebP or PGM/PPM (GIF, PDF, HEIF/AVIF and "
                        "JPEG 2000 are refused with 415). At most http.max_upload_bytes, and at most http.max_pixels "
                        "pixels within the http.decode_budget_pixels shared by the http.inference_workers (413 "
                        "above).",
                    },
                    RECIPE_FIELD: {
                        "type": "string",
                        "description": "Recipe id (same as the `recipe` query parameter).",
                    },
                    CAMERA_FIELD: {
                        "type": "string",
                        "description": "Calibrated camera that took the image (same as the `camera` query parameter).",
                    },
                },
                "maxProperties": MAX_FORM_FIELDS,
                "description": f"At most {MAX_FORM_FIELDS} form fields and one file; the whole body must arrive "
                "within http.upload_timeout_s (408).",
            }
        }
    },
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Empty file or malformed multipart body."},
    401: {"model": ErrorBody, "description": f"API key missing or wrong ({API_KEY_HEADER} header)."},
    408: {"model": ErrorBody, "description": "The upload did not arrive within http.upload_timeout_s."},
    404: {
        "model": ErrorBody,
        "description": "Unknown recipe, or a camera without a calibration; the message lists the known ones.",
    },
    413: {
        "model": ErrorBody,
        "description": "Over http.max_upload_bytes, or over the pixels one upload may decode (http.max_pixels "
        "within its worker's share of the decode budget).",
    },
    415: {
        "model": ErrorBody,
        "description": "Not an image, an unsupported format (GIF, PDF, HEIF/AVIF, JPEG 2000, ...), or not "
        "multipart/form-data.",
    },
    422: {
        "model": ErrorBody,
        "description": "Truncated or corrupt image, the `file` field missing, or a malformed query parameter.",
    },
    503: {"model": ErrorBody, "description": "Every worker busy and the waiting line full; see Retry-After."},
}


@router.post(
    "/inspections",
    summary="Inspect an uploaded image",
    description="Upload one image as multipart/form-data field `file`; the answer is the result payload "
    "(`lineinspect.result/1`). With `annotate=true` the answer is `{result, annotated_image}` where "
    "annotated_image holds the image with defects drawn, base64-encoded (null if it could not be drawn).",
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        200: {
            "description": "The result (or, with annotate=true, the result and the annotated image).",
            "content": {"application/json": {"schema": _response_schema()}},
        },
        **_ERRORS,
    },
)
async def create_inspection(
    request: Request,
    _api_key: ApiKeyChecked,
    services: Services,
    pool: PoolDep,
    recipe: Annotated[str | None, Query(description="Recipe id; default: the station's default recipe.")] = None,
    annotate: Annotated[bool, Query(description="Also return the image with the defects drawn.")] = False,
    camera: Annotated[
        str | None,
        Query(
            description="Calibrated camera that took the image: its undistortion and mm scale apply and the "
            "result carries its calibration id. Default: none (sizes in px).",
            min_length=1,
            max_length=MAX_NAME_CHARS,
        ),
    ] = None,
) -> JSONResponse:
    settings = services.settings
    inspector = services.inspector
    if recipe is not None:
        _check_recipe(inspector, recipe)
    if camera is not None:
        _check_camera(inspector, camera)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "not_multipart",
            f"send the image as multipart/form-data field '{FILE_FIELD}' "
            f"(e.g. curl -F {FILE_FIELD}=@part.png ...); got Content-Type '{content_type or 'none'}'",
        )
    body_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(settings.max_upload_bytes, f"the upload is {int(declared)} bytes")

    try:
        data, filename, form_recipe, form_camera = await asyncio.wait_for(
            _read_upload(request, body_limit, settings.max_upload_bytes), settings.upload_timeout_s
        )
    except TimeoutError:
        raise ApiError(
            408,
            "upload_timeout",
            f"the upload did not arrive within {settings.upload_timeout_s:g} s (http.upload_timeout_s); send it again",
        ) from None
    if recipe is None and form_recipe:
        recipe = form_recipe
        _check_recipe(inspector, recipe)
    if camera is None and form_camera:
        camera = form_camera
        _check_camera(inspector, camera)

    job = partial(
        inspect_upload,
        inspector,
        data,
        name=filename,
        recipe_id=recipe,
        max_pixels=pixel_limit(settings),
        annotate=annotate,
        camera_id=camera,
    )
    try:
        inspected = await pool.run(job, timeout_s=settings.inference_timeout_ms / 1000)
    except ImageError as exc:
        raise ApiError.from_image_error(exc) from None
    except PoolFull as exc:
        raise ApiError(
            503, "busy", f"the station is busy ({exc}); retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    except PoolTimeout:
        undecided = Result.undecided(
            None,
            UndecidedKind.TIMEOUT,
            f"timed out: not inspected within {settings.inference_timeout_ms} ms (http.inference_timeout_ms)",
            provenance=inspector.provenance(recipe),
            source=filename,
        )
        inspected = InspectedUpload(undecided)

    image_ref = _archive(services, inspected)
    result = inspected.result.stamped(station=services.station_path, image_ref=image_ref)
    services.result_sinks(result)
    log.info("upload %s: %s (%s)", filename, result.verdict.value, result.reason)
    payload = result.to_payload()
    if not annotate:
        return JSONResponse(payload)
    annotated = None
    if inspected.overlay is not None:
        annotated = {
            "media_type": inspected.overlay_media_type,
            "base64": base64.b64encode(inspected.overlay).decode("ascii"),
        }
    return JSONResponse({"result": payload, "annotated_image": annotated})


def _archive(services: HttpServices, inspected: InspectedUpload) -> str | None:
    """The upload's frame to the image archive (same rules as the line's); its image.ref or None."""
    if services.archive is None or inspected.frame is None:
        return None
    try:
        return services.archive.keep(inspected.result, inspected.frame)
    except Exception:  # a failing archive must not fail the upload
        log.exception("image archive failed for upload result %s", inspected.result.result_id)
        return None


def _check_recipe(inspector: Inspector, recipe_id: str) -> None:
    try:
        inspector.recipe(recipe_id)
    except UnknownRecipe as exc:
        raise ApiError(404, "unknown_recipe", str(exc)) from None


def _check_camera(inspector: Inspector, camera_id: str) -> None:
    # Only a calibrated camera changes the result; an unknown name is more likely a typo than intent.
    if camera_id not in inspector.calibrations:
        known = sorted(inspector.calibrations)
        raise ApiError(
            404,
            "unknown_camera",
            f"camera '{camera_id}' has no calibration on this station (calibrated cameras: {known or 'none'}); "
            "name a calibrated camera, or leave camera out to have sizes in px",
        )


def _too_large(limit_bytes: int, what: str) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"{what}; the limit is {limit_bytes} bytes (http.max_upload_bytes). Send a smaller image or raise the limit",
    )


async def _read_upload(
    request: Request, body_limit: int, max_upload_bytes: int
) -> tuple[bytes, str, str | None, str | None]:
    """The `file` field's bytes, its file name, and the optional `recipe` and `camera` fields."""
    limited = _LimitedReceive(request.receive, body_limit)
    limited_request = Request(request.scope, limited)
    try:
        async with limited_request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:
            upload = form.get(FILE_FIELD)
            form_recipe = form.get(RECIPE_FIELD)
            form_camera = form.get(CAMERA_FIELD)
            if upload is None:
                fields = sorted(form.keys())
                raise ApiError(
                    422,
                    "invalid_request",
                    f"the multipart field '{FILE_FIELD}' is missing (fields sent: {fields or 'none'}); "
                    f"send the image as field '{FILE_FIELD}', e.g. curl -F {FILE_FIELD}=@part.png ...",
                )
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"the multipart field '{FILE_FIELD}' is text, not a file; attach the image as a file "
                    f"(curl -F {FILE_FIELD}=@part.png, note the @)",
                )
            if upload.size is not None and upload.size > max_upload_bytes:
                raise _too_large(max_upload_bytes, f"the file is {upload.size} bytes")
            data = await upload.read()
            filename = _clean_name(upload.filename)
    except UploadTooLarge:
        raise _too_large(max_upload_bytes, f"the upload is over {body_limit} bytes") from None
    except (MultiPartException, StarletteHTTPException) as exc:
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise ApiError(400, "bad_multipart", f"the multipart/form-data body cannot be read: {detail}") from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client closed the connection during the upload") from None
    if len(data) > max_upload_bytes:
        raise _too_large(max_upload_bytes, f"the file is {len(data)} bytes")
    return (
        data,
        filename,
        form_recipe if isinstance(form_recipe, str) else None,
        form_camera if isinstance(form_camera, str) else None,
    )


def _clean_name(filename: str | None) -> str:
    """The upload's file name as shown in results and messages: printable, bounded."""
    name = "".join(ch for ch in (filename or "") if ch.isprintable()).strip()
    return name[:MAX_NAME_CHARS] or "upload"
