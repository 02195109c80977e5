"""Client errors as JSON `{"error": code, "detail": message}`.

`code` is stable for programs; `detail` says what is wrong and what to do.
How an undecodable upload maps to a status (decode.ImageError codes):

| ImageError code      | status | why                                             |
|----------------------|--------|-------------------------------------------------|
| `empty`              | 400    | the request is wrong: there is nothing in it     |
| `not_an_image`       | 415    | the file is not a media type the API takes       |
| `unsupported_format` | 415    | an image, but a format lineinspect does not read |
| `corrupt`            | 422    | a supported format whose data cannot be decoded  |
| `too_many_pixels`    | 413    | over `http.max_pixels`                           |
| `too_large`          | 413    | over `http.max_upload_bytes`                     |
| anything else        | 400    |                                                  |

Other codes: `upload_too_large` (413), `unauthorized` (401), `unknown_recipe`
(404), `invalid_request` (422: a missing or malformed field), `not_multipart`
(415), `bad_multipart` (400), `busy` (503 with Retry-After), `not_found` and
`method_not_allowed` for unknown URLs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lineinspect.errors import ImageError

log = logging.getLogger(__name__)

IMAGE_ERROR_STATUS: dict[str, int] = {
    "empty": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "corrupt": 422,
    "too_many_pixels": 413,
    "too_large": 413,
}

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "upload_timeout",
    413: "upload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """What every error response holds."""

    error: str = Field(..., description="Stable error code for programs, e.g. not_an_image, unknown_recipe.")
    detail: str = Field(..., description="What is wrong and what to do, for people.")


class ApiError(Exception):
    """An error answered as it is: status, code and message."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        return cls(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, str(exc))


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=dict(headers or {}))


def describe_validation_error(exc: RequestValidationError) -> str:
    """One clause per problem: `query.annotate: Input should be a valid boolean (got 'maybe')`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        got = err.get("input")
        shown = f" (got {_bounded(got)})" if isinstance(got, str | int | float | bool) else ""
        parts.append(f"{where}: {err.get('msg', 'invalid')}{shown}")
    return "; ".join(parts)


MAX_ECHO_CHARS = 80


def _bounded(value: str | int | float | bool) -> str:
    """The input as shown in a message: a 100 kB field is not echoed back whole."""
    text = repr(value)
    if len(text) <= MAX_ECHO_CHARS:
        return text
    return f"{text[:MAX_ECHO_CHARS]}… ({len(str(value))} characters)"


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", describe_validation_error(exc))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the service log")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
