"""What every adapter returns, and the small maths they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lineinspect.core.defect_map import DefectMap
from lineinspect.core.defects import Defect
from lineinspect.core.preprocess import Geometry


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """A model's findings on one image, in original-image pixels.

    score: image-level defect score in 0–1, higher = worse.
    raw_map: (h, w) at model-input resolution (map it back with the Geometry).
    score_map: the per-pixel defect score in 0–1, where the model gives one (anomaly,
    segmentation), else None; an anomaly map stays at model resolution (`defect_map` enlarges it).
    """

    score: float
    defects: list[Defect] = field(default_factory=list)
    score_map: DefectMap | None = None
    # For ranking (evaluate's AUROC): the unclipped score and the map at model resolution where
    # the adapter normalises and clips; None where `score`/`defect_map` already rank fully.
    raw_score: float | None = None
    raw_map: np.ndarray | None = None
    # What the result's reason must add so the verdict reads right beside `score`, e.g. "the anomaly
    # map reaches 0.62 though the image score 0.44 is under 0.5"; None when the findings say it all.
    note: str | None = None

    @property
    def defect_map(self) -> np.ndarray | None:
        """(H, W) float32 per-pixel defect score in original-image pixels, made at each read (the line never
        reads it: the defects are found on `score_map` directly)."""
        return None if self.score_map is None else self.score_map.full()


class Adapter(Protocol):
    """Turns raw ONNX outputs (by output name) into a ModelOutput."""

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput: ...


class AdapterError(Exception):
    """The model's outputs do not match what its card's adapter expects."""


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activate(x: np.ndarray, activation: str, axis: int) -> np.ndarray:
    if activation == "softmax":
        return softmax(x, axis)
    if activation == "sigmoid":
        return sigmoid(x)
    return x
