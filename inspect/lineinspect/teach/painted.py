"""Made-up defects painted onto images of good parts: what unsupervised teach methods learn from.

A plant has many good parts and few labelled bad ones, so the networks learn
what "not like the good parts" looks like from defects painted at random onto
good images (after DRAEM's idea, Zavrtanik et al., ICCV 2021; no code of theirs
is used). The shapes cover the surface defects of most machined, pressed or
sintered parts, at every scale a line camera sees them:

- a crack: a thin wandering line, 1–3 px wide;
- a pit: one or a few small round spots, a few pixels across (blowholes, pores);
- a chip: a blob cut into the part's edge (breaks, missing material), or
  for half of them a sliver along the edge, long and a few pixels deep (a
  bevel broken off: most of the tiles' breaks look so);
- a blob: a patch of any shape, up to an eighth of the image (stains, dents, frays);
- an area: a large smooth region, up to half the image, whose brightness or
  texture differs a little (uneven grinding, coating, polish).

Each is filled with a darker or brighter copy of the part, a patch of another
good part, noise, or the part's own texture smoothed away or sharpened.

Surfaces with a grain (grinding, brushing or rolling marks that all run one
way: `texture_grain` finds it in the good images) also get, for half of the
defects, shapes that follow the grain, as their real defects do (measured on
the magnetic tiles, whose grinding marks run along the columns):

- a streak: a thin crack along the grain, wandering little;
- a fray: a long narrow oval along the grain, its texture ground away or darker;
- a band (in place of the large area, on such a surface): the part's end, or a
  strip across it, ground in another pass: bounded by a sharp, nearly straight
  edge at right angles to the grain, over which the marks do not continue, a
  little brighter or darker, the marks' contrast changed (the tiles' Uneven
  defects look so).

Chosen on the tiles' validation split (learn exp0-1, measure exp2, featnet, 600
steps, seed 0): image AUROC 0.862 without streaks and frays, 0.895 with them
(Crack 0.58 → 0.97, Fray 0.95 → 0.99, Uneven 0.86 → 0.78; pixel AUROC 0.785 →
0.744). A band from one edge to a wavy line with another texture in it, drawn
besides, made it 0.854 (Uneven 0.67) and was dropped. The band as it is now,
taking the large area's place, over seeds 0-2 with one training thread: image
AUROC 0.836 → 0.864 (every class up: Blowhole 0.89 → 0.92, Break 0.83 → 0.87,
Crack 0.72 → 0.74, Fray 0.95 → 0.97, Uneven 0.81 → 0.84), pixel AUROC 0.731 →
0.772; drawn as a third grain shape instead (a quarter of them), 0.855, with
Crack and Fray down. Half the chips drawn as slivers, seeds 0-2, measured on
exp2 and on exp1 (learnt from exp0+2; `bench/magnetic_tile.py --rotate`):
image AUROC 0.858 → 0.880, up with every seed (exp2 0.864 → 0.876, Break 0.868
→ 0.903; exp1 0.851 → 0.883); on the test batches (exp3-4, 1500 steps) the
same change gave 0.921 → 0.908, reported, not chosen on. More chips besides
(weight 0.25): exp2 0.854; more large areas, so more bands (weight 0.15 →
0.25, cracks and blobs 0.2): exp2 0.839; both dropped.
"""

from __future__ import annotations

import cv2
import numpy as np

# A painted change smaller than this (gray levels) is not a defect anybody could see.
VISIBLE_LEVELS = 6
# Shape kinds and how often each is painted.
SHAPES = ("crack", "pit", "chip", "blob", "area")
SHAPE_WEIGHTS = (0.25, 0.2, 0.15, 0.25, 0.15)
# Chips drawn as a sliver along the edge (module docstring).
SLIVER_SHARE = 0.5
# On a surface with a grain: the share of defects that follow it, and their shapes.
GRAIN_SHARE = 0.5
GRAIN_SHAPES = ("streak", "fray")
GRAIN_SHAPE_WEIGHTS = (0.6, 0.4)
# A surface has a grain when this share of its gradient energy lies across one direction (the coherence of the
# summed structure tensor: 0 for texture with no direction, 1 for parallel lines). Measured on 256 px images:
# magnetic tiles 0.47-0.8 (median 0.69), the generated sample parts 0.21-0.30.
GRAIN_COHERENCE = 0.45
# A fray is labelled as a whole where at least this share of its pixels changed visibly.
REGION_VISIBLE_SHARE = 0.1


def texture_grain(images: np.ndarray) -> float | None:
    """The direction the grain of good images (N, H, W) runs in, in radians from the image's x axis (y down),
    or None where no direction dominates (`GRAIN_COHERENCE`)."""
    jxx = jyy = jxy = 0.0
    for image in images:
        gray = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
        gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        jxx, jyy, jxy = jxx + float((gx * gx).mean()), jyy + float((gy * gy).mean()), jxy + float((gx * gy).mean())
    energy = jxx + jyy
    if energy <= 0:
        return None
    coherence = float(np.hypot(jxx - jyy, 2 * jxy)) / energy
    if coherence < GRAIN_COHERENCE:
        return None
    across = 0.5 * float(np.arctan2(2 * jxy, jxx - jyy))  # the direction the gradients point in
    return across + np.pi / 2  # the marks run at right angles to it


def paint_defect(
    rng: np.random.Generator, image: np.ndarray, other: np.ndarray, grain: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one made-up defect on a (H, W) float gray image (0–255); return (image, mask 0/1 float32).

    other: another good image of the same size, the source of "foreign material" fills. grain: the direction
    of the surface's grain (`texture_grain`), None where it has none.
    """
    h, w = image.shape
    scale = min(h, w) / 256  # shapes are drawn for a 256 px image and scaled to this one
    if grain is not None and rng.random() < GRAIN_SHARE:
        return _paint_along_grain(rng, image, grain, scale)
    shape = SHAPES[int(rng.choice(len(SHAPES), p=SHAPE_WEIGHTS))]
    if shape == "area" and grain is not None:
        return _paint_band(rng, image, grain, scale)
    mask = _shape_mask(rng, shape, h, w, scale)
    if shape == "area":
        fill = _subtle_fill(rng, image)
        beta = 1.0
    else:
        fill = _fill(rng, image, other)
        beta = rng.uniform(0.5, 1.0)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8 if shape != "area" else 3.0 * scale)
    painted = image * (1 - beta * soft) + fill * beta * soft
    # The label is every pixel the paint changed visibly, soft edges included, and nothing else.
    changed = np.abs(painted - image) > VISIBLE_LEVELS
    return painted, changed.astype(np.float32)


def _shape_mask(rng: np.random.Generator, shape: str, h: int, w: int, scale: float) -> np.ndarray:
    """(H, W) uint8 0/1."""
    mask = np.zeros((h, w), np.uint8)
    if shape == "crack":
        points = [rng.uniform(0, 1, 2) * (w, h)]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(3, 12))):
            heading += rng.normal(0, 0.5)
            points.append(points[-1] + rng.uniform(5, 20) * scale * np.array([np.cos(heading), np.sin(heading)]))
        width = int(rng.integers(1, 4))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, max(1, round(width * scale)))
    elif shape == "pit":
        centre = rng.uniform(0, 1, 2) * (w, h)
        for _ in range(int(rng.integers(1, 4))):
            at = centre + rng.normal(0, 8 * scale, 2)
            axes = np.maximum(1, rng.uniform(1, 5, 2) * scale).astype(int)
            _ellipse(mask, (float(at[0]), float(at[1])), axes, rng.uniform(0, 180))
    elif shape == "chip":
        side = int(rng.integers(4))
        t = rng.uniform(0, 1)
        on_edge = [(t * w, 0.0), (t * w, h - 1.0), (0.0, t * h), (w - 1.0, t * h)][side]
        if rng.random() < SLIVER_SHARE:  # a sliver broken off along the edge: long along it, a few px deep
            along = 0.0 if side < 2 else 90.0
            axes = np.maximum(2, np.array([rng.uniform(10, 80), rng.uniform(2, 7)]) * scale).astype(int)
            _ellipse(mask, on_edge, axes, along + rng.normal(0, 3))
        else:
            axes = np.maximum(2, rng.uniform(3, 24, 2) * scale).astype(int)
            _ellipse(mask, on_edge, axes, rng.uniform(0, 180))
        mask &= _noise_region(rng, h, w, cells=int(rng.integers(6, 16)), share=0.6)
    else:
        share = rng.uniform(0.005, 0.12) if shape == "blob" else rng.uniform(0.12, 0.5)
        cells = int(rng.integers(2, 8)) if shape == "blob" else int(rng.integers(2, 4))
        mask = _noise_region(rng, h, w, cells, share)
    return mask


def _paint_along_grain(
    rng: np.random.Generator, image: np.ndarray, grain: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """One defect that follows the grain (module docstring): (image, mask 0/1 float32)."""
    h, w = image.shape
    shape = GRAIN_SHAPES[int(rng.choice(len(GRAIN_SHAPES), p=GRAIN_SHAPE_WEIGHTS))]
    mask = np.zeros((h, w), np.uint8)
    fill: np.ndarray
    if shape == "streak":
        points = [rng.uniform(0, 1, 2) * (w, h)]
        for _ in range(int(rng.integers(3, 12))):
            heading = grain + rng.normal(0, 0.12)  # wanders a little off the grain at each step
            points.append(points[-1] + rng.uniform(5, 20) * scale * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, max(1, round(int(rng.integers(1, 3)) * scale)))
        fill = image * rng.uniform(0.2, 0.7) if rng.random() < 0.7 else image * rng.uniform(1.3, 1.8)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)
        beta = rng.uniform(0.5, 1.0)
    else:  # fray
        centre = rng.uniform(0, 1, 2) * (w, h)
        axes = (max(3, int(rng.uniform(8, 40) * scale)), max(1, int(rng.uniform(1.5, 5) * scale)))
        _ellipse(mask, (float(centre[0]), float(centre[1])), np.array(axes), float(np.degrees(grain)))
        smooth = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.5, 4.0))
        fill = smooth * (rng.uniform(0.75, 1.0) if rng.random() < 0.5 else 1.0)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5 * scale)
        beta = 1.0
    painted = image * (1 - beta * soft) + fill * beta * soft
    if shape == "streak":
        return painted, (np.abs(painted - image) > VISIBLE_LEVELS).astype(np.float32)
    return painted, _region_label(painted, image, soft)


def _paint_band(
    rng: np.random.Generator, image: np.ndarray, grain: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A band ground in another pass (module docstring): (image, mask 0/1 float32)."""
    h, w = image.shape
    soft = cv2.GaussianBlur(_band_mask(rng, h, w, grain, scale).astype(np.float32), (0, 0), 0.8 * scale)
    painted = image * (1 - soft) + _band_fill(rng, image, grain, scale) * soft
    return painted, _region_label(painted, image, soft)


def _region_label(painted: np.ndarray, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The label of a region whose texture was changed (mask 0/1 float32).

    Such a change shows in some of the region's pixels, not all: the label is the whole region (soft > 0.5)
    where enough of it changed visibly (`REGION_VISIBLE_SHARE`), else only what changed visibly (a change
    nobody could see stays unlabelled).
    """
    changed = np.abs(painted - image) > VISIBLE_LEVELS
    region = soft > 0.5
    if region.any() and changed[region].mean() >= REGION_VISIBLE_SHARE:
        changed |= region
    return changed.astype(np.float32)


def _band_mask(rng: np.random.Generator, h: int, w: int, grain: float, scale: float) -> np.ndarray:
    """(H, W) uint8 0/1: a band across the grain, from one end of the part to a sharp edge at right angles to
    the grain, tilted a little and barely wavy (7 in 10), or a strip between two such edges."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs -= w / 2
    ys -= h / 2
    along = xs * np.cos(grain) + ys * np.sin(grain)  # the position along the grain, from the centre
    across = -xs * np.sin(grain) + ys * np.cos(grain)
    length = float(along.max() - along.min())
    side = 1.0 if rng.random() < 0.5 else -1.0  # which end of the part a band from an end is at
    from_end = rng.random() < 0.7
    if from_end:  # from the edge to that end: measured towards it
        start, end = length / 2 - rng.uniform(0.1, 0.5) * length, np.inf
    else:
        start = rng.uniform(-0.4, 0.3) * length
        end = start + rng.uniform(0.1, 0.35) * length
    # The edge: a smooth wobble of a few px and a slight tilt, as a function of the position across the grain.
    wobble = cv2.resize(rng.normal(0, 1, (1, 6)).astype(np.float32), (w, 1), interpolation=cv2.INTER_CUBIC)[0]
    tilt = np.tan(rng.normal(0, 0.08))
    wobble *= rng.uniform(0.5, 3.0) * scale
    edge = across * tilt + np.interp(across, np.linspace(float(across.min()), float(across.max()), w), wobble)
    offset = (along - edge) * (side if from_end else 1.0)
    return ((offset > start) & (offset < end)).astype(np.uint8)


def _band_fill(rng: np.random.Generator, image: np.ndarray, grain: float, scale: float) -> np.ndarray:
    """A band's fill: the part's own surface moved across the grain (its marks do not continue over the edge),
    a little brighter or darker, the marks' contrast changed."""
    h, w = image.shape
    shift = rng.uniform(8, 40) * scale * (1 if rng.random() < 0.5 else -1)
    move = np.array([[1, 0, -np.sin(grain) * shift], [0, 1, np.cos(grain) * shift]], np.float32)
    moved = cv2.warpAffine(image, move, (w, h), borderMode=cv2.BORDER_REFLECT)
    local = cv2.GaussianBlur(moved, (0, 0), 8 * scale)
    gain = rng.uniform(0.78, 0.92) if rng.random() < 0.4 else rng.uniform(1.08, 1.3)
    return local * gain + (moved - local) * rng.uniform(0.6, 1.8)


def _ellipse(mask: np.ndarray, centre: tuple[float, float], axes: np.ndarray, angle_deg: float) -> None:
    """Fill an ellipse into mask (uint8, in place); axes (2,) int half-lengths in px."""
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle_deg, 0, 360, 1, -1)


def _noise_region(rng: np.random.Generator, h: int, w: int, cells: int, share: float) -> np.ndarray:
    """(H, W) uint8 0/1: the given share of the image where smooth noise is highest."""
    noise = cv2.resize(rng.random((cells, cells)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return (noise >= np.quantile(noise, 1 - share)).astype(np.uint8)


def _fill(rng: np.random.Generator, image: np.ndarray, other: np.ndarray) -> np.ndarray:
    h, w = image.shape
    kind = rng.integers(4)
    if kind == 0:
        return image * rng.uniform(0.2, 0.7)  # dark: holes, cracks, breaks
    if kind == 1:
        return image * rng.uniform(1.3, 2.0)  # bright: glare, chips
    if kind == 2:
        return np.roll(other, (int(rng.integers(h)), int(rng.integers(w))), (0, 1)) * rng.uniform(0.5, 1.5)
    return image.mean() + rng.normal(0, rng.uniform(10, 60), image.shape)


def _subtle_fill(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A large area's fill: the part a little brighter or darker, or its texture smoothed or sharpened."""
    kind = rng.integers(3)
    if kind == 0:
        return image * (rng.uniform(0.7, 0.88) if rng.random() < 0.5 else rng.uniform(1.12, 1.3))
    smooth = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.5, 4.0))
    if kind == 1:
        return smooth * rng.uniform(0.9, 1.1)  # texture ground away
    return image + rng.uniform(1.0, 2.5) * (image - smooth)  # texture exaggerated
