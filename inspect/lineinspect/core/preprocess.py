"""Image → input tensor as the model card says, and the geometry to map outputs back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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

    def map_to_image(self, values: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """(h_in, w_in) map in input pixels → (image_height, image_width), padding removed."""
        h_in, w_in = values.shape[:2]
        x0 = round(self.pad_x)
        y0 = round(self.pad_y)
        x1 = min(w_in, round(self.pad_x + self.image_width * self.scale_x))
        y1 = min(h_in, round(self.pad_y + self.image_height * self.scale_y))
        crop = values[y0:y1, x0:x1]
        return cv2.resize(crop, (self.image_width, self.image_height), interpolation=interpolation)


def to_model_colour(image: np.ndarray, color: str) -> np.ndarray:
    """image: (H, W) gray or (H, W, 3) BGR uint8 → (H, W, C) in the card's colour order."""
    if image.ndim == 2:
        image = image[:, :, None]
    if color == "GRAY":
        if image.shape[2] == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
        return image
    if image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if color == "RGB":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


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
    interp = cv2.INTER_AREA if spec.width < w else cv2.INTER_LINEAR
    resized = cv2.resize(image, (spec.width, spec.height), interpolation=interp)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return resized, Geometry(w, h, spec.width / w, spec.height / h, 0.0, 0.0)


def to_tensor(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(h, w, C) uint8 → (1, C, h, w) or (1, h, w, C) float32, scaled and normalised."""
    x = image.astype(np.float32) * np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if not (mean.size == 1 and mean[0] == 0.0 and std.size == 1 and std[0] == 1.0):
        x = (x - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Geometry]:
    """Original image ((H, W) gray or (H, W, 3) BGR uint8) → input tensor + geometry."""
    resized, geometry = resize_for_model(to_model_colour(image, spec.color), spec)
    return to_tensor(resized, spec), geometry
