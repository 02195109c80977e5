"""The Inspector: frame in, result out. Pure: no I/O, no clocks beyond timing.

The same object serves camera frames and HTTP uploads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import numpy as np

from lineinspect.core.defects import Defect
from lineinspect.core.frame import Frame
from lineinspect.core.model import Model
from lineinspect.core.plausibility import (
    FrameBaseline,
    FrameLimits,
    ResolvedLimits,
    check_frame,
    implausible_reason,
    measure_stretched,
    resolve_limits,
)
from lineinspect.core.preprocess import stretch
from lineinspect.core.recipe import Decision, Recipe, decide
from lineinspect.core.remote import RemoteInferenceError
from lineinspect.core.result import Provenance, Result, UndecidedKind
from lineinspect.errors import LineinspectError

log = logging.getLogger(__name__)


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
        camera_limits: Mapping[str, FrameLimits | None] | None = None,
    ) -> None:
        """camera_limits: each camera's frame plausibility overrides (its configured size); uploads naming no
        camera get the model card's and the recipe's limits only."""
        missing = {r.id: r.model for r in recipes.values() if r.model not in models}
        if missing:
            raise LineinspectError(f"recipes name models that are not loaded: {missing}")
        if default_recipe not in recipes:
            raise UnknownRecipe(f"default recipe '{default_recipe}' is not among {sorted(recipes)}")
        self.models = dict(models)
        self.recipes = dict(recipes)
        self.default_recipe = default_recipe
        self.calibrations = dict(calibrations or {})
        # Resolved once here: the Inspector keeps no state between frames.
        self._limits: dict[tuple[str, str | None], ResolvedLimits] = {}
        cameras: dict[str | None, FrameLimits | None] = {None: None}
        cameras.update(camera_limits or {})
        for recipe in self.recipes.values():
            spec = self.models[recipe.model].card.input
            for camera_id, limits in cameras.items():
                overrides = [(f"recipe '{recipe.id}'", recipe.frame)]
                if camera_id is not None:
                    overrides.append((f"camera '{camera_id}'", limits))
                self._limits[(recipe.id, camera_id)] = resolve_limits(
                    self.models[recipe.model].card.frame_baseline,
                    input_width_px=spec.width,
                    input_height_px=spec.height,
                    overrides=overrides,
                    part_present=recipe.part_present,
                )

    def recipe(self, recipe_id: str | None) -> Recipe:
        rid = recipe_id or self.default_recipe
        try:
            return self.recipes[rid]
        except KeyError:
            raise UnknownRecipe(f"unknown recipe '{rid}'; this station has {sorted(self.recipes)}") from None

    def frame_limits(self, recipe_id: str | None, camera_id: str | None = None) -> ResolvedLimits:
        """The plausibility limits frames of this recipe (and camera) are held to."""
        recipe = self.recipe(recipe_id)
        return self._limits.get((recipe.id, camera_id)) or self._limits[(recipe.id, None)]

    def frame_baseline(self, recipe_id: str | None) -> FrameBaseline | None:
        """The taught frame baseline of the recipe's model (None: its card has none)."""
        return self.models[self.recipe(recipe_id).model].card.frame_baseline

    def inspect(self, frame: Frame, recipe_id: str | None = None) -> Result:
        """Inspect one frame. Raises only UnknownRecipe: any failure inside is an `undecided` result.

        The line, uploads and `check` all rely on this: one bad frame is one undecided part, never a
        stopped worker, a 500 or an aborted batch.
        """
        recipe = self.recipe(recipe_id)
        try:
            return self._judge(frame, recipe)
        except RemoteInferenceError as exc:  # the outage is logged and alarmed once, not a traceback per part
            log.debug("camera %s, recipe %s: %s", frame.camera_id, recipe.id, exc)
            return self._undecided(frame, recipe, UndecidedKind.INFERENCE, f"not inspected: {exc}")
        except Exception as exc:
            log.exception("inspecting a frame of camera %s with recipe %s failed", frame.camera_id, recipe.id)
            return self._undecided(
                frame, recipe, UndecidedKind.INFERENCE, f"inspection error: {type(exc).__name__}: {exc}"
            )

    def _judge(self, frame: Frame, recipe: Recipe) -> Result:
        model = self.models[recipe.model]
        calibration = self.calibrations.get(frame.camera_id or "")
        t0 = time.monotonic_ns()
        image = frame.image
        h, w = image.shape[:2]
        region = image
        roi = recipe.roi
        if roi is not None:
            if roi.x + roi.width > w or roi.y + roi.height > h:
                where = f"ROI {roi.x},{roi.y} {roi.width}x{roi.height}"
                reason = f"recipe '{recipe.id}' {where} lies outside the {w}x{h} image"
                return self._undecided(frame, recipe, UndecidedKind.ROI_OUTSIDE, reason)
            region = image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
        # Plausibility before the model, on the region it sees, at its input size (before undistortion:
        # the measures do not need it, and a refused frame costs no remap). Where the model is given that
        # region as it is (no calibration), a stretch card reuses the resized region for its input.
        spec = model.card.input
        stretched = stretch(region, spec.width, spec.height)
        measures = measure_stretched(stretched, frame_shape=image.shape)
        failures = check_frame(image, measures, self.frame_limits(recipe.id, frame.camera_id))
        t_checked = time.monotonic_ns()
        if failures:
            refused = self._undecided(frame, recipe, UndecidedKind.PLAUSIBILITY, implausible_reason(failures))
            timings = {"plausibility": (t_checked - t0) / 1e6, "total": (t_checked - t0) / 1e6}
            return replace(refused, measurements=measures.as_measurements(), timings_ms=timings)
        ox = oy = 0
        if roi is not None:
            # Undistortion keeps the image size, so the ROI check holds; remap only the ROI.
            if calibration is not None:
                image = calibration.undistort_region(image, roi.x, roi.y, roi.width, roi.height)
            else:
                image = region
            ox, oy = roi.x, roi.y
        elif calibration is not None:
            image = calibration.undistort(image)
        t1 = time.monotonic_ns()
        # A failure: inspect() makes it undecided.
        inference = model.infer(np.ascontiguousarray(image), stretched=stretched if calibration is None else None)
        t2 = time.monotonic_ns()
        defects = [d.shifted(ox, oy) if (ox or oy) else d for d in inference.output.defects]
        mm_per_px = calibration.mm_per_px_for(w, h) if calibration is not None else None
        if calibration is not None and mm_per_px is not None:
            defects = [calibration.measure(d) for d in defects]
        decision: Decision = decide(defects, inference.output.score, recipe, model.card.thresholds)
        reason = decision.reason
        if inference.output.note is not None:
            # The adapter's view where the findings alone would not explain the verdict beside the
            # image score (an anomaly map failing a part with a low image score; a non-defect class).
            reason += f"; {inference.output.note}"
        if mm_per_px is None and decision.findings:
            # Sizes matter once something is found: say plainly that they are pixels, and why.
            reason += f"; sizes in px only: {px_only_cause(frame.camera_id, calibration, w, h)}"
        t3 = time.monotonic_ns()
        return Result.judged(
            frame,
            decision.verdict,
            reason,
            score=inference.output.score,
            findings=decision.findings,
            provenance=Provenance(recipe.id, recipe.version, model.id, model.sha256),
            calibration_id=calibration.calibration_id if calibration is not None else None,
            timings_ms={
                "plausibility": (t_checked - t0) / 1e6,
                "undistort_roi": (t1 - t_checked) / 1e6,
                "preprocess": inference.preprocess_ms,
                "infer": inference.infer_ms,
                "postprocess": inference.postprocess_ms,
                "decide": (t3 - t2) / 1e6,
                "total": (t3 - t0) / 1e6,
            },
            measurements={"mm_per_px": mm_per_px, **measures.as_measurements()},
        )

    def _undecided(self, frame: Frame, recipe: Recipe, kind: UndecidedKind, reason: str) -> Result:
        return Result.undecided(None, kind, reason, frame=frame, provenance=self.provenance(recipe.id))

    def provenance(self, recipe_id: str | None) -> Provenance | None:
        """The recipe and model a part of this recipe is judged with; None for an unknown recipe."""
        recipe = self.recipes.get(recipe_id or self.default_recipe)
        if recipe is None:
            return None
        model = self.models[recipe.model]
        return Provenance(recipe.id, recipe.version, model.id, model.sha256)


def px_only_cause(camera_id: str | None, calibration: PlaneCalibration | None, width: int, height: int) -> str:
    if camera_id is None:
        return "no camera named (upload with camera=ID of a calibrated camera to measure in mm)"
    if calibration is None:
        return f"camera '{camera_id}' is not calibrated"
    return f"camera '{camera_id}': {calibration.why_px_only(width, height)}"


def with_decode_time(result: Result, decode_ms: float) -> Result:
    timings = {"decode": decode_ms, **result.timings_ms}
    if "total" in timings:
        timings["total"] += decode_ms
    return replace(result, timings_ms=timings)
