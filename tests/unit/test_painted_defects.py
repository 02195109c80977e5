"""Made-up defects for the unsupervised teach methods: visible, labelled where painted, of every kind."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineinspect.teach import painted


def _part(seed: int, h: int = 256, w: int = 256) -> np.ndarray:
    """A textured gray part: grinding streaks on a mid-gray surface, (H, W) float 0–255."""
    rng = np.random.default_rng(seed)
    streaks = cv2.resize(rng.normal(0, 12, (1, w)).astype(np.float32), (w, h))
    return np.clip(110 + streaks + rng.normal(0, 3, (h, w)), 0, 255).astype(np.float32)


@pytest.mark.parametrize("shape", painted.SHAPES)
def test_every_shape_is_painted_visibly_and_labelled_where_it_changed_the_part(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(painted, "SHAPES", (shape,))
    monkeypatch.setattr(painted, "SHAPE_WEIGHTS", (1.0,))
    rng = np.random.default_rng(1)
    labelled = 0
    for i in range(20):
        image, other = _part(i), _part(100 + i)
        out, mask = painted.paint_defect(rng, image.copy(), other)
        assert out.shape == image.shape and mask.shape == image.shape and set(np.unique(mask)) <= {0.0, 1.0}
        # The label is exactly what changed visibly; nothing outside it changed more than that.
        assert (mask.astype(bool) == (np.abs(out - image) > painted.VISIBLE_LEVELS)).all()
        assert np.abs(out - image)[mask == 0].max(initial=0) <= painted.VISIBLE_LEVELS
        labelled += bool(mask.any())
    assert labelled >= 14  # a faint paint job may leave no visible pixel; most leave a defect


def test_shapes_scale_with_the_image_so_a_small_input_keeps_small_defects() -> None:
    areas: dict[int, list[float]] = {256: [], 768: []}
    for side in areas:
        for i in range(60):
            rng = np.random.default_rng(i)  # the same shapes at both sizes
            _, mask = painted.paint_defect(rng, _part(i, side, side), _part(i + 1, side, side))
            if mask.any():
                areas[side].append(float(mask.mean()))
    # The share of the image a defect covers does not depend on the image's size (within noise).
    assert 0.6 < np.median(areas[256]) / np.median(areas[768]) < 1.6


def test_the_grain_of_a_ground_surface_is_found_and_a_surface_without_one_has_none() -> None:
    streaked = np.stack([_part(i) for i in range(4)])  # streaks run down the columns (along y)
    grain = painted.texture_grain(streaked)
    assert grain is not None and abs(np.degrees(grain) % 180 - 90) < 5
    turned = np.stack([np.ascontiguousarray(p.T) for p in streaked])  # the same surface turned: along x
    grain = painted.texture_grain(turned)
    assert grain is not None and min(np.degrees(grain) % 180, 180 - np.degrees(grain) % 180) < 5
    rng = np.random.default_rng(2)
    speckled = np.stack(
        [cv2.GaussianBlur(rng.normal(110, 20, (256, 256)).astype(np.float32), (0, 0), 2) for _ in range(4)]
    )
    assert painted.texture_grain(speckled) is None
    assert painted.texture_grain(np.full((2, 64, 64), 100, np.float32)) is None  # no texture at all


@pytest.mark.parametrize("shape", painted.GRAIN_SHAPES)
def test_defects_that_follow_the_grain_run_along_it_and_are_labelled(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(painted, "GRAIN_SHARE", 1.0)
    monkeypatch.setattr(painted, "GRAIN_SHAPES", (shape,))
    monkeypatch.setattr(painted, "GRAIN_SHAPE_WEIGHTS", (1.0,))
    rng = np.random.default_rng(3)
    longer_along, labelled = 0, 0
    for i in range(20):
        image = _part(i)
        out, mask = painted.paint_defect(rng, image.copy(), _part(50 + i), grain=np.pi / 2)
        changed = np.abs(out - image) > painted.VISIBLE_LEVELS
        assert not (changed & (mask == 0)).any()  # whatever changed visibly is labelled
        if mask.any():
            labelled += 1
            ys, xs = np.nonzero(mask)
            longer_along += int(np.ptp(ys) >= np.ptp(xs))  # down the columns, as the streaks run
    assert labelled >= 14 and longer_along >= labelled - 2


def test_on_a_surface_with_a_grain_the_large_area_is_a_band_across_it_with_a_straight_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(painted, "GRAIN_SHARE", 0.0)
    monkeypatch.setattr(painted, "SHAPES", ("area",))
    monkeypatch.setattr(painted, "SHAPE_WEIGHTS", (1.0,))
    rng = np.random.default_rng(4)
    bands = 0
    for i in range(20):
        image = _part(i)  # the marks run down the columns
        out, mask = painted.paint_defect(rng, image.copy(), _part(50 + i), grain=np.pi / 2)
        changed = np.abs(out - image) > painted.VISIBLE_LEVELS
        assert not (changed & (mask == 0)).any()  # whatever changed visibly is labelled
        if not mask.any():
            continue
        bands += 1
        assert _is_band_across_columns(mask)
        # its marks are moved across the grain: inside it, the columns' profile is not the part's any more
        inside = np.flatnonzero(mask.all(axis=1))[3:-3]
        if len(inside):
            profile, before = out[inside].mean(axis=0), image[inside].mean(axis=0)
            assert np.corrcoef(profile, before)[0, 1] < 0.5
    assert bands >= 14
    # a surface without a grain keeps its large areas as before: blobs, not bands
    rng = np.random.default_rng(4)
    masks = [painted.paint_defect(rng, _part(i), _part(50 + i), grain=None)[1] for i in range(20)]
    blobs = [m for m in masks if m.any()]
    assert len(blobs) >= 10 and sum(_is_band_across_columns(m) for m in blobs) <= 2


def _is_band_across_columns(mask: np.ndarray) -> bool:
    """Whether a mask spans the part across vertical marks: every column holds it, in one run of rows, starting
    and ending within a few rows of the same place in every column (a straight edge at right angles to them)."""
    rows = [np.flatnonzero(mask[:, x]) for x in range(mask.shape[1])]
    if not all(len(r) and np.ptp(r) + 1 == len(r) for r in rows):
        return False
    tops, bottoms = np.array([r[0] for r in rows]), np.array([r[-1] for r in rows])
    return bool(np.ptp(tops) <= 60 and np.ptp(bottoms) <= 60)


EDGE_PX = 4


def _edge_extent(mask: np.ndarray) -> tuple[int, int] | None:
    """(length along the image edge the region reaches, depth into the image) of a chip's label; None where it
    comes no nearer than EDGE_PX to any edge (the fill may leave the outermost pixels unchanged)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    depths = {"top": ys.max() + 1, "bottom": h - ys.min(), "left": xs.max() + 1, "right": w - xs.min()}
    near = {"top": ys.min() < EDGE_PX, "bottom": ys.max() >= h - EDGE_PX,
            "left": xs.min() < EDGE_PX, "right": xs.max() >= w - EDGE_PX}  # fmt: skip
    touching = [side for side, hit in near.items() if hit]
    if not touching:
        return None
    side = min(touching, key=lambda s: depths[s])
    along = (xs.max() - xs.min() + 1) if side in ("top", "bottom") else (ys.max() - ys.min() + 1)
    return int(along), int(depths[side])


def test_chips_are_cut_into_the_edge_and_half_are_slivers_along_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiles' breaks: pieces missing at the edge, often a thin sliver along it (the bevel broken off)."""
    monkeypatch.setattr(painted, "SHAPES", ("chip",))
    monkeypatch.setattr(painted, "SHAPE_WEIGHTS", (1.0,))
    rng = np.random.default_rng(5)
    extents = []
    for i in range(60):
        _, mask = painted.paint_defect(rng, _part(i), _part(200 + i))
        if mask.sum() >= 10:  # a paint job faint but for a speck says nothing of the shape
            extents.append(_edge_extent(mask))
    assert len(extents) >= 45 and all(e is not None for e in extents)  # every chip is at the edge
    slivers = sum(along >= 3 * depth for along, depth in (e for e in extents if e is not None))
    # Half are drawn as slivers (a few of the others are long and shallow by chance, and the noise cut makes a
    # few slivers shorter).
    assert 0.3 * len(extents) <= slivers <= 0.75 * len(extents)
