"""The Inspector: frame in, result out. Pure: no I/O, no clocks beyond timing.

The same object serves camera frames and HTTP uploads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import numpy as np

from lineinspect.core.defects import Defect
from lineinspect.core.frame import Frame, utc_now
from lineinspect.core.model import Model
from lineinspect.core.recipe import Decision, Recipe, Verdict, decide
from lineinspect.core.result import Result, new_result_id
from lineinspect.errors import LineinspectError


class UnknownRecipe(LineinspectError):
    """A recipe id that the station does not have."""


class PlaneCalibration(Protocol):
    """What the Inspector needs of a camera's calibration."""

    calibration_id: str

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, 3]) uint8 → the same size, lens distortion removed."""
        ...

    def undistort_region(self, image: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
        """`undistort(image)[y:y+height, x:x+width]`, computing only that region (ROI crop in the remap)."""
        ...

    def measure(self, defect: Defect) -> Defect:
        """Fill the defect's mm fields (box given in undistorted-image pixels)."""
        ...

    def mm_per_px_for(self, width: int, height: int) -> float | None:
        """Scale at the image centre when frames of this size are measured in mm; None: px only."""
        ...

    def why_px_only(self, width: int, height: int) -> str:
        """Why frames of this size are measured in px only (where mm_per_px_for gives None)."""
        ...


class Inspector:
    def __init__(
        self,
        models: Mapping[str, Model],
        recipes: Mapping[str, Recipe],
        default_recipe: str,
        calibrations: Mapping[str, PlaneCalibration] | None = None,
    ) -> None:
        missing = {r.id: r.model for r in recipes.values() if r.model not in models}
        if missing:
            raise LineinspectError(f"recipes name models that are not loaded: {missing}")
        if default_recipe not in recipes:
            raise UnknownRecipe(f"default recipe '{default_recipe}' is not among {sorted(recipes)}")
        self.models = dict(models)
        self.recipes = dict(recipes)
        self.default_recipe = default_recipe
        self.calibrations = dict(calibrations or {})

    def recipe(self, recipe_id: str | None) -> Recipe:
        rid = recipe_id or self.default_recipe
        try:
            return self.recipes[rid]
        except KeyError:
            raise UnknownRecipe(f"unknown recipe '{rid}'; this station has {sorted(self.recipes)}") from None

    def inspect(self, frame: Frame, recipe_id: str | None = None) -> Result:
        """Inspect one frame. Never raises for a model failure: that is an `undecided` result."""
        recipe = self.recipe(recipe_id)
        model = self.models[recipe.model]
        calibration = self.calibrations.get(frame.camera_id or "")
        t0 = time.monotonic_ns()
        image = frame.image
        ox = oy = 0
        if recipe.roi is not None:
            roi = recipe.roi
            h, w = image.shape[:2]
            if roi.x + roi.width > w or roi.y + roi.height > h:
                return self.undecided(
                    frame,
                    f"recipe '{recipe.id}' ROI {roi.x},{roi.y} {roi.width}x{roi.height} lies outside the {w}x{h} image",
                    recipe.id,
                )
            # Undistortion keeps the image size, so the ROI check holds; remap only the ROI.
            if calibration is not None:
                image = calibration.undistort_region(image, roi.x, roi.y, roi.width, roi.height)
            else:
                image = image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
            ox, oy = roi.x, roi.y
        elif calibration is not None:
            image = calibration.undistort(image)
        t1 = time.monotonic_ns()
        try:
            inference = model.infer(np.ascontiguousarray(image))
        except Exception as exc:
            return self.undecided(frame, f"inference error: {type(exc).__name__}: {exc}", recipe.id)
        t2 = time.monotonic_ns()
        defects = [d.shifted(ox, oy) if (ox or oy) else d for d in inference.output.defects]
        h, w = frame.image.shape[:2]
        mm_per_px = calibration.mm_per_px_for(w, h) if calibration is not None else None
        if calibration is not None and mm_per_px is not None:
            defects = [calibration.measure(d) for d in defects]
        decision: Decision = decide(defects, inference.output.score, recipe, model.card.thresholds)
        reason = decision.reason
        if mm_per_px is None and decision.findings:
            # Sizes matter once something is found: say plainly that they are pixels, and why.
            reason += f"; sizes in px only: {px_only_cause(frame.camera_id, calibration, w, h)}"
        t3 = time.monotonic_ns()
        return Result(
            result_id=new_result_id(),
            verdict=decision.verdict,
            reason=reason,
            score=inference.output.score,
            findings=decision.findings,
            captured_at=frame.captured_at,
            decided_at=utc_now(),
            recipe_id=recipe.id,
            recipe_version=recipe.version,
            model_id=model.id,
            model_sha256=model.sha256,
            calibration_id=calibration.calibration_id if calibration is not None else None,
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            trigger_id=frame.trigger_id,
            part_id=frame.part_id,
            encoder_count=frame.encoder_count,
            image_width=w,
            image_height=h,
            image_ref=frame.source,
            timings_ms={
                "undistort_roi": (t1 - t0) / 1e6,
                "preprocess": inference.preprocess_ms,
                "infer": inference.infer_ms,
                "postprocess": inference.postprocess_ms,
                "decide": (t3 - t2) / 1e6,
                "total": (t3 - t0) / 1e6,
            },
            measurements={"mm_per_px": mm_per_px},
            simulated=frame.simulated,
        )

    def undecided(self, frame: Frame | None, reason: str, recipe_id: str | None = None) -> Result:
        """A result for a part that could not be inspected (rejected by default)."""
        recipe = self.recipes.get(recipe_id or self.default_recipe)
        model = self.models.get(recipe.model) if recipe is not None else None
        now = utc_now()
        image = frame.image if frame is not None else None
        return Result(
            result_id=new_result_id(),
            verdict=Verdict.UNDECIDED,
            reason=reason,
            score=None,
            findings=(),
            captured_at=frame.captured_at if frame is not None else now,
            decided_at=now,
            recipe_id=recipe.id if recipe is not None else None,
            recipe_version=recipe.version if recipe is not None else None,
            model_id=model.id if model is not None else None,
            model_sha256=model.sha256 if model is not None else None,
            camera_id=frame.camera_id if frame is not None else None,
            frame_id=frame.frame_id if frame is not None else None,
            trigger_id=frame.trigger_id if frame is not None else None,
            part_id=frame.part_id if frame is not None else None,
            encoder_count=frame.encoder_count if frame is not None else None,
            image_width=image.shape[1] if image is not None else None,
            image_height=image.shape[0] if image is not None else None,
            image_ref=frame.source if frame is not None else None,
            simulated=frame.simulated if frame is not None else False,
        )


def px_only_cause(camera_id: str | None, calibration: PlaneCalibration | None, width: int, height: int) -> str:
    if camera_id is None:
        return "no camera named"
    if calibration is None:
        return f"camera '{camera_id}' is not calibrated"
    return f"camera '{camera_id}': {calibration.why_px_only(width, height)}"


def with_decode_time(result: Result, decode_ms: float) -> Result:
    timings = {"decode": decode_ms, **result.timings_ms}
    if "total" in timings:
        timings["total"] += decode_ms
    return replace(result, timings_ms=timings)
