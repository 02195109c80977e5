"""What an operator can say about an archived part, and what that makes of it in a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineinspect.core.clock import iso_utc
from lineinspect.core.result import Verdict
from lineinspect.line.archive.index import ArchiveIndex, FrameRow, ReviewRow

GOOD = "good"  # the dataset class of good parts (what `evaluate --good` and `teach --good` read)
DEFAULT_DEFECT_CLASS = "defect"


class ReviewLabel(StrEnum):
    CONFIRMED_DEFECT = "confirmed_defect"  # a failed or undecided part that really is defective
    FALSE_REJECT = "false_reject"  # a failed or undecided part that is good
    ESCAPE = "escape"  # a passed part found bad downstream
    CONFIRMED_GOOD = "confirmed_good"  # a passed part checked and good


# Which verdicts each label can be given to: a pass cannot be a false reject, a fail cannot escape.
LABEL_VERDICTS: dict[ReviewLabel, frozenset[str]] = {
    ReviewLabel.CONFIRMED_DEFECT: frozenset({Verdict.FAIL.value, Verdict.UNDECIDED.value}),
    ReviewLabel.FALSE_REJECT: frozenset({Verdict.FAIL.value, Verdict.UNDECIDED.value}),
    ReviewLabel.ESCAPE: frozenset({Verdict.PASS.value}),
    ReviewLabel.CONFIRMED_GOOD: frozenset({Verdict.PASS.value}),
}
DEFECTIVE_LABELS = frozenset({ReviewLabel.CONFIRMED_DEFECT, ReviewLabel.ESCAPE})


def counting_class(row: FrameRow) -> str | None:
    """The first defect class that counted against the part, from its result."""
    return next((d["class"] for d in row.payload.get("defects", []) if d.get("counts")), None)


def dataset_class(
    row: FrameRow, reviews: list[ReviewRow], *, reviewed_only: bool, unreviewed_fails: bool
) -> str | None:
    """What an archived part is in a dataset: `good`, a defect class, or None (left out).

    The last review decides: confirmed defects and escapes are defects of their class, false rejects and
    confirmed passes are good. Unreviewed: a pass is good (the model and nobody else said so) unless
    `reviewed_only`; a fail is left out unless `unreviewed_fails` (then a defect of its counting class);
    an undecided part is left out (no judgement to learn from).
    """
    if reviews:
        last = reviews[-1]
        label = ReviewLabel(last.label)
        if label in DEFECTIVE_LABELS:
            return last.defect_class or counting_class(row) or DEFAULT_DEFECT_CLASS
        return GOOD
    if reviewed_only:
        return None
    if row.verdict == Verdict.PASS.value:
        return GOOD
    if row.verdict == Verdict.FAIL.value and unreviewed_fails:
        return counting_class(row) or DEFAULT_DEFECT_CLASS
    return None


@dataclass(frozen=True, slots=True)
class DatasetPart:
    """One archived part as a labelled image: what `lineinspect archive export` writes."""

    result_id: str
    class_name: str  # GOOD or a defect class
    image_path: Path
    mask: np.ndarray | None  # (H, W) bool, defects only; None: no region known
    mask_source: str | None  # review_mask, review_box, result_boxes
    record: dict[str, Any]  # the manifest's entry: the result and its reviews


def defect_mask(row: FrameRow, review: ReviewRow | None) -> tuple[np.ndarray | None, str | None]:
    """The defect's region: the reviewer's painted mask, else their box, else the result's counting boxes."""
    image = row.payload.get("image") or {}
    width, height = image.get("width"), image.get("height")
    if not width or not height:
        return None, None
    if review is not None and review.mask_png is not None:
        mask = cv2.imdecode(np.frombuffer(review.mask_png, np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is not None and mask.shape == (height, width):
            return mask > 127, "review_mask"
    boxes: list[tuple[float, float, float, float]]
    if review is not None and review.box_px is not None:
        boxes, source = [review.box_px], "review_box"
    else:
        boxes = [tuple(d["box_px"]) for d in row.payload.get("defects", []) if d.get("counts")]
        source = "result_boxes"
    if not boxes:
        return None, None
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, int(y0)) : max(0, int(np.ceil(y1))), max(0, int(x0)) : max(0, int(np.ceil(x1)))] = True
    return (mask, source) if mask.any() else (None, None)


def dataset_parts(
    index: ArchiveIndex,
    folder: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    camera: str | None = None,
    recipe: str | None = None,
    reviewed_only: bool = False,
    unreviewed_fails: bool = False,
    left_out: dict[str, int] | None = None,
) -> Iterator[DatasetPart]:
    """The archived parts in [since, until) (of one camera / recipe) as labelled images, oldest first.

    left_out: filled with how many parts were left out, by why.
    """
    counts = left_out if left_out is not None else {}
    for row in index.search(camera=camera, recipe=recipe, since=since, until=until, limit=None, oldest_first=True):
        reviews = index.reviews(row.result_id)
        class_name = dataset_class(row, reviews, reviewed_only=reviewed_only, unreviewed_fails=unreviewed_fails)
        if class_name is None:
            why = "not reviewed" if row.verdict != Verdict.UNDECIDED.value else "undecided, not reviewed"
            counts[why] = counts.get(why, 0) + 1
            continue
        last = reviews[-1] if reviews else None
        mask, mask_source = (None, None) if class_name == GOOD else defect_mask(row, last)
        yield DatasetPart(
            result_id=row.result_id,
            class_name=class_name,
            image_path=folder / row.ref,
            mask=mask,
            mask_source=mask_source,
            record={
                "result_id": row.result_id,
                "class": class_name,
                "verdict": row.verdict,
                "source": row.source,
                "camera_id": row.camera_id,
                "part_id": row.part_id,
                "recipe_id": row.recipe_id,
                "decided_at": iso_utc(row.decided_at, "milliseconds"),
                "model": row.payload.get("model"),
                "score": row.payload.get("score"),
                "reason": row.payload.get("reason"),
                "mask_source": mask_source,
                "reviews": [r.to_payload() for r in reviews],
            },
        )
