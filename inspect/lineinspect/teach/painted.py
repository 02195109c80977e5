"""Made-up defects painted onto images of good parts: what unsupervised teach methods learn from.

A plant has many good parts and few labelled bad ones, so the networks learn
what "not like the good parts" looks like from defects painted at random onto
good images (after DRAEM's idea, Zavrtanik et al., ICCV 2021; no code of theirs
is used): a blob or a crack-like line, filled with a darker or brighter copy of
the part (holes, chips, glare), a patch of another good part, or noise.
"""

from __future__ import annotations

import cv2
import numpy as np

# A painted change smaller than this (gray levels) is not a defect anybody could see.
VISIBLE_LEVELS = 6


def paint_defect(rng: np.random.Generator, image: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint one made-up defect on a (H, W) float gray image; return (image, mask 0/1 float32).

    other: another good image of the same size, the source of "foreign material" fills.
    """
    h, w = image.shape
    if rng.random() < 0.35:
        mask = np.zeros((h, w), np.uint8)
        points = [rng.uniform(0, 1, 2) * (w, h)]
        heading = rng.uniform(0, 2 * np.pi)
        step = min(h, w) / 128
        for _ in range(int(rng.integers(3, 9))):
            heading += rng.normal(0, 0.5)
            points.append(points[-1] + rng.uniform(5, 20) * step * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, int(rng.integers(1, 4)))
    else:
        cells = int(rng.integers(2, 8))
        noise = cv2.resize(rng.random((cells, cells)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        level = np.quantile(noise, 1 - rng.uniform(0.005, 0.12))
        mask = (noise >= level).astype(np.uint8)
    mask_f = mask.astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        fill = image * rng.uniform(0.2, 0.7)  # dark: holes, cracks, breaks
    elif kind == 1:
        fill = image * rng.uniform(1.3, 2.0)  # bright: glare, chips
    elif kind == 2:
        fill = np.roll(other, (int(rng.integers(h)), int(rng.integers(w))), (0, 1)) * rng.uniform(0.5, 1.5)
    else:
        fill = image.mean() + rng.normal(0, rng.uniform(10, 60), image.shape)
    beta = rng.uniform(0.5, 1.0)
    soft = cv2.GaussianBlur(mask_f, (0, 0), 0.8)
    painted = image * (1 - beta * soft) + fill * beta * soft
    changed = (np.abs(painted - image) > VISIBLE_LEVELS) & (mask > 0)
    return painted, changed.astype(np.float32)
