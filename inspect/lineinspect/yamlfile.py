"""The YAML files a plant edits by hand (station.yaml, cameras/, model cards, calibration/).

Read and validated in one way, so every bad file gets the same kind of message:
the file, then one line per wrong field with what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lineinspect.errors import LineinspectError, format_validation_error

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, error: type[LineinspectError]) -> Any:
    """Parsed YAML of `path`; unreadable or malformed files raise `error` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def validate_mapping(
    model: type[M], raw: Any, source: str, error: type[LineinspectError], what: str, *, expected: str, hint: str = ""
) -> M:
    """`raw` validated as `model`; `what` names the document ("model card"), `expected` its top-level keys."""
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping of {expected}, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{source}: invalid {what}:\n{format_validation_error(exc)}{hint}") from exc
