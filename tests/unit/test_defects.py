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


@pytest.mark.parametrize("seed", range(10))
def test_a_regions_length_and_width_are_its_smallest_rotated_rectangles(seed: int) -> None:
    # given: a large rotated bar and a few smaller blobs (defects_from_mask measures from their boundary)
    rng = np.random.default_rng(seed)
    mask = np.zeros((300, 400), np.uint8)
    centre = (float(rng.uniform(120, 280)), float(rng.uniform(100, 200)))
    size = (float(rng.uniform(60, 200)), float(rng.uniform(4, 40)))
    bar = cv2.boxPoints((centre, size, float(rng.uniform(0, 180))))
    cv2.fillPoly(mask, [np.round(bar).astype(np.int32)], 1)
    for _ in range(3):
        cv2.circle(mask, (int(rng.integers(400)), int(rng.integers(300))), int(rng.integers(2, 12)), 1, -1)
    # when
    defects = defects_from_mask(mask.astype(bool), mask.astype(np.float32), "scratch")
    # then: each region's rectangle has the area of the smallest one around all of its pixels (the two may
    # differ in orientation only where rectangles of equal area tie), and the bar measures as it was drawn
    for d in defects:
        assert d.mask is not None
        pixels = np.argwhere(d.mask)[:, ::-1].astype(np.float32)
        (_, _), (w, h), _ = cv2.minAreaRect(pixels) if len(pixels) >= 2 else ((0, 0), (0.0, 0.0), 0)
        assert (d.length_px - 1) * (d.width_px - 1) == pytest.approx(w * h, rel=1e-4, abs=1e-3)
    longest = max(defects, key=lambda d: d.length_px)
    assert longest.length_px == pytest.approx(max(size) + 1, abs=2.5)
    assert longest.width_px == pytest.approx(min(size) + 1, abs=2.5)
