"""PNG plots of an evaluation: the curves with matplotlib (the `train` extra), the contact sheet with OpenCV.

- `roc.png`: two panels, the image-level ROC curve with its AUROC and the precision-recall
  curve with its average precision, the operating point at the decision threshold on both;
- `scores.png`: histograms of the image scores of good and of defective parts,
  with the threshold;
- `worst.png`: a contact sheet of the worst escapes (defective parts the station
  would pass, lowest scores first) and the worst false rejects (good parts it would
  reject, highest first),
  each drawn as the station shows it (`lineinspect.core.overlay`) with the true
  defect outlined in green.

matplotlib is imported inside the functions that draw with it: the service install has none, and
`write_plots` then writes worst.png alone and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model
from lineinspect.core.overlay import draw_overlay
from lineinspect.core.recipe import Recipe
from lineinspect.offline.datasets import read_labelled
from lineinspect.offline.evaluate import (
    Evaluation,
    ImageRow,
    auroc,
    average_precision,
    precision_recall_curve,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BLACK = (0, 0, 0)
TRUTH_COLOUR = (0, 255, 0)
TILE_PX = 240
FONT = cv2.FONT_HERSHEY_SIMPLEX
PLOT_DPI = 100
ROC_SIZE_IN = (10.0, 4.6)  # 1000 × 460 px: ROC and precision-recall side by side
SCORES_SIZE_IN = (7.0, 4.2)  # 700 × 420 px
GOOD_COLOUR = "#2ca02c"
DEFECT_COLOUR = "#d62728"
CURVE_COLOUR = "#1f77b4"
CHANCE_COLOUR = "0.6"
NEEDS_MATPLOTLIB = (
    "roc.png and scores.png not drawn: the plots need matplotlib, which the service install does not have: "
    "pip install 'lineinspect[train]'"
)


def write_plots(evaluation: Evaluation, model: Model, out_dir: Path) -> tuple[list[Path], str | None]:
    """Write roc.png, scores.png and worst.png into out_dir; return their paths and a note on what is missing.

    Without matplotlib only worst.png is written and the note says so (NEEDS_MATPLOTLIB); else the note is None.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written, note = [], None
    try:
        written += [write_roc(evaluation, out_dir / "roc.png"), write_scores(evaluation, out_dir / "scores.png")]
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "matplotlib":
            raise
        note = NEEDS_MATPLOTLIB
    worst = out_dir / "worst.png"
    if not cv2.imwrite(str(worst), worst_sheet(evaluation, model)):
        raise OSError(f"{worst}: cannot write the plot")
    return [*written, worst], note


def write_roc(evaluation: Evaluation, path: Path) -> Path:
    """roc.png: ROC (left) and precision-recall (right) of the image scores, the operating point on both."""
    figure = _figure(ROC_SIZE_IN)
    roc_axes, pr_axes = figure.subplots(1, 2)
    defective = evaluation.defective
    if defective.any() and (~defective).any():
        _roc_panel(roc_axes, evaluation)
        _pr_panel(pr_axes, evaluation)
    else:
        for axes, title in ((roc_axes, "ROC"), (pr_axes, "precision–recall")):
            axes.text(0.5, 0.5, f"{title} needs good and defective images", ha="center", transform=axes.transAxes)
    return _save(figure, path)


def write_scores(evaluation: Evaluation, path: Path, bins: int = 40) -> Path:
    """scores.png: share of the good and of the defective images per score bin (0–1), the threshold."""
    figure = _figure(SCORES_SIZE_IN)
    axes = figure.subplots()
    scores, defective = evaluation.scores, evaluation.defective
    edges = np.linspace(0.0, 1.0, bins + 1).tolist()
    for group, colour, label in (
        (scores[~defective], GOOD_COLOUR, "good"),
        (scores[defective], DEFECT_COLOUR, "defective"),
    ):
        if group.size:
            share = np.full(group.size, 1.0 / group.size)
            axes.hist(
                np.clip(group, 0, 1),
                bins=edges,
                weights=share,
                color=colour,
                alpha=0.55,
                label=f"{label} ({group.size})",
            )
    axes.axvline(
        evaluation.threshold, color="black", linewidth=1.5, linestyle="--", label=f"threshold {evaluation.threshold:g}"
    )
    axes.set(xlim=(0.0, 1.0), xlabel="image score (as the station sees it)", ylabel="share of the group's images")
    axes.set_title("image scores of good and defective parts")
    axes.grid(True, color="0.9")
    axes.legend(loc="best")
    return _save(figure, path)


def _roc_panel(axes: Axes, evaluation: Evaluation) -> None:
    ranks, defective, c = evaluation.ranks, evaluation.defective, evaluation.confusion
    fpr, tpr = roc_curve(ranks, defective)
    axes.plot([0, 1], [0, 1], color=CHANCE_COLOUR, linewidth=1, linestyle=":", label="chance")
    axes.plot(fpr, tpr, color=CURVE_COLOUR, linewidth=2, label="image ROC")
    _operating_point(axes, c.false_reject_rate or 0.0, 1.0 - (c.escape_rate or 0.0), evaluation.threshold)
    _unit_axes(axes, "false-reject rate (good parts rejected)", "defect recall (defective parts rejected)")
    axes.set_title(f"ROC: image AUROC {auroc(ranks, defective) or 0.0:.4f}")


def _pr_panel(axes: Axes, evaluation: Evaluation) -> None:
    ranks, defective, c = evaluation.ranks, evaluation.defective, evaluation.confusion
    recall, precision = precision_recall_curve(ranks, defective)
    share = float(defective.mean())
    axes.axhline(share, color=CHANCE_COLOUR, linewidth=1, linestyle=":", label=f"chance ({share:.2f} defective)")
    axes.step(recall, precision, where="pre", color=CURVE_COLOUR, linewidth=2, label="image precision–recall")
    if c.precision is not None:
        _operating_point(axes, 1.0 - (c.escape_rate or 0.0), c.precision, evaluation.threshold)
    _unit_axes(axes, "defect recall (defective parts rejected)", "precision (rejected parts that are defective)")
    axes.set_title(f"precision–recall: average precision {average_precision(ranks, defective) or 0.0:.4f}")


def _operating_point(axes: Axes, x: float, y: float, threshold: float) -> None:
    axes.plot([x], [y], "o", markersize=10, markerfacecolor="none", markeredgewidth=2, color=DEFECT_COLOUR,
              label=f"operating point, threshold {threshold:g}")  # fmt: skip


def _unit_axes(axes: Axes, x_label: str, y_label: str) -> None:
    axes.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=x_label, ylabel=y_label, aspect="equal")
    axes.grid(True, color="0.9")
    axes.legend(loc="best", fontsize="small")


def _figure(size_in: tuple[float, float]) -> Figure:
    """A figure on the Agg canvas (no display, no pyplot state), laid out so nothing overlaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size_in, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=PLOT_DPI, facecolor="white")
    return path


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


def _text(
    canvas: np.ndarray,
    text: str,
    origin: tuple[int, int] | Sequence[int],
    *,
    colour: tuple[int, int, int] = BLACK,
    scale: float = 0.4,
) -> None:
    cv2.putText(canvas, text, (int(origin[0]), int(origin[1])), FONT, scale, colour, 1, cv2.LINE_AA)
