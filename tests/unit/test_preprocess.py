"""The input tensor: the frame resized once, the channel order made on the input-size image, the same tensor.

`old_preprocess` is the order of before (colour conversion of the whole frame, resize, astype, scale,
normalise, transpose); the tensor must be the same, value for value.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineinspect.core.modelcard import InputSpec
from lineinspect.core.preprocess import Geometry, preprocess, stretch


def old_preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, tuple[float, ...]]:
    """The tensor and geometry (as a tuple) as preprocess made them before."""
    if image.ndim == 2:
        image = image[:, :, None]
    if spec.color == "GRAY":
        if image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        if image.shape[2] == 1:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if spec.color == "RGB":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
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
        resized, geometry = canvas, (w, h, new_w / w, new_h / h, float(left), float(top))
    else:
        interp = cv2.INTER_AREA if spec.width < w else cv2.INTER_LINEAR
        resized = cv2.resize(image, (spec.width, spec.height), interpolation=interp)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        geometry = (w, h, spec.width / w, spec.height / h, 0.0, 0.0)
    x = resized.astype(np.float32) * np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if not (mean.size == 1 and mean[0] == 0.0 and std.size == 1 and std[0] == 1.0):
        x = (x - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None]), geometry


def frame(kind: str, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(width * height)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    colour = cv2.GaussianBlur(noise, (0, 0), 1.0)  # texture like a part's, not only noise
    return {"bgr": colour, "gray": colour[:, :, 1].copy(), "gray 1 channel": colour[:, :, 1:2].copy()}[kind]


SPECS = {
    "default model (RGB NCHW 320x240)": {"width": 320, "height": 240, "color": "RGB"},
    "BGR NHWC": {"width": 320, "height": 240, "color": "BGR", "layout": "NHWC"},
    "GRAY": {"width": 256, "height": 256, "color": "GRAY"},
    "RGB per-channel mean/std": {
        "width": 224,
        "height": 224,
        "color": "RGB",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    "RGB NHWC mean/std": {"width": 224, "height": 200, "layout": "NHWC", "mean": [0.5], "std": [0.25]},
    "letterbox RGB": {"width": 640, "height": 640, "color": "RGB", "resize": "letterbox"},
    "letterbox GRAY": {"width": 320, "height": 320, "color": "GRAY", "resize": "letterbox"},
}
FRAMES = [("bgr", 1280, 1024), ("bgr", 640, 480), ("bgr", 200, 150), ("gray", 1280, 1024), ("gray 1 channel", 300, 200)]


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize(("kind", "width", "height"), FRAMES)
def test_the_tensor_is_the_one_made_before_when_resized_before_the_colour_order(
    spec_name: str, kind: str, width: int, height: int
) -> None:
    # given
    spec = InputSpec.model_validate(SPECS[spec_name])
    image = frame(kind, width, height)
    expected, expected_geometry = old_preprocess(image, spec)
    # when
    tensor, geometry = preprocess(image, spec)
    # then: the same values, shape, type and geometry
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.array_equal(tensor, expected)
    assert (
        geometry.image_width,
        geometry.image_height,
        geometry.scale_x,
        geometry.scale_y,
        geometry.pad_x,
        geometry.pad_y,
    ) == expected_geometry


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize(("kind", "width", "height"), FRAMES)
def test_the_tensor_is_the_same_when_the_plausibility_checks_resized_frame_is_given(
    spec_name: str, kind: str, width: int, height: int
) -> None:
    # given: the region as the Inspector's plausibility measures resized it (a view of it for a ROI)
    spec = InputSpec.model_validate(SPECS[spec_name])
    image = frame(kind, width, height)
    region = image[10:, 6:]
    stretched = stretch(region, spec.width, spec.height)
    # when
    tensor, geometry = preprocess(region, spec, stretched=stretched)
    # then
    expected, expected_geometry = preprocess(np.ascontiguousarray(region), spec)
    assert np.array_equal(tensor, expected)
    assert geometry == expected_geometry


def test_stretch_keeps_the_image_when_it_has_the_input_size() -> None:
    image = frame("bgr", 320, 240)
    assert stretch(image, 320, 240) is image
    assert stretch(frame("gray 1 channel", 640, 480), 320, 240).shape == (240, 320, 1)
    assert Geometry(640, 480, 0.5, 0.5, 0.0, 0.0).input_window(240, 320) == (0, 0, 320, 240)
