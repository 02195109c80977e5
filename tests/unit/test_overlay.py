"""overlay.py: defects and verdict drawn where they are; PNG/JPEG encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineinspect.core.clock import utc_now
from lineinspect.core.defects import Box, Defect, defects_from_mask
from lineinspect.core.overlay import COUNTING_COLOUR, TOLERATED_COLOUR, draw_overlay, encode_overlay
from lineinspect.core.result import Finding, Result, Verdict
from lineinspect.errors import ImageError


def result_with(*findings: Finding, verdict: Verdict = Verdict.FAIL) -> Result:
    now = utc_now()
    return Result(
        result_id="r",
        verdict=verdict,
        reason="",
        score=0.9,
        findings=findings,
        captured_at=now,
        decided_at=now,
        recipe_id="part",
        recipe_version="1",
        model_id="m",
        model_sha256="0",
    )


def test_overlay_tints_mask_and_draws_box_of_counting_defect_red() -> None:
    image = np.full((120, 160), 30, np.uint8)  # gray input: the overlay is BGR
    mask = np.zeros((120, 160), bool)
    mask[60:80, 100:130] = True
    [defect] = defects_from_mask(mask, mask.astype(np.float32), "scratch")
    canvas = draw_overlay(image, result_with(Finding(defect, True, "over limits")))
    assert canvas.shape == (120, 160, 3) and canvas.dtype == np.uint8
    assert tuple(canvas[60, 100]) == COUNTING_COLOUR  # box outline
    inside = canvas[70, 115].astype(int)
    assert inside[2] > inside[1] + 50  # tinted red, not the grey it was
    assert tuple(canvas[110, 20]) == (30, 30, 30)  # away from defect and banner: untouched
    assert image[70, 115] == 30  # the input is not drawn on


def test_overlay_draws_tolerated_defect_amber_and_survives_box_outside_image() -> None:
    inside = Defect.from_box("dent", 0.6, Box(10, 50, 40, 70))
    outside = Defect.from_box("dent", 0.6, Box(500, 500, 600, 600))
    canvas = draw_overlay(
        np.zeros((100, 100, 3), np.uint8),
        result_with(Finding(inside, False, "within"), Finding(outside, True, "x"), verdict=Verdict.PASS),
    )
    assert tuple(canvas[60, 10]) == TOLERATED_COLOUR  # left edge of the box


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg"])
def test_encode_overlay_round_trips(media_type: str) -> None:
    canvas = np.full((40, 50, 3), 90, np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_overlay(canvas, media_type), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (40, 50, 3)


def test_encode_overlay_refuses_unknown_media_type() -> None:
    with pytest.raises(ImageError, match="cannot encode image/gif; choose one of"):
        encode_overlay(np.zeros((4, 4, 3), np.uint8), "image/gif")
