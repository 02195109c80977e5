"""Recipe (per product): which model, where to look, and which defects reject a part."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from lineinspect.core.defects import Defect
from lineinspect.core.plausibility import FrameLimits, PartPresent
from lineinspect.core.result import Finding, Verdict


class Roi(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int = Field(..., ge=0, description="Left edge in pixels of the (undistorted) image.")
    y: int = Field(..., ge=0, description="Top edge in pixels.")
    width: int = Field(..., gt=0, description="Width in pixels.")
    height: int = Field(..., gt=0, description="Height in pixels.")


class ClassRule(BaseModel):
    """When a defect of one class counts against the part.

    A defect counts when its score reaches `min_score` and it reaches every
    size limit that is set. Limits in mm need a calibrated camera; on an
    uncalibrated one such a defect counts (a part is never passed because it
    could not be measured).
    """

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(
        None, ge=0, le=1, description="Score (0–1) from which a defect is reported; default: the model card's."
    )
    min_area_px: float = Field(0, ge=0, description="Smallest area in pixels that rejects.")
    min_length_px: float = Field(0, ge=0, description="Smallest length (longest side) in pixels that rejects.")
    min_area_mm2: float | None = Field(None, ge=0, description="Smallest area in mm² that rejects.")
    min_length_mm: float | None = Field(None, ge=0, description="Smallest length in mm that rejects.")
    reject: bool = Field(True, description="False: report this class but never reject for it.")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, description="Recipe id (product / SKU).")
    version: str = Field("1", description="Recipe version, recorded in every result.")
    description: str = Field("", description="Free text for operators.")
    model: str = Field(..., description="Model folder name under models/ (or a path).")
    roi: Roi | None = Field(None, description="Region inspected; default: the whole image.")
    classes: dict[str, ClassRule] = Field(
        default_factory=dict, description="Rules per defect class; '*' applies to classes not listed."
    )
    max_defects: int = Field(0, ge=0, description="Counting defects tolerated before the part fails.")
    max_image_score: float | None = Field(
        None, ge=0, le=1, description="Fail when the image score reaches this, even with no counted defect."
    )
    frame: FrameLimits | None = Field(
        None,
        description="Frame plausibility limits for this product, over the model card's taught ones (a field set to "
        "null switches that check off); a frame outside them is undecided.",
    )
    shadow: str | None = Field(
        None,
        description="A model (folder name under models/) run on the same frames after each verdict, never actuating "
        "and never delaying it; its verdicts are kept beside the production ones (`lineinspect shadow report`).",
    )
    part_present: PartPresent | None = Field(
        None, description="How to tell a part is in the frame (a region's brightness/contrast); default: not checked."
    )

    def rule_for(self, class_name: str) -> ClassRule:
        return self.classes.get(class_name) or self.classes.get("*") or ClassRule()


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    findings: tuple[Finding, ...]


def judge(defect: Defect, rule: ClassRule) -> tuple[bool, str]:
    """Whether a reported defect counts, and why (a short phrase for the reason)."""
    if not rule.reject:
        return False, NOT_REJECTING
    if defect.area_px < rule.min_area_px:
        return False, f"area {defect.area_px:.0f} px < {rule.min_area_px:g} px"
    if defect.length_px < rule.min_length_px:
        return False, f"length {defect.length_px:.1f} px < {rule.min_length_px:g} px"
    if rule.min_area_mm2 is not None and defect.area_mm2 is not None and defect.area_mm2 < rule.min_area_mm2:
        return False, f"area {defect.area_mm2:.2f} mm² < {rule.min_area_mm2:g} mm²"
    if rule.min_length_mm is not None and defect.length_mm is not None and defect.length_mm < rule.min_length_mm:
        return False, f"length {defect.length_mm:.2f} mm < {rule.min_length_mm:g} mm"
    unmeasured = (rule.min_area_mm2 is not None or rule.min_length_mm is not None) and defect.length_mm is None
    return True, "mm limit not checkable (camera not calibrated)" if unmeasured else "over limits"


def describe(defect: Defect) -> str:
    size = f"{defect.length_mm:.2f} mm" if defect.length_mm is not None else f"{defect.length_px:.0f} px"
    return f"{defect.class_name} {size} (score {defect.score:.2f})"


def decide(defects: list[Defect], image_score: float, recipe: Recipe, default_min_score: dict[str, float]) -> Decision:
    """Defects (already measured) → verdict with a reason a person can read.

    default_min_score: the model card's per-class thresholds, used where the
    recipe sets none.
    """
    findings = []
    for defect in defects:
        rule = recipe.rule_for(defect.class_name)
        min_score = rule.min_score if rule.min_score is not None else default_min_score.get(defect.class_name, 0.5)
        if defect.score < min_score:
            continue
        counts, why = judge(defect, rule)
        findings.append(Finding(defect, counts, why))
    counted = [f for f in findings if f.counts]
    counted.sort(key=lambda f: -f.defect.score)
    if len(counted) > recipe.max_defects:
        listed = ", ".join(describe(f.defect) for f in counted[:3])
        more = f" and {len(counted) - 3} more" if len(counted) > 3 else ""
        noun = "defect" if len(counted) == 1 else "defects"
        return Decision(Verdict.FAIL, f"{len(counted)} {noun}: {listed}{more}", tuple(findings))
    if recipe.max_image_score is not None and image_score >= recipe.max_image_score:
        reason = f"image score {image_score:.2f} ≥ {recipe.max_image_score:g}"
        return Decision(Verdict.FAIL, reason, tuple(findings))
    if findings:
        parts = _not_counted(findings)
        if counted:
            parts.append(f"{len(counted)} tolerated (max_defects {recipe.max_defects})")
        return Decision(Verdict.PASS, "; ".join(parts), tuple(findings))
    return Decision(Verdict.PASS, "no defect found", tuple(findings))


NOT_REJECTING = "class does not reject"


def _not_counted(findings: list[Finding]) -> list[str]:
    """Why reported defects did not fail the part, so a high score next to `pass` explains itself.

    "1 defect below the size limits: area 25 px < 30 px"; "1 defect of a class that never rejects: dent".
    """
    below = [f for f in findings if not f.counts and f.why != NOT_REJECTING]
    ignored = [f for f in findings if not f.counts and f.why == NOT_REJECTING]
    parts = []
    if below:
        whys = [f.why for f in below[:3]]
        more = f" and {len(below) - 3} more" if len(below) > 3 else ""
        noun = "defect" if len(below) == 1 else "defects"
        parts.append(f"{len(below)} {noun} below the size limits: {', '.join(whys)}{more}")
    if ignored:
        classes = ", ".join(sorted({f.defect.class_name for f in ignored}))
        noun = "defect of a class" if len(ignored) == 1 else "defects of classes"
        parts.append(f"{len(ignored)} {noun} that never rejects: {classes}")
    return parts
