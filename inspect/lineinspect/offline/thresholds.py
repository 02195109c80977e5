"""Decision levels from the scores of good parts: the threshold maths `teach`, `retune` and `evaluate` share.

Two rules set a level from good parts at a target false-reject rate:

- the fitted level (`fitted_level`, `calibrate_thresholds`): the larger of the
  empirical quantile and a normal fit, plus THRESHOLD_MARGIN of its distance
  from the median. For z-score-like raw scores (teach's `stats` and
  `patchknn` methods), where a few held-back good parts must stand for the
  many the line will see;
- the empirical level (`level_for`, `empirical_calibration`): just above the
  good score that leaves k = floor(target × n) false rejects. For scores far
  from normal (featnet's logits) and for `retune`, which measures the rate
  it promises.

Anomaly cards get an image threshold from the good image scores and a pixel
threshold from the good maps' largest values: a part fails on any map pixel
at or above the pixel threshold, so that is the level that keeps the
false-reject rate. score_min is the good median (normalised 0) and
score_max the mirror of it about the threshold (normalised 1), so the
threshold normalises to 0.5.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from lineinspect.core.adapters.classification import good_like_label
from lineinspect.core.modelcard import AnomalyCalibration, ModelCard
from lineinspect.errors import LineinspectError

THRESHOLD_MARGIN = 0.25


class ThresholdError(LineinspectError):
    """No threshold can be set at the target rate given; the message says what to change."""


def check_target(target_false_reject: float) -> None:
    """Raise ThresholdError unless 0 <= target < 0.5 (a share of good parts, 0.005 = 0.5 %)."""
    if not 0.0 <= target_false_reject < 0.5:
        raise ThresholdError(f"--target-false-reject {target_false_reject:g}: give a rate from 0 up to (not) 0.5")


def fitted_level(values: np.ndarray, target_false_reject: float) -> float:
    """The larger of the empirical quantile and a normal fit, plus THRESHOLD_MARGIN of its distance from the median.

    values: (n,) good scores in any unit; the level is in the same unit.
    """
    median = float(np.median(values))
    empirical = float(np.quantile(values, 1.0 - target_false_reject))
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    fitted = float(np.mean(values)) + statistics.NormalDist().inv_cdf(1.0 - target_false_reject) * spread
    level = max(empirical, fitted)
    return level + THRESHOLD_MARGIN * max(level - median, 1e-3)


def calibrate_thresholds(
    scores: np.ndarray, target_false_reject: float, *, map_maxima: np.ndarray | None = None
) -> AnomalyCalibration:
    """Anomaly thresholds by the fitted level (rounded to 4 decimals) from held-back good parts.

    scores: (n,) their raw image scores. map_maxima: (n,) their anomaly maps' largest raw
    values; where a map can peak above the image score, the pixel threshold is the fitted
    level over those maxima (never below the image threshold), else the image threshold.
    """
    threshold = fitted_level(scores, target_false_reject)
    pixel = threshold if map_maxima is None else max(threshold, fitted_level(map_maxima, target_false_reject))
    median = float(np.median(scores))
    return AnomalyCalibration(
        image_threshold=round(threshold, 4),
        pixel_threshold=round(pixel, 4),
        score_min=round(median, 4),
        score_max=round(2 * threshold - median, 4),
    )


def allowed_false_rejects(target_false_reject: float, images: int) -> int:
    """k = floor(target × n): how many of n good images a threshold at the target may reject."""
    return math.floor(target_false_reject * images + 1e-9)


def level_for(scores: np.ndarray, target_false_reject: float) -> tuple[float, int]:
    """(threshold, k): the lowest level that at most k = allowed_false_rejects(target, n) of `scores` reach."""
    check_target(target_false_reject)
    ordered = np.sort(scores)[::-1]
    k = allowed_false_rejects(target_false_reject, len(ordered))
    # Just above the (k+1)-th highest score, so that part and every lower one pass. The gap is
    # wide enough to survive the adapter's float32 scaling (0.5 = threshold) of a score equal to it.
    gap = 1e-4 * max(float(ordered[0] - ordered[-1]), abs(float(ordered[k])), 1e-6)
    return float(ordered[k]) + gap, k


def empirical_calibration(
    scores: np.ndarray, map_maxima: np.ndarray | None, target_false_reject: float
) -> AnomalyCalibration:
    """Anomaly thresholds by the empirical level: at most the target share of these good parts reach them.

    scores: (n,) their raw image scores; map_maxima: (n,) their anomaly maps' largest raw values
    (the pixel threshold), or None for a model without a map.
    """
    level = level_for(scores, target_false_reject)[0]
    median = float(np.median(scores))
    top = 2 * level - median if level > median else level + max(abs(level) * 1e-3, 1e-6)
    pixel = level_for(map_maxima, target_false_reject)[0] if map_maxima is not None else level
    return AnomalyCalibration(
        image_threshold=level, pixel_threshold=pixel, score_min=median if median < top else top - 1e-6, score_max=top
    )


def reachable_calibration(scores: np.ndarray, map_maxima: np.ndarray, target_false_reject: float) -> AnomalyCalibration:
    """Thresholds a model whose map and score are probabilities (at most 1) can reach.

    scores: (n,) held-back good image scores, map_maxima: (n,) their maps' largest values, both
    0–1. The fitted level's margin above them can land at 1 or more, and such a model could
    never reject a part: then the image threshold is the empirical level instead. A map pixel
    can exceed the pooled image score, so the pixel threshold is the empirical level over the
    map maxima (never below the image threshold).
    """
    image = calibrate_thresholds(scores, target_false_reject).image_threshold
    good = np.asarray(scores, dtype=np.float64)
    if image >= 1.0:
        image = level_for(good, target_false_reject)[0]
    pixel = max(image, level_for(np.asarray(map_maxima, dtype=np.float64), target_false_reject)[0])
    low = min(float(np.median(good)), image - 1e-6)
    return AnomalyCalibration(
        image_threshold=image, pixel_threshold=pixel, score_min=low, score_max=max(2 * image - low, image + 1e-6)
    )


def unresolved_target_note(target_false_reject: float, images: int, what: str = "good images") -> str | None:
    """A warning when `images` good images (`what` they are, for the message) are too few for the target.

    With allowed_false_rejects = 0 the threshold sits just above the highest of them: fewer
    false rejects than asked for, and more escapes. Used by teach and by retune.
    """
    if target_false_reject <= 0 or images <= 0 or allowed_false_rejects(target_false_reject, images) > 0:
        return None
    needed = math.ceil(1 / target_false_reject - 1e-9)
    return (
        f"note: the thresholds come from {images} {what}, too few to show a "
        f"{100 * target_false_reject:g} % false-reject rate (that needs {needed}); they sit just above the "
        "highest of them, which rejects fewer good parts than asked and lets more defects through. "
        "Give more good images or a higher --target-false-reject"
    )


def defect_labels(card: ModelCard, labels: list[str] | None = None) -> list[str]:
    """Segmentation/classification cards: the labels that are defects (the card's `defect_classes`, else all
    but the background class, as the adapters read them). labels: the model's (`Model.labels`, which include
    names from the export's metadata) where the card lists none."""
    if card.defect_classes:
        return list(card.defect_classes)
    names = card.labels or labels or []
    background = card.background_class
    if background is None and card.adapter == "classification":
        background = good_like_label(names)
    elif background is None:
        background = names[0] if names else None  # segmentation: the first class is the background
    return [name for name in names if name != background]


def lowest_defect_threshold(card: ModelCard, labels: list[str] | None = None) -> float:
    """Segmentation/classification cards: the 0–1 image score at or above which some defect class rejects."""
    return min((card.threshold_for(name) for name in defect_labels(card, labels)), default=card.threshold_for("*"))
