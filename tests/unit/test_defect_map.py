"""DefectMap: regions found on the model-resolution map are those of the map enlarged to the frame.

The old path (and `DefectMap.full()`) enlarges the whole map with `Geometry.map_to_image` and labels it with
`defects_from_mask`; the new one enlarges only windows around the map pixels that reach the level. Boxes,
areas, masks (so every size in px and mm derived from them) and order must be the same; scores the same to
float rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lineinspect.core.adapters.anomaly import AnomalyAdapter, normalise
from lineinspect.core.defect_map import DefectMap
from lineinspect.core.defects import Defect, defects_from_mask
from lineinspect.core.modelcard import AnomalyCalibration, ModelCard
from lineinspect.core.preprocess import Geometry
from lineinspect.core.recipe import ClassRule, Recipe, decide

LEVEL = 0.5


def plant_map(height: int, width: int) -> np.ndarray:
    """(height, width) float32 0–1: a quiet background with regions of every kind over LEVEL."""
    rng = np.random.default_rng(3)
    values = 0.1 + 0.05 * rng.random((height, width))
    ys, xs = np.mgrid[:height, :width]
    values += 0.85 * np.exp(-((ys - height * 0.5) ** 2 + (xs - width * 0.5) ** 2) / (2 * (height / 20) ** 2))
    dy, dx = max(2, height // 12), max(2, width // 12)
    values[height // 5 : height // 5 + dy, :dx] = 0.8  # touches the left border
    values[-dy:, -dx:] = 0.7  # the bottom-right corner
    values[0, width // 3 : width // 3 + dx] = 0.6  # one row along the top border
    values[int(height * 0.8), width // 6] = 0.9  # a single map pixel
    values[height // 8, int(width * 0.8)] = values[height // 8 + 1, int(width * 0.8) + 1] = 0.75  # diagonal: one region
    values[int(height * 0.65), int(width * 0.7)] = LEVEL + 0.004  # one pixel just over the level
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def full_size_regions(values: np.ndarray, geometry: Geometry, level: float) -> list[Defect]:
    """The old path: the whole map enlarged to the frame, then labelled."""
    full = geometry.map_to_image(values)
    return defects_from_mask(full >= level, full, "anomaly")


def assert_same_defects(got: list[Defect], expected: list[Defect]) -> None:
    assert [(d.box, d.area_px, d.length_px, d.width_px) for d in got] == [
        (d.box, d.area_px, d.length_px, d.width_px) for d in expected
    ]
    for g, e in zip(got, expected, strict=True):
        assert g.mask is not None and e.mask is not None and np.array_equal(g.mask, e.mask)
        assert g.score == pytest.approx(e.score, abs=1e-6)


GEOMETRIES = {
    # map (h, w), geometry: the default model's map on a 1280x1024 frame, the demo camera's, odd sizes, no
    # scaling, a letterboxed map (padding above and below), and a frame smaller than the map (not enlarged).
    "default map on 1280x1024": ((240, 320), Geometry(1280, 1024, 320 / 1280, 240 / 1024, 0.0, 0.0)),
    "default map on 640x480": ((240, 320), Geometry(640, 480, 0.5, 0.5, 0.0, 0.0)),
    "odd sizes": ((30, 41), Geometry(777, 1000, 41 / 777, 30 / 1000, 0.0, 0.0)),
    "same size": ((240, 320), Geometry(320, 240, 1.0, 1.0, 0.0, 0.0)),
    "letterbox": ((320, 320), Geometry(1280, 1024, 0.25, 0.25, 0.0, 32.0)),
    "frame smaller than the map": ((240, 320), Geometry(200, 150, 320 / 200, 240 / 150, 0.0, 0.0)),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_regions_are_those_of_the_full_size_map_when_the_map_has_regions_of_every_kind(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: regions big and small, on the borders, a single map pixel, diagonal neighbours
    shape, geometry = GEOMETRIES[name]
    values = plant_map(*shape)
    expected = full_size_regions(values, geometry, LEVEL)
    assert len(expected) >= 4
    if name != "frame smaller than the map":  # an enlarged map: it is never made at full size

        def enlarged_whole(*args: object, **kwargs: object) -> np.ndarray:
            raise AssertionError("the whole map was enlarged")

        monkeypatch.setattr(Geometry, "map_to_image", enlarged_whole)
    # when
    got = DefectMap(values, geometry).regions(LEVEL, "anomaly")
    # then
    assert_same_defects(got, expected)
    touching = [
        d
        for d in got
        if min(d.box.x0, d.box.y0) == 0 or d.box.x1 == geometry.image_width or d.box.y1 == geometry.image_height
    ]
    assert touching


@pytest.mark.parametrize("seed", range(12))
def test_regions_are_those_of_the_full_size_map_when_the_map_is_random(seed: int) -> None:
    # given: many blobs of random sizes, some merging only once enlarged, many on the borders
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 120)), int(rng.integers(8, 120))
    frame_w, frame_h = int(rng.integers(w, 1300)), int(rng.integers(h, 1100))
    values = rng.random((h, w)).astype(np.float32)
    values = np.clip((values - 0.5) * rng.uniform(1.0, 3.0) + 0.5, 0.0, 1.0).astype(np.float32)
    geometry = Geometry(frame_w, frame_h, w / frame_w, h / frame_h, 0.0, 0.0)
    level = float(rng.uniform(0.3, 0.9))
    # when / then
    assert_same_defects(
        DefectMap(values, geometry).regions(level, "anomaly"), full_size_regions(values, geometry, level)
    )


def test_no_region_and_nothing_enlarged_when_no_map_pixel_reaches_the_level() -> None:
    values = np.full((240, 320), 0.3, np.float32)
    geometry = Geometry(1280, 1024, 0.25, 240 / 1024, 0.0, 0.0)
    assert DefectMap(values, geometry).regions(LEVEL, "anomaly") == []
    assert DefectMap(values, geometry).full().shape == (1024, 1280)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_the_peak_is_the_full_size_maps_maximum(name: str) -> None:
    shape, geometry = GEOMETRIES[name]
    values = plant_map(*shape)
    assert DefectMap(values, geometry).peak() == pytest.approx(float(geometry.map_to_image(values).max()), abs=1e-6)


# ---------------------------------------------------------------- the anomaly adapter, old path against new


def card(image_threshold: float = 0.5) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "anomaly",
            "adapter": "anomaly",
            "input": {"width": 320, "height": 240},
            "anomaly": {
                "image_threshold": image_threshold,
                "pixel_threshold": 0.5,
                "score_min": 0.0,
                "score_max": 1.0,
            },
            "sha256": "0" * 64,
        }
    )


def calibration() -> AnomalyCalibration:
    cal = card().anomaly
    assert cal is not None
    return cal


def old_decode(raw: np.ndarray, geometry: Geometry, score: float) -> list[Defect]:
    """The adapter's regions as it found them before: the normalised map enlarged to the frame, labelled."""
    full = geometry.map_to_image(normalise(raw, 0.5, calibration()))
    defects = defects_from_mask(full >= 0.5, full, "anomaly")
    if not defects and score >= 0.5:
        peak = float(full.max())
        hottest = max(defects_from_mask(full >= peak / 2, full, "anomaly"), key=lambda d: d.score)
        defects = [dataclasses.replace(hottest, score=score)]
    return defects


def test_the_anomaly_adapter_finds_the_defects_and_verdict_it_found_on_the_full_size_map() -> None:
    # given: the default model's map size on a 1280x1024 frame
    geometry = Geometry(1280, 1024, 0.25, 240 / 1024, 0.0, 0.0)
    raw = plant_map(240, 320)
    outputs = {"anomaly_map": raw[None, None], "pred_score": np.array([0.3], np.float32)}
    # when
    out = AnomalyAdapter(card(), list(outputs)).decode(outputs, geometry)
    # then: the same regions; a recipe whose area limit is the smallest region's still counts that region
    expected = old_decode(raw, geometry, 0.3)
    assert_same_defects(out.defects, expected)
    assert out.note is not None and "the map decides" in out.note
    smallest = min(d.area_px for d in expected)
    recipe = Recipe(id="r", model="anomaly", classes={"*": ClassRule(min_area_px=smallest)})
    old, new = decide(expected, 0.3, recipe, {}), decide(out.defects, 0.3, recipe, {})
    assert new.verdict == old.verdict and len(new.findings) == len(old.findings) == len(expected)
    assert out.defect_map is not None and out.defect_map.shape == (1024, 1280)


def test_the_anomaly_adapter_places_an_image_score_defect_where_it_did_when_no_pixel_reaches() -> None:
    # given: an image score over its threshold, the map under the pixel threshold everywhere
    geometry = Geometry(1280, 1024, 0.25, 240 / 1024, 0.0, 0.0)
    raw = plant_map(240, 320) * np.float32(0.45)
    outputs = {"anomaly_map": raw[None, None], "pred_score": np.array([0.8], np.float32)}
    # when
    out = AnomalyAdapter(card(), list(outputs)).decode(outputs, geometry)
    # then
    assert_same_defects(out.defects, old_decode(raw, geometry, 0.8))
    assert out.defects[0].score == pytest.approx(0.8)
    peak = float(geometry.map_to_image(normalise(raw, 0.5, calibration())).max())
    assert out.note is not None and f"(map peak {peak:.2f})" in out.note
