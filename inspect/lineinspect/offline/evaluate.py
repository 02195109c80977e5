"""How well a model separates good parts from defective ones (`lineinspect evaluate`).

Every image goes through `Model.infer`, the code the station runs, so the
figures are those of production: the image score is `output.score` (0–1,
higher = worse) and the pixel map `output.defect_map` (0–1, in the image's
own pixels).

Figures:
- image AUROC: rank-based (Mann–Whitney), ties count half;
- pixel AUROC over good images and defective images with masks, on a seeded
  random subsample of each image's pixels (the same share of every image);
- IoU at the pixel threshold: Σ|predicted ∧ true| / Σ|predicted ∨ true| over
  the same images (a region on a good part adds to the union);
- the confusion matrix at the card's thresholds: an image is called defective
  when the station would reject it under a recipe with no rules of its own
  (`recipe.decide`: any defect the adapter reports at or above the card's
  threshold; for anomaly cards a map pixel at or above `pixel_threshold`, so
  the image score alone does not decide); from it the false-reject rate (good
  called defective / good) and the escape rate (defective called good / defective);
- per defect class: count, recall at the card's thresholds, AUROC against all good images;
- model time per image (preprocess + ONNX + adapter), median and mean.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineinspect.core.model import Model
from lineinspect.core.modelcard import ModelCard
from lineinspect.core.recipe import Recipe, decide
from lineinspect.core.result import Verdict
from lineinspect.offline.datasets import LabelledImage, read_labelled
from lineinspect.offline.thresholds import lowest_defect_threshold

REPORT_FILE = "report.json"
REPORT_SCHEMA = "lineinspect.evaluation/1"
PIXEL_SAMPLE_SHARE = 1 / 16  # of each image's pixels, for pixel AUROC
PIXEL_SAMPLE_ALL_BELOW = 4096  # small images: every pixel
WORST_SHOWN = 8


def auroc(scores: Sequence[float] | np.ndarray, defective: Sequence[bool] | np.ndarray) -> float | None:
    """Area under the ROC curve by ranks: P(score of a defective > score of a good), ties half.

    None when either class is missing (the area is undefined).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(defective, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average rank over each run of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, defective: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates), from (0, 0) to (1, 1), one point per distinct score."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(defective, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    tpr = np.r_[0.0, tp / max(1, int(y.sum()))]
    fpr = np.r_[0.0, fp / max(1, int((~y).sum()))]
    return fpr, tpr


def precision_recall_curve(scores: np.ndarray, defective: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recalls, precisions) at the points of `roc_curve`, from (0, 1); precision 1 where nothing is called."""
    y = np.asarray(defective, dtype=bool)
    fpr, tpr = roc_curve(scores, y)
    true_reject, false_reject = tpr * int(y.sum()), fpr * int((~y).sum())
    called = true_reject + false_reject
    precision = np.divide(true_reject, called, out=np.ones_like(called), where=called > 0)
    return tpr, precision


def average_precision(scores: np.ndarray, defective: np.ndarray) -> float | None:
    """Area under the stepped precision-recall curve: Σ (recall gained) × precision; None without defects."""
    if not np.asarray(defective, dtype=bool).any():
        return None
    recall, precision = precision_recall_curve(scores, defective)
    return float(np.sum(np.diff(recall) * precision[1:]))


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts at one decision threshold; defective is the positive class."""

    true_reject: int  # defective, called defective
    escape: int  # defective, called good
    false_reject: int  # good, called defective
    true_pass: int  # good, called good

    @classmethod
    def at(cls, scores: np.ndarray, defective: np.ndarray, threshold: float) -> Confusion:
        return cls.of(np.asarray(scores) >= threshold, defective)

    @classmethod
    def of(cls, called: np.ndarray, defective: np.ndarray) -> Confusion:
        """called: (n,) bool, the image was called defective; defective: (n,) bool, the truth."""
        called = np.asarray(called, dtype=bool)
        y = np.asarray(defective, dtype=bool)
        return cls(
            true_reject=int((called & y).sum()),
            escape=int((~called & y).sum()),
            false_reject=int((called & ~y).sum()),
            true_pass=int((~called & ~y).sum()),
        )

    @property
    def false_reject_rate(self) -> float | None:
        good = self.false_reject + self.true_pass
        return self.false_reject / good if good else None

    @property
    def escape_rate(self) -> float | None:
        bad = self.true_reject + self.escape
        return self.escape / bad if bad else None

    @property
    def precision(self) -> float | None:
        """Share of the rejected parts that are defective; None when nothing is rejected."""
        called = self.true_reject + self.false_reject
        return self.true_reject / called if called else None


def iou(intersection_px: int, union_px: int) -> float | None:
    return intersection_px / union_px if union_px else None


def decision_threshold(card: ModelCard) -> float:
    """Image score at or above which a part is called defective, on the adapter's 0–1 scale."""
    if card.adapter == "anomaly":
        return 0.5  # the anomaly adapter maps the card's raw image_threshold to 0.5
    return lowest_defect_threshold(card)


@dataclass(slots=True)
class ImageRow:
    """One evaluated image. score 0–1; iou None where there is no mask."""

    item: LabelledImage
    score: float
    infer_ms: float
    width: int
    height: int
    defect_px: int | None
    iou: float | None
    rank: float | None = None  # what AUROC ranks by (unclipped score where known); None: `score`
    rejected: bool = False  # the station's verdict would be fail (see the module docstring)


@dataclass(slots=True)
class Evaluation:
    """Everything `evaluate` measured; `report()` is the JSON report."""

    model: str
    model_path: str
    adapter: str
    threshold: float
    pixel_threshold: float
    rows: list[ImageRow] = field(default_factory=list)
    pixel_scores: list[np.ndarray] = field(default_factory=list)
    pixel_truth: list[np.ndarray] = field(default_factory=list)
    intersection_px: int = 0
    union_px: int = 0
    without_mask: int = 0

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.rows], dtype=np.float64)

    @property
    def ranks(self) -> np.ndarray:
        """What AUROC ranks by: the unclipped score where the adapter gives one, else the score."""
        return np.array([r.score if r.rank is None else r.rank for r in self.rows], dtype=np.float64)

    @property
    def defective(self) -> np.ndarray:
        return np.array([r.item.defective for r in self.rows], dtype=bool)

    @property
    def rejected(self) -> np.ndarray:
        """(n,) bool: the station would reject the image."""
        return np.array([r.rejected for r in self.rows], dtype=bool)

    @property
    def confusion(self) -> Confusion:
        return Confusion.of(self.rejected, self.defective)

    def pixel_auroc(self) -> float | None:
        if not self.pixel_scores:
            return None
        return auroc(np.concatenate(self.pixel_scores), np.concatenate(self.pixel_truth))

    def worst_escapes(self, count: int = WORST_SHOWN) -> list[ImageRow]:
        """Escapes, lowest score first: defective images the station would pass (as the confusion counts)."""
        escapes = (r for r in self.rows if r.item.defective and not r.rejected)
        return sorted(escapes, key=lambda r: (r.score, r.rank or 0.0))[:count]

    def worst_false_rejects(self, count: int = WORST_SHOWN) -> list[ImageRow]:
        """False rejects, highest score first: good images the station would reject."""
        false_rejects = (r for r in self.rows if not r.item.defective and r.rejected)
        return sorted(false_rejects, key=lambda r: (-r.score, -(r.rank or 0.0)))[:count]

    def report(self) -> dict[str, Any]:
        defective = self.defective
        confusion = self.confusion
        times = np.array([r.infer_ms for r in self.rows])
        classes: dict[str, Any] = {}
        ranks = self.ranks
        good_ranks = ranks[~defective]
        for name in sorted({r.item.class_name for r in self.rows if r.item.defective}):
            picked = np.array([r.item.class_name == name for r in self.rows])
            class_ranks = ranks[picked]
            ious = [r.iou for r in self.rows if r.item.class_name == name and r.iou is not None]
            classes[name] = {
                "images": int(picked.sum()),
                "recall": _round(float(self.rejected[picked].mean())),
                "image_auroc": _round(
                    auroc(np.r_[good_ranks, class_ranks], np.r_[np.zeros(len(good_ranks)), np.ones(picked.sum())])
                ),
                "mean_iou": _round(float(np.mean(ious))) if ious else None,
            }
        return {
            "schema": REPORT_SCHEMA,
            "model": {"name": self.model, "path": self.model_path, "adapter": self.adapter},
            "images": {
                "good": int((~defective).sum()),
                "defective": int(defective.sum()),
                "defective_without_mask": self.without_mask,
            },
            "decision": {
                "image_threshold": self.threshold,
                "pixel_threshold": self.pixel_threshold,
                "rule": "defective when the station would reject it with a recipe of no rules of its own: "
                f"a reported defect scoring >= {self.pixel_threshold:g} (image score threshold {self.threshold:g})",
            },
            "image_auroc": _round(auroc(ranks, defective)),
            "pixel_auroc": _round(self.pixel_auroc()),
            "pixel_iou": _round(iou(self.intersection_px, self.union_px)),
            "confusion": {
                "true_reject": confusion.true_reject,
                "escape": confusion.escape,
                "false_reject": confusion.false_reject,
                "true_pass": confusion.true_pass,
            },
            "false_reject_rate": _round(confusion.false_reject_rate),
            "escape_rate": _round(confusion.escape_rate),
            "classes": classes,
            "ms_per_image": {
                "median": _round(float(np.median(times)), 2) if len(times) else None,
                "mean": _round(float(times.mean()), 2) if len(times) else None,
            },
            "worst_escapes": [_row_json(r) for r in self.worst_escapes()],
            "worst_false_rejects": [_row_json(r) for r in self.worst_false_rejects()],
            "rows": [_row_json(r) for r in self.rows],
        }

    def summary(self) -> str:
        r = self.report()
        c = r["confusion"]
        lines = [
            f"{r['model']['name']}: {r['images']['good']} good, {r['images']['defective']} defective images",
            f"  image AUROC {_fmt(r['image_auroc'])}   pixel AUROC {_fmt(r['pixel_auroc'])}   "
            f"IoU@{self.pixel_threshold:g} {_fmt(r['pixel_iou'])}",
            f"  at the card's thresholds: false rejects {c['false_reject']}/{r['images']['good']} "
            f"({_pct(r['false_reject_rate'])}), escapes {c['escape']}/{r['images']['defective']} "
            f"({_pct(r['escape_rate'])})",
        ]
        for name, figures in r["classes"].items():
            lines.append(
                f"  {name:14} {figures['images']:4} images  recall {_pct(figures['recall'])}  "
                f"AUROC {_fmt(figures['image_auroc'])}"
            )
        lines.append(f"  {r['ms_per_image']['median']} ms/image (median, model only)")
        return "\n".join(lines)


def evaluate(
    model: Model,
    items: Sequence[LabelledImage],
    *,
    seed: int = 0,
    on_image: Callable[[ImageRow], None] | None = None,
) -> Evaluation:
    """Run the model on every image and collect the figures (see the module docstring)."""
    card = model.card
    result = Evaluation(
        model=card.name,
        model_path=str(model.path),
        adapter=card.adapter,
        threshold=decision_threshold(card),
        pixel_threshold=card.threshold_for(card.labels[0] if card.labels else "anomaly"),
    )
    rng = np.random.default_rng(seed)
    recipe = Recipe(id=f"{card.name}-evaluate", model=card.name)
    for item in items:
        image, mask = read_labelled(item)
        started = time.monotonic_ns()
        inference = model.infer(image)
        infer_ms = (time.monotonic_ns() - started) / 1e6
        output = inference.output
        h, w = image.shape[:2]
        # Rank by the unclipped values where the adapter has them: clipping to 0–1 makes ties
        # of every clearly good image (and pixel), which would understate AUROC.
        rank = output.raw_score if output.raw_score is not None else output.score
        row = ImageRow(item, float(output.score), infer_ms, w, h, None if mask is None else int(mask.sum()), None)
        row.rank = float(rank)
        row.rejected = decide(output.defects, output.score, recipe, card.thresholds).verdict == Verdict.FAIL
        if mask is None:
            result.without_mask += 1
        elif output.defect_map is not None:
            defect_map = output.defect_map
            predicted = defect_map >= result.pixel_threshold
            inter, union = int((predicted & mask).sum()), int((predicted | mask).sum())
            result.intersection_px += inter
            result.union_px += union
            if item.defective:
                row.iou = iou(inter, union) if union else 1.0
            ranking_map = defect_map if output.raw_map is None else inference.geometry.map_to_image(output.raw_map)
            flat = ranking_map.reshape(-1)
            if flat.size > PIXEL_SAMPLE_ALL_BELOW:
                picked = rng.choice(flat.size, size=max(1, round(flat.size * PIXEL_SAMPLE_SHARE)), replace=False)
            else:
                picked = np.arange(flat.size)
            result.pixel_scores.append(flat[picked].astype(np.float32))
            result.pixel_truth.append(mask.reshape(-1)[picked])
        result.rows.append(row)
        if on_image is not None:
            on_image(row)
    return result


def write_report(evaluation: Evaluation, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text(json.dumps(evaluation.report(), indent=1) + "\n", encoding="utf-8")
    return path


def _row_json(row: ImageRow) -> dict[str, Any]:
    return {
        "file": str(row.item.path),
        "class": row.item.class_name,
        "score": _round(row.score),
        "rank": _round(row.rank),
        "rejected": row.rejected,
        "size": f"{row.width}x{row.height}",
        "defect_px": row.defect_px,
        "iou": _round(row.iou),
        "ms": _round(row.infer_ms, 2),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
