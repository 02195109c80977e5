"""PNG plots of an evaluation, drawn with OpenCV (no plotting library on the box).

- `roc.png`: the image-level ROC curve with its AUROC and the operating point
  at the decision threshold;
- `scores.png`: histograms of the image scores of good and of defective parts,
  with the threshold;
- `worst.png`: a contact sheet of the worst escapes (defective parts the station
  would pass, lowest scores first) and the worst false rejects (good parts it would
  reject, highest first),
  each drawn as the station shows it (`lineinspect.core.overlay`) with the true
  defect outlined in green.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model
from lineinspect.core.overlay import draw_overlay
from lineinspect.core.recipe import Recipe
from lineinspect.offline.datasets import read_labelled
from lineinspect.offline.evaluate import Evaluation, ImageRow, auroc, roc_curve

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GRID = (220, 220, 220)
GOOD_COLOUR = (60, 170, 0)  # BGR green
DEFECT_COLOUR = (0, 0, 220)  # BGR red
CURVE_COLOUR = (180, 80, 0)  # BGR blue
TRUTH_COLOUR = (0, 255, 0)
TILE_PX = 240
FONT = cv2.FONT_HERSHEY_SIMPLEX


def write_plots(evaluation: Evaluation, model: Model, out_dir: Path) -> list[Path]:
    """Write roc.png, scores.png and worst.png into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, canvas in (
        ("roc.png", roc_plot(evaluation)),
        ("scores.png", score_histogram(evaluation)),
        ("worst.png", worst_sheet(evaluation, model)),
    ):
        path = out_dir / name
        if not cv2.imwrite(str(path), canvas):
            raise OSError(f"{path}: cannot write the plot")
        written.append(path)
    return written


def roc_plot(evaluation: Evaluation, size_px: int = 480) -> np.ndarray:
    """(size, size, 3) BGR: TPR over FPR, the chance diagonal, the operating point."""
    canvas, to_px = _axes(size_px, size_px, "false-reject rate (good called defective)", "defect recall")
    ranks, defective = evaluation.ranks, evaluation.defective
    if defective.any() and (~defective).any():
        fpr, tpr = roc_curve(ranks, defective)
        cv2.line(canvas, to_px(0, 0), to_px(1, 1), GRID, 1, cv2.LINE_AA)
        points = np.array([to_px(x, y) for x, y in zip(fpr, tpr, strict=True)], np.int32)
        cv2.polylines(canvas, [points], False, CURVE_COLOUR, 2, cv2.LINE_AA)
        c = evaluation.confusion
        x, y = c.false_reject_rate or 0.0, 1.0 - (c.escape_rate or 0.0)
        cv2.circle(canvas, to_px(x, y), 6, DEFECT_COLOUR, 2, cv2.LINE_AA)
        _text(canvas, f"threshold {evaluation.threshold:g}", (to_px(x, y)[0] + 10, to_px(x, y)[1] + 20))
        _text(canvas, f"image AUROC {auroc(ranks, defective):.4f}", (70, 30), scale=0.6)
    else:
        _text(canvas, "ROC needs good and defective images", (70, 30), scale=0.5)
    return canvas


def score_histogram(evaluation: Evaluation, width_px: int = 640, height_px: int = 400, bins: int = 40) -> np.ndarray:
    """(height, width, 3) BGR: share of good and of defective images per score bin (0–1)."""
    canvas, to_px = _axes(width_px, height_px, "image score", "share of images")
    scores, defective = evaluation.scores, evaluation.defective
    edges = np.linspace(0.0, 1.0, bins + 1)
    groups = [(scores[~defective], GOOD_COLOUR, "good"), (scores[defective], DEFECT_COLOUR, "defective")]
    shares = [np.histogram(np.clip(s, 0, 1), edges)[0] / max(1, len(s)) for s, _, _ in groups]
    top = max(0.05, max(float(h.max()) for h in shares if h.size))
    for (group, colour, label), share, offset in zip(groups, shares, (0, 1), strict=True):
        overlay = canvas.copy()
        for i, value in enumerate(share):
            if value <= 0:
                continue
            x0, y0 = to_px(edges[i], value / top)
            x1, y1 = to_px(edges[i + 1], 0.0)
            cv2.rectangle(overlay, (x0 + 1, y0), (x1 - 1, y1), colour, cv2.FILLED)
        cv2.addWeighted(overlay, 0.5, canvas, 0.5, 0, dst=canvas)
        _text(canvas, f"{label} ({len(group)})", (width_px - 170, 30 + 22 * offset), colour=colour, scale=0.5)
    tx = to_px(evaluation.threshold, 0)[0]
    cv2.line(canvas, (tx, to_px(0, 1)[1]), (tx, to_px(0, 0)[1]), BLACK, 1, cv2.LINE_AA)
    _text(canvas, f"threshold {evaluation.threshold:g}", (tx + 4, to_px(0, 1)[1] + 14))
    return canvas


def worst_sheet(evaluation: Evaluation, model: Model, tile_px: int = TILE_PX) -> np.ndarray:
    """Two rows: worst escapes, then worst false rejects; an empty row says so."""
    recipe = Recipe(id=f"{model.id}-evaluate", model=model.id)
    inspector = Inspector({model.id: model}, {recipe.id: recipe}, recipe.id)
    confusion = evaluation.confusion
    rows = [
        (f"worst escapes (defective parts passed: {confusion.escape}; lowest scores)", evaluation.worst_escapes()),
        (
            f"worst false rejects (good parts rejected: {confusion.false_reject}; highest scores)",
            evaluation.worst_false_rejects(),
        ),
    ]
    columns = max(1, max(len(r) for _, r in rows))
    heading_px = 28
    sheet = np.full((len(rows) * (tile_px + heading_px + 22), columns * tile_px, 3), 255, np.uint8)
    y = 0
    for title, picked in rows:
        _text(sheet, title, (6, y + 20), scale=0.55)
        y += heading_px
        if not picked:
            _text(sheet, "none", (6, y + 40))
        for i, row in enumerate(picked):
            tile = _tile(row, inspector, tile_px)
            sheet[y : y + tile.shape[0], i * tile_px : i * tile_px + tile.shape[1]] = tile
            caption = f"{row.item.class_name} {row.score:.2f}"
            _text(sheet, caption, (i * tile_px + 4, y + tile_px + 16), scale=0.45)
        y += tile_px + 22
    return sheet


def _tile(row: ImageRow, inspector: Inspector, tile_px: int) -> np.ndarray:
    image, mask = read_labelled(row.item)
    result = inspector.inspect(Frame(image, source=str(row.item.path)))
    canvas = draw_overlay(image, result)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, TRUTH_COLOUR, max(1, round(min(canvas.shape[:2]) / 250)))
    h, w = canvas.shape[:2]
    scale = tile_px / max(h, w)
    small = cv2.resize(canvas, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((tile_px, tile_px, 3), 255, np.uint8)
    tile[: small.shape[0], : small.shape[1]] = small
    return tile


def _axes(
    width_px: int, height_px: int, x_label: str, y_label: str
) -> tuple[np.ndarray, Callable[[float, float], tuple[int, int]]]:
    """A white canvas with a framed 0–1 × 0–1 plot area; returns it and a (x, y) → pixel function."""
    canvas = np.full((height_px, width_px, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 45, 50
    inner_w, inner_h = width_px - left - right, height_px - top - bottom

    def to_px(x: float, y: float) -> tuple[int, int]:
        return round(left + x * inner_w), round(top + (1.0 - y) * inner_h)

    for tick in np.linspace(0, 1, 6):
        cv2.line(canvas, to_px(tick, 0), to_px(tick, 1), GRID, 1)
        cv2.line(canvas, to_px(0, tick), to_px(1, tick), GRID, 1)
        _text(canvas, f"{tick:.1f}", (to_px(tick, 0)[0] - 10, to_px(tick, 0)[1] + 16), scale=0.35)
        _text(canvas, f"{tick:.1f}", (to_px(0, tick)[0] - 30, to_px(0, tick)[1] + 4), scale=0.35)
    cv2.rectangle(canvas, to_px(0, 1), to_px(1, 0), BLACK, 1)
    _text(canvas, x_label, (left, height_px - 10), scale=0.45)
    _text(canvas, y_label, (8, top - 12), scale=0.45)
    return canvas, to_px


def _text(
    canvas: np.ndarray,
    text: str,
    origin: tuple[int, int] | Sequence[int],
    *,
    colour: tuple[int, int, int] = BLACK,
    scale: float = 0.4,
) -> None:
    cv2.putText(canvas, text, (int(origin[0]), int(origin[1])), FONT, scale, colour, 1, cv2.LINE_AA)
