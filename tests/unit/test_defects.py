"""Defects from a mask: each connected region's box, area and score, as OpenCV's component statistics give them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineinspect.core.defects import defects_from_mask


@pytest.mark.parametrize("seed", range(20))
def test_defect_boxes_and_areas_are_those_of_opencvs_component_statistics(seed: int) -> None:
    # given: a random map with regions of every shape, touching the borders and each other diagonally
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 90)), int(rng.integers(1, 90))
    score_map = rng.random((height, width)).astype(np.float32)
    mask = score_map >= rng.uniform(0.3, 0.95)
    # when
    defects = defects_from_mask(mask, score_map, "scratch")
    # then: one defect per 8-connected region, in OpenCV's label order, with its box, area and peak score
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    expected = [
        ((float(x), float(y), float(x + w), float(y + h)), float(area), float(score_map[labels == i].max()))
        for i, (x, y, w, h, area) in enumerate(stats[1:count].tolist(), start=1)
    ]
    got = [((d.box.x0, d.box.y0, d.box.x1, d.box.y1), d.area_px, d.score) for d in defects]
    assert got == expected


def test_an_empty_mask_has_no_defects() -> None:
    assert defects_from_mask(np.zeros((48, 64), bool), np.zeros((48, 64), np.float32), "scratch") == []
