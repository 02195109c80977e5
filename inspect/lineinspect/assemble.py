"""Turns a station directory's configuration into ready objects.

The CLI and the HTTP app factory call these; nothing else builds models or
Inspectors, so there is one place where objects are wired together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from lineinspect.calibration import Calibration, calibration_path, warn_small_limits
from lineinspect.capture.config import load_cameras
from lineinspect.config import RuntimeSection, StationConfig
from lineinspect.errors import ModelError
from lineinspect.inspector import Inspector, PlaneCalibration
from lineinspect.model import Model, RuntimeOptions
from lineinspect.recipe import Recipe

MODELS_DIR = "models"

log = logging.getLogger("lineinspect.calibration")


def runtime_options(section: RuntimeSection) -> RuntimeOptions:
    return RuntimeOptions(
        providers=tuple(section.providers),
        intra_op_threads=section.intra_op_threads,
        inter_op_threads=section.inter_op_threads,
        allow_spinning=section.allow_spinning,
    )


def model_dir(station_dir: Path, name_or_path: str) -> Path:
    """A recipe's `model`: a folder name under models/, or a path to a model folder."""
    candidate = Path(name_or_path)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate if candidate.is_absolute() else station_dir / candidate
    return station_dir / MODELS_DIR / name_or_path


def load_models(station_dir: Path, recipes: list[Recipe], options: RuntimeOptions) -> dict[str, Model]:
    """Load each model the recipes use, once."""
    models: dict[str, Model] = {}
    for recipe in recipes:
        if recipe.model in models:
            continue
        path = model_dir(station_dir, recipe.model)
        if not path.is_dir():
            raise ModelError(
                f"recipe '{recipe.id}': model folder {path} not found "
                f"(models live in {station_dir / MODELS_DIR}/<name>/ with model.onnx and model.yaml)"
            )
        models[recipe.model] = Model.load(path, options)
    return models


def load_calibrations(station_dir: Path, camera_ids: list[str]) -> dict[str, Calibration]:
    """calibration/<camera>.yaml for each camera that has one; a camera without one is logged (px only)."""
    calibrations: dict[str, Calibration] = {}
    for camera in camera_ids:
        path = calibration_path(station_dir, camera)
        if not path.is_file():
            log.warning(
                "camera %s has no calibration (%s): defect sizes are reported in px only, and a defect "
                "under a recipe's mm limit counts; run `lineinspect calibrate` for this camera",
                camera,
                path,
            )
            continue
        calibration = Calibration.load(path)
        if calibration.homography is None:
            log.warning(
                "camera %s: calibration %s has no working-plane scale: sizes in px only; "
                "run `lineinspect calibrate scale --camera %s IMAGE`",
                camera,
                calibration.calibration_id,
                camera,
            )
        calibrations[camera] = calibration
    return calibrations


def build_inspector(
    station_dir: Path,
    config: StationConfig,
    calibrations: Mapping[str, PlaneCalibration] | None = None,
) -> Inspector:
    """calibrations None: those of the cameras in cameras/*.yaml, with a warning for mm limits under 3 px."""
    if calibrations is None:
        loaded = load_calibrations(station_dir, [c.id for c in load_cameras(station_dir)])
        warn_small_limits(config.recipes, loaded)
        calibrations = loaded
    models = load_models(station_dir, config.recipes, runtime_options(config.runtime))
    recipes = {r.id: r for r in config.recipes}
    return Inspector(models, recipes, config.default_recipe_id, calibrations)


def single_model_inspector(path: Path, options: RuntimeOptions, recipe: Recipe | None = None) -> Inspector:
    """An Inspector for one model folder with a default recipe (for `check --model`)."""
    model = Model.load(path, options)
    recipe = recipe or Recipe(id=f"{model.id}-default", model=model.id)
    return Inspector({model.id: model}, {recipe.id: recipe.model_copy(update={"model": model.id})}, recipe.id)
