"""Retune a model's thresholds from good parts, in its card, without re-exporting (`lineinspect retune`).

A plant changes lamps, suppliers, or its tolerance for false rejects; the
model stays, only the card's thresholds move. `retune` runs the model (the
production path: preprocessing, ONNX, adapter) on images of good parts that
the model did not learn from and sets the decision level so that at most
`target_false_reject` of them would be rejected:

- the level lies just above the good score that leaves the allowed number of
  false rejects (k = floor(target × images) good parts may reach it; the
  empirical level of `thresholds.py`);
- anomaly cards: `image_threshold` (raw model units) becomes that level of
  the good image scores, `pixel_threshold` that level of the good parts'
  largest map values (a part fails on any map pixel at or above it, so this
  is the level that keeps the false-reject rate), `score_min` the median good
  score and `score_max` 2 × level − median, so a typical good part scores 0
  and the threshold 0.5, as `lineinspect teach` writes them;
- segmentation and classification cards: the per-class `thresholds` of every
  defect class become the level (the image score is the largest defect-class
  probability, so this is the same rule).

The card's `frame_baseline` (the frame plausibility limits: brightness, contrast, focus, noise) is
measured again from the same good images.

The model file and its sha256 are untouched; `trained.retuned` in the card
records when, from which folder and how many images. A rate below
1 / images cannot be checked on so few images; the command says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineinspect.core.adapters.anomaly import AnomalyAdapter
from lineinspect.core.clock import utc_now_iso
from lineinspect.core.model import Model
from lineinspect.core.modelcard import ModelCard, write_card
from lineinspect.errors import LineinspectError
from lineinspect.offline.datasets import find_good, read_labelled
from lineinspect.offline.frame_baseline import folder_baseline
from lineinspect.offline.thresholds import (
    check_target,
    defect_labels,
    empirical_calibration,
    level_for,
    lowest_defect_threshold,
)


class RetuneError(LineinspectError):
    """The thresholds cannot be set from what was given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Retuned:
    """The new card, the old and new decision levels (raw units for anomaly cards), and the good scores."""

    card: ModelCard
    old_level: float
    new_level: float
    good_scores: np.ndarray  # (n,) raw image scores of the good images, in the model's units
    allowed_false_rejects: int
    good_map_maxima: np.ndarray | None = None  # (n,) anomaly cards with a map: each good image's largest value

    @property
    def false_rejects(self) -> int:
        """Good images the retuned card rejects: their score, or (anomaly maps) a pixel, reaches the threshold."""
        rejected = self.good_scores >= self.new_level
        if self.good_map_maxima is not None and self.card.anomaly is not None:
            rejected |= self.good_map_maxima >= self.card.anomaly.pixel_threshold
        return int(rejected.sum())

    def summary(self) -> str:
        n = len(self.good_scores)
        unit = "raw score" if self.card.adapter == "anomaly" else "score"
        lines = [
            f"{self.card.name}: threshold {self.old_level:.6g} -> {self.new_level:.6g} ({unit}) from {n} good images",
            f"  good scores: median {np.median(self.good_scores):.6g}, max {self.good_scores.max():.6g}; "
            f"{self.false_rejects}/{n} good images reach the new threshold",
        ]
        if self.allowed_false_rejects == 0:
            lines.append(
                f"  note: {n} images can only show a false-reject rate of 0 or >= {1 / n:.2%}; the threshold sits "
                "just above the highest good score. Give more good images to measure a lower rate."
            )
        return "\n".join(lines)


def good_image_scores(model: Model, folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores (n,), map maxima (n,) or None) of every good image under folder, in the card's threshold units.

    Anomaly cards: the raw image score and the raw map's largest value (the
    adapter's `raw_score`/`raw_map`); other cards: the adapter's 0–1 score and None.
    """
    scores, maxima = [], []
    anomaly = isinstance(model.adapter, AnomalyAdapter)
    for item in find_good(folder):
        image, _ = read_labelled(item)
        output = model.infer(image).output
        if not anomaly:
            scores.append(output.score)
            continue
        if output.raw_score is None:
            raise RetuneError(
                f"{model.path}: the model gives only a binary mask ('pred_mask'); its threshold is inside the "
                "model and cannot be retuned in the card"
            )
        scores.append(output.raw_score)
        if output.raw_map is not None:
            maxima.append(float(output.raw_map.max()))
    return np.asarray(scores, dtype=np.float64), (np.asarray(maxima, dtype=np.float64) if maxima else None)


def retune(model: Model, good_folder: Path, target_false_reject: float, *, min_images: int = 10) -> Retuned:
    """New thresholds from the good images under good_folder; the card is returned, not written."""
    check_target(target_false_reject)
    scores, maxima = good_image_scores(model, good_folder)
    if len(scores) < min_images:
        raise RetuneError(
            f"--good {good_folder}: {len(scores)} good images; a threshold needs at least {min_images} "
            "(more is better: 200 show a 0.5 % false-reject rate)"
        )
    level, k = level_for(scores, target_false_reject)
    card = model.card.model_copy(deep=True)
    if card.adapter == "anomaly":
        assert card.anomaly is not None
        old = card.anomaly.image_threshold
        card.anomaly = empirical_calibration(scores, maxima, target_false_reject).model_copy(
            update={"map_output": card.anomaly.map_output, "score_output": card.anomaly.score_output}
        )
    elif card.adapter in ("segmentation", "classification"):
        old = lowest_defect_threshold(card, model.labels)
        if not 0.0 <= level <= 1.0:
            raise RetuneError(f"{model.path}: the good images score {level:.4g}, outside 0-1; check the model")
        card.thresholds = {**card.thresholds, **dict.fromkeys(defect_labels(card, model.labels), level)}
    else:
        raise RetuneError(
            f"{model.path}: a {card.adapter} model's thresholds are per detection, not per image; "
            "set them in the card or the recipe by hand"
        )
    # The good parts' frames as they look now (new lamp, new supplier): the plausibility limits follow them.
    card.frame_baseline = folder_baseline(good_folder, card.input)
    retuned = Retuned(card, float(old), level, scores, k, maxima)
    card.trained = {
        **card.trained,
        "retuned": {
            "date_utc": utc_now_iso("seconds"),
            "good_folder": str(good_folder),
            "images": len(scores),
            "target_false_reject": target_false_reject,
            "false_rejects_on_them": retuned.false_rejects,
            "previous_threshold": old,
        },
    }
    return retuned


def save(retuned: Retuned, model_dir: Path) -> Path:
    return write_card(retuned.card, model_dir)
