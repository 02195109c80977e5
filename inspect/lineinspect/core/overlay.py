"""Annotated images: a result's defects drawn over the inspected image.

Used by the HTTP upload (`annotate=true`); the dashboard and `evaluate` draw
with the same code so an operator sees the same picture everywhere.
"""

from __future__ import annotations

import cv2
import numpy as np

from lineinspect.core.defects import Defect
from lineinspect.core.result import Finding, Result, Verdict
from lineinspect.errors import ImageError

# BGR colours.
COUNTING_COLOUR = (0, 0, 255)  # red: this defect counts against the part
TOLERATED_COLOUR = (0, 190, 255)  # amber: reported, within the recipe's limits
VERDICT_COLOUR = {
    Verdict.PASS: (60, 170, 0),
    Verdict.FAIL: (0, 0, 220),
    Verdict.UNDECIDED: (0, 140, 255),
}
MASK_ALPHA = 0.45
MEDIA_TYPES = {"image/png": ".png", "image/jpeg": ".jpg"}


def draw_overlay(image: np.ndarray, result: Result) -> np.ndarray:
    """Draw the result's defects (mask, box, class and score) and its verdict.

    image: (H, W) gray or (H, W, 3) BGR uint8, the image the result was made
    from (defect boxes are in its pixels). Returns a new (H, W, 3) BGR uint8.
    """
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    font_scale = max(0.35, min(h, w) / 900)
    # Tolerated first so counting defects are drawn on top where they overlap.
    for finding in sorted(result.findings, key=lambda f: f.counts):
        _draw_finding(canvas, finding, thickness, font_scale)
    _draw_verdict(canvas, result, thickness, font_scale)
    return canvas


def encode_overlay(canvas: np.ndarray, media_type: str = "image/png") -> bytes:
    """(H, W, 3) BGR uint8 → PNG or JPEG bytes."""
    extension = MEDIA_TYPES.get(media_type)
    if extension is None:
        choices = list(MEDIA_TYPES)
        raise ImageError("unsupported_format", f"overlay: cannot encode {media_type}; choose one of {choices}")
    ok, encoded = cv2.imencode(extension, canvas)
    if not ok:
        raise ImageError("corrupt", f"overlay: OpenCV could not encode a {canvas.shape} image as {media_type}")
    return encoded.tobytes()


def _draw_finding(canvas: np.ndarray, finding: Finding, thickness: int, font_scale: float) -> None:
    h, w = canvas.shape[:2]
    defect = finding.defect
    colour = COUNTING_COLOUR if finding.counts else TOLERATED_COLOUR
    box = defect.box.clipped(w, h)
    x0, y0, x1, y1 = round(box.x0), round(box.y0), round(box.x1), round(box.y1)
    if x1 <= x0 or y1 <= y0:
        return
    if defect.mask is not None and defect.mask.size:
        _blend_mask(canvas, defect, colour)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, thickness, cv2.LINE_8)  # crisp: exact pixels
    _label(canvas, f"{defect.class_name} {defect.score:.2f}", (x0, y0), colour, thickness, font_scale)


def _blend_mask(canvas: np.ndarray, defect: Defect, colour: tuple[int, int, int]) -> None:
    assert defect.mask is not None
    h, w = canvas.shape[:2]
    # The mask covers the unclipped box, in whole pixels from the box's corner.
    bx0, by0 = round(defect.box.x0), round(defect.box.y0)
    bw, bh = max(1, round(defect.box.width)), max(1, round(defect.box.height))
    mask = defect.mask
    if mask.shape != (bh, bw):
        mask = cv2.resize(mask.astype(np.uint8), (bw, bh), interpolation=cv2.INTER_NEAREST).astype(bool)
    cx0, cy0 = max(bx0, 0), max(by0, 0)
    cx1, cy1 = min(bx0 + bw, w), min(by0 + bh, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    visible = mask[cy0 - by0 : cy1 - by0, cx0 - bx0 : cx1 - bx0]
    region = canvas[cy0:cy1, cx0:cx1]
    tint = np.array(colour, dtype=np.float32)
    region[visible] = (region[visible] * (1 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)


def _draw_verdict(canvas: np.ndarray, result: Result, thickness: int, font_scale: float) -> None:
    text = result.verdict.value.upper()
    if result.score is not None:
        text += f"  score {result.score:.2f}"
    _label(canvas, text, (0, 0), VERDICT_COLOUR[result.verdict], thickness, font_scale * 1.2, inside=True)


def _label(
    canvas: np.ndarray,
    text: str,
    corner: tuple[int, int],
    colour: tuple[int, int, int],
    thickness: int,
    font_scale: float,
    *,
    inside: bool = False,
) -> None:
    """Text on a filled background above the corner, or below it where there is no room."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), baseline = cv2.getTextSize(text, font, font_scale, thickness)
    pad = max(2, thickness * 2)
    x, y = corner
    top = y - th - baseline - 2 * pad
    if inside or top < 0:
        top = y
    x = min(max(x, 0), max(0, canvas.shape[1] - tw - 2 * pad))
    bottom = top + th + baseline + 2 * pad
    cv2.rectangle(canvas, (x, top), (x + tw + 2 * pad, bottom), colour, cv2.FILLED)
    origin = (x + pad, bottom - baseline - pad)
    cv2.putText(canvas, text, origin, font, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
