"""DefectMap: a model's per-pixel defect score, kept at the model's resolution, read in image pixels.

An anomaly map comes at the model's input resolution (320x240 for the default model); the frame is larger
(1280x1024). Enlarging the map to the frame (bilinear, `Geometry.map_to_image`) and labelling the regions at or
above the threshold there costs ~1.7 ms a part, for what is nearly always "no pixel reaches it". A frame pixel
of the enlarged map is a blend of the 2x2 map pixels around it, so it reaches a level only next to a map pixel
that does. `regions` finds those on the small map and computes the enlarged map only in windows around them,
with the weights OpenCV's resize uses (the same values to float rounding, ~2e-7), and labels each window there:
the defects are those of the enlarged map (boxes, areas, masks and order the same; scores to ~2e-7), at a cost
that grows with the defects' size instead of the frame's; a window with a pixel on the level to rounding is left
to the full-size map. `full()` still gives the whole enlarged map to whoever needs it
(`lineinspect evaluate`'s pixel metrics, tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lineinspect.core.defects import Defect, component_stats, defects_from_mask
from lineinspect.core.preprocess import Geometry

# A map pixel this little under a level is taken to reach it: the blend's float rounding cannot lift a frame
# pixel above its 2x2 map pixels by more (scores are 0–1).
REACH_MARGIN = 1e-4
# Frame pixels this close to a level may fall on the other side of it in OpenCV's own resize (whose float
# rounding differs from numpy's by up to ~1.8e-7): a region with one is labelled on the full-size map instead.
TIE_MARGIN = 5e-7
_NEIGHBOURS = np.ones((3, 3), np.uint8)


@dataclass(frozen=True, slots=True)
class DefectMap:
    """A per-pixel defect score (0–1).

    values: (h, w) float32. geometry: how `values` (in model-input pixels) map to the original (H, W) image,
    bilinearly as `Geometry.map_to_image`; None: `values` are already (H, W) image pixels.
    """

    values: np.ndarray
    geometry: Geometry | None = None

    def full(self) -> np.ndarray:
        """(H, W) float32 in original-image pixels (made at each call)."""
        return self.values if self.geometry is None else self.geometry.map_to_image(self.values)

    def regions(self, level: float, class_name: str) -> list[Defect]:
        """`defects_from_mask(full() >= level, full(), class_name)`: the same defects, computed where they can be."""
        enlarged = _Enlarged.of(self)
        found = enlarged.regions(level, class_name) if enlarged is not None else None
        if found is None:
            full = self.full()
            return defects_from_mask(full >= level, full, class_name)
        return found

    def peak(self) -> float:
        """`full().max()` (to float rounding), computed where it can be."""
        enlarged = _Enlarged.of(self)
        if enlarged is None:
            return float(self.full().max())
        return enlarged.peak()


@dataclass(frozen=True, slots=True)
class _Enlarged:
    """A map crop enlarged bilinearly to (height, width), computed window by window.

    For frame column x: value = crop[:, x0s[x]] * (1 - fx[x]) + crop[:, x1s[x]] * fx[x]; likewise rows.
    """

    crop: np.ndarray  # (h, w) float32: the map without its padding
    x0s: np.ndarray
    x1s: np.ndarray
    fx: np.ndarray
    y0s: np.ndarray
    y1s: np.ndarray
    fy: np.ndarray

    @staticmethod
    def of(defect_map: DefectMap) -> _Enlarged | None:
        """None where nothing is saved: no geometry, or a map that is not enlarged (each side at least kept)."""
        geometry = defect_map.geometry
        if geometry is None:
            return None
        x0, y0, x1, y1 = geometry.input_window(*defect_map.values.shape[:2])
        crop = defect_map.values[y0:y1, x0:x1]
        h, w = crop.shape[:2]
        if crop.ndim != 2 or not (0 < w <= geometry.image_width and 0 < h <= geometry.image_height):
            return None
        return _Enlarged(crop, *_blend_axis(w, geometry.image_width), *_blend_axis(h, geometry.image_height))

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The enlarged map's [y0:y1, x0:x1], (y1 - y0, x1 - x0) float32."""
        rows0, rows1 = self.y0s[y0:y1], self.y1s[y0:y1]
        top, bottom = int(rows0[0]), int(rows1[-1]) + 1
        block = self.crop[top:bottom]
        cols0, cols1, fx = self.x0s[x0:x1], self.x1s[x0:x1], self.fx[x0:x1]
        across = block[:, cols0] * (np.float32(1.0) - fx) + block[:, cols1] * fx
        fy = self.fy[y0:y1, None]
        return across[rows0 - top] * (np.float32(1.0) - fy) + across[rows1 - top] * fy

    def span(self, c0: int, r0: int, c1: int, r1: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the frame pixels that blend any map pixel of columns c0..c1, rows r0..r1 (inclusive)."""
        x0 = int(np.searchsorted(self.x1s, c0, side="left"))
        x1 = int(np.searchsorted(self.x0s, c1, side="right"))
        y0 = int(np.searchsorted(self.y1s, r0, side="left"))
        y1 = int(np.searchsorted(self.y0s, r1, side="right"))
        return x0, y0, x1, y1

    def windows(self, level: float) -> list[tuple[int, int, int, int]]:
        """Disjoint (x0, y0, x1, y1) frame windows holding every frame pixel at or above `level`, each with all
        of its region; [] where no map pixel reaches it (most parts are good: nothing is enlarged then)."""
        reach = self.crop >= level - REACH_MARGIN
        if not reach.any():
            return []
        # A frame region's pixels blend overlapping 2x2 blocks, each holding a map pixel that reaches the level:
        # all of them lie in one connected component of those map pixels grown by one pixel, and so in its span.
        near = cv2.dilate(reach.astype(np.uint8), _NEIGHBOURS)
        count, labels = cv2.connectedComponents(near, connectivity=8)
        return _disjoint(
            [self.span(c, r, c + w - 1, r + h - 1) for c, r, w, h, _ in component_stats(near, labels, count)]
        )

    def regions(self, level: float, class_name: str) -> list[Defect] | None:
        """The regions at or above `level`; None where a pixel is on the level to float rounding (the caller
        decides those on the full-size map, as before: rare, and the masks then stay the same to the pixel)."""
        defects: list[Defect] = []
        for x0, y0, x1, y1 in self.windows(level):
            values = self.window(x0, y0, x1, y1)
            if np.any(np.abs(values - level) <= TIE_MARGIN):
                return None
            defects.extend(d.shifted(x0, y0) for d in defects_from_mask(values >= level, values, class_name))
        defects.sort(key=_labelling_order)
        return defects

    def peak(self) -> float:
        r, c = np.unravel_index(int(np.argmax(self.crop)), self.crop.shape)
        # The frame pixels around the map's hottest pixel give a level the peak reaches; every frame pixel
        # that reaches it lies in a window at that level.
        lower = float(self.window(*self.span(int(c), int(r), int(c), int(r))).max())
        return max(float(self.window(*span).max()) for span in self.windows(lower))


def _blend_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR sampling of n_in pixels to n_out: (first source, second source, weight of the second),
    each (n_out,). Source position (i + 0.5) * n_in / n_out - 0.5, clamped to the edge pixels."""
    position = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(position).astype(np.int64)
    weight = (position - first).astype(np.float32)
    before, after = first < 0, first >= n_in - 1
    first[before], weight[before] = 0, 0.0
    first[after], weight[after] = n_in - 1, 0.0
    return first, np.minimum(first + 1, n_in - 1), weight


def _disjoint(spans: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Overlapping (x0, y0, x1, y1) windows merged into their bounding window until none overlap: each frame
    pixel is then labelled once, with all of its region."""
    merged: list[tuple[int, int, int, int]] = []
    for span in spans:
        x0, y0, x1, y1 = span
        i = 0
        while i < len(merged):
            a0, b0, a1, b1 = merged[i]
            if x0 < a1 and a0 < x1 and y0 < b1 and b0 < y1:
                x0, y0, x1, y1 = min(x0, a0), min(y0, b0), max(x1, a1), max(y1, b1)
                merged.pop(i)
                i = 0
            else:
                i += 1
        merged.append((x0, y0, x1, y1))
    return merged


def _labelling_order(defect: Defect) -> tuple[int, int]:
    """Where `cv2.connectedComponents` numbers a region over the whole map: by its first 2x2 block in raster
    order (its block-based labelling), so the regions come in the order the full-size labelling gave them."""
    assert defect.mask is not None
    x0, y0 = int(defect.box.x0), int(defect.box.y0)
    block_row = y0 // 2
    rows = defect.mask[: 2 * block_row + 2 - y0]  # the mask rows in that block row
    first_x = x0 + int(np.flatnonzero(rows.any(axis=0))[0])
    return block_row, first_x // 2
