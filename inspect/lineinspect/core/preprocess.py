"""Image → input tensor as the model card says, and the geometry to map outputs back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # the card imports plausibility, which resizes with `stretch` from here
    from lineinspect.core.modelcard import InputSpec


@dataclass(frozen=True, slots=True)
class Geometry:
    """How model-input pixels relate to the original image.

    original x = (input x - pad_x) / scale_x; likewise for y.
    """

    image_width: int
    image_height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_image(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(x) - self.pad_x) / self.scale_x, (np.asarray(y) - self.pad_y) / self.scale_y

    def input_window(self, h_in: int, w_in: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of an (h_in, w_in) map in input pixels that shows the image (padding cut)."""
        x0 = round(self.pad_x)
        y0 = round(self.pad_y)
        x1 = min(w_in, round(self.pad_x + self.image_width * self.scale_x))
        y1 = min(h_in, round(self.pad_y + self.image_height * self.scale_y))
        return x0, y0, x1, y1

    def map_to_image(self, values: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """(h_in, w_in) map in input pixels → (image_height, image_width), padding removed."""
        x0, y0, x1, y1 = self.input_window(*values.shape[:2])
        crop = values[y0:y1, x0:x1]
        return cv2.resize(crop, (self.image_width, self.image_height), interpolation=interpolation)


def stretch(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W[, C]) uint8 → (height, width[, C]), as a stretch card's input is made: INTER_AREA where the image is
    wider than the input, else INTER_LINEAR. The plausibility measures are taken on this same image, so the
    Inspector resizes a frame once for both (`preprocess(stretched=)`). The image itself when it has that size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interpolation = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel
        resized = resized[:, :, None]
    return resized


def resize_for_model(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Geometry]:
    """(H, W, C) uint8 → (spec.height, spec.width, C) uint8 and its Geometry."""
    h, w = image.shape[:2]
    if spec.resize == "letterbox":
        r = min(spec.width / w, spec.height / h)
        new_w, new_h = max(1, round(w * r)), max(1, round(h * r))
        pad_x, pad_y = (spec.width - new_w) / 2, (spec.height - new_h) / 2
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        top, left = round(pad_y - 0.1), round(pad_x - 0.1)
        canvas = np.full((spec.height, spec.width, image.shape[2]), spec.pad_value, dtype=np.uint8)
        canvas[top : top + new_h, left : left + new_w] = resized
        return canvas, Geometry(w, h, new_w / w, new_h / h, float(left), float(top))
    return stretch(image, spec.width, spec.height), Geometry(w, h, spec.width / w, spec.height / h, 0.0, 0.0)


def to_tensor(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(h, w, C) uint8 in the frame's order (BGR, or one grey channel; a GRAY card's grey) → (1, C', h, w) or
    (1, h, w, C') float32 in the card's colour order, scaled and normalised.

    The channel order and the grey-to-colour copy are made here, on the input-size image, while scaling: the
    same values as converting the frame first (both only move or copy channels), without a pass over the frame.
    """
    h, w, c = image.shape
    n = spec.channels
    if n == 1 or c == 1:
        planes = [image[:, :, 0]] * n
    else:
        b, g, r = cv2.split(image)  # contiguous planes: scaling them is faster than a strided transpose
        planes = [r, g, b] if spec.color == "RGB" else [b, g, r]
    x = np.empty((1, n, h, w) if spec.layout == "NCHW" else (1, h, w, n), dtype=np.float32)
    scale = np.float32(spec.scale)
    for i, plane in enumerate(planes):
        np.multiply(plane, scale, out=x[0, i] if spec.layout == "NCHW" else x[0, :, :, i])
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if not (mean.size == 1 and mean[0] == 0.0 and std.size == 1 and std[0] == 1.0):
        per_channel = (-1, 1, 1) if spec.layout == "NCHW" else (-1,)
        x -= mean.reshape(per_channel)
        x /= std.reshape(per_channel)
    return x


def preprocess(
    image: np.ndarray, spec: InputSpec, *, stretched: np.ndarray | None = None
) -> tuple[np.ndarray, Geometry]:
    """Original image ((H, W) gray or (H, W, 3) BGR uint8) → input tensor + geometry.

    stretched: `stretch(image, spec.width, spec.height)` where the caller has made it already (the Inspector's
    plausibility measures); used where it is this card's resize of the image, so the frame is resized once.
    """
    frame = image if image.ndim == 3 else image[:, :, None]
    if spec.color == "GRAY" and frame.shape[2] == 3:
        # Grey first, as ever: converting after the resize would round differently.
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
        stretched = None
    h, w = frame.shape[:2]
    if stretched is not None and spec.resize == "stretch" and stretched.shape[:2] == (spec.height, spec.width):
        resized = stretched if stretched.ndim == 3 else stretched[:, :, None]
        geometry = Geometry(w, h, spec.width / w, spec.height / h, 0.0, 0.0)
    else:
        resized, geometry = resize_for_model(frame, spec)
    return to_tensor(resized, spec), geometry
