"""Errors a plant engineer sees: each says which file, field or input, and what to do."""

from __future__ import annotations

from pydantic import ValidationError


class LineinspectError(Exception):
    """Base of the errors that are meant to be shown to a user as they are."""


class ConfigError(LineinspectError):
    """station.yaml (or a file it names) is wrong."""


class ModelError(LineinspectError):
    """A model or its card cannot be used."""


class ImageError(LineinspectError):
    """An image cannot be decoded or is outside the limits.

    `code` is stable for programs (`empty`, `not_an_image`, `unsupported_format`,
    `corrupt`, `too_many_pixels`, `too_large`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `  field.path: message (got value)`."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {where}: {err['msg']}{shown}")
    return "\n".join(lines)
