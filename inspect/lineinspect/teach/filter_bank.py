"""A fixed filter bank written as ONNX nodes: what the anomaly model measures at every pixel.

Nothing here is learned; the filters are Gaussian blurs, differences of
Gaussians and gradient energies, built as separable depthwise Conv nodes so
that any ONNX runtime runs them fast on a CPU. `feature_nodes` appends the
nodes that turn the model input into a feature stack; `stats.py` adds the
statistics of good parts on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

# Feature channels, in order. Each says what kind of defect it is there for.
FEATURES: tuple[str, ...] = (
    "blur_c0",  # colour/brightness per channel, σ 2 px: stains, dark pits
    "blur_c1",
    "blur_c2",
    "dog_fine",  # gray σ1 − σ2.5: thin lines (scratches, cracks)
    "dog_coarse",  # gray σ2.5 − σ6: dents, spots, stain outlines
    "energy_fine",  # local energy of dog_fine, σ 3: texture broken or added
    "energy_dx",  # local energy of ∂/∂x, σ 3: lines across the brushing direction
    "energy_dy",  # local energy of ∂/∂y, σ 3
)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D normalised Gaussian, radius ⌈3σ⌉."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


@dataclass
class GraphParts:
    """Nodes and initializers being collected for one graph; names are made unique here."""

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    _count: int = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def depthwise(self, x: str, kernel_hw: np.ndarray, channels: int) -> str:
        """Same-size depthwise convolution of x [N, C, H, W] with one (kh, kw) kernel per channel."""
        kh, kw = kernel_hw.shape
        weights = np.broadcast_to(kernel_hw, (channels, 1, kh, kw)).astype(np.float32)
        w = self.constant("kernel", np.ascontiguousarray(weights))
        pads = [kh // 2, kw // 2, kh // 2, kw // 2]
        return self.op("Conv", [x, w], group=channels, pads=pads, kernel_shape=[kh, kw])

    def blur(self, x: str, sigma: float, channels: int) -> str:
        """Separable Gaussian blur; borders are zero-padded, which the good-part statistics absorb."""
        k = gaussian_kernel(sigma)
        return self.depthwise(self.depthwise(x, k[None, :], channels), k[:, None], channels)


def feature_nodes(parts: GraphParts, image: str) -> str:
    """image: [N, 3, H, W] float 0–1 → [N, len(FEATURES), H, W] feature stack (the output's name)."""
    # A lamp that ages or an exposure that drifts scales the whole image; dividing by
    # the image's mean brightness takes that out before anything is compared.
    mean = parts.op("ReduceMean", [image], axes=[1, 2, 3], keepdims=1)
    eps = parts.constant("eps", np.array(1e-3, np.float32))
    half = parts.constant("half", np.array(0.5, np.float32))
    x = parts.op("Mul", [parts.op("Div", [image, parts.op("Add", [mean, eps])]), half], "normalised")

    gray_w = parts.constant("gray_weights", np.full((1, 3, 1, 1), 1.0 / 3.0, np.float32))
    gray = parts.op("Conv", [x, gray_w], "gray", kernel_shape=[1, 1])

    colour = parts.blur(x, 2.0, 3)
    g1 = parts.blur(gray, 1.0, 1)
    g25 = parts.blur(gray, 2.5, 1)
    g6 = parts.blur(gray, 6.0, 1)
    dog_fine = parts.op("Sub", [g1, g25], "dog_fine")
    dog_coarse = parts.op("Sub", [g25, g6], "dog_coarse")

    diff = np.array([[-0.5, 0.0, 0.5]], np.float32)
    dx = parts.depthwise(g1, diff, 1)
    dy = parts.depthwise(g1, diff.T.copy(), 1)
    energies = [parts.blur(parts.op("Mul", [v, v]), 3.0, 1) for v in (dog_fine, dx, dy)]
    # Energies are squares; their square roots are in the same units as the other features.
    roots = [parts.op("Sqrt", [e]) for e in energies]
    return parts.op("Concat", [colour, dog_fine, dog_coarse, *roots], "features", axis=1)
