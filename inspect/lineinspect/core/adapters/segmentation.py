"""Segmentation models: per-pixel class scores → connected components → defects.

Output: [1, C, h, w] scores (probabilities, or logits with the card's
`activation`), or [1, h, w] / [1, 1, h, w] integer class ids (argmax already
in the graph; every pixel then scores 1.0).
"""

from __future__ import annotations

import cv2
import numpy as np

from lineinspect.core.adapters.base import AdapterError, ModelOutput, activate
from lineinspect.core.defect_map import DefectMap
from lineinspect.core.defects import defects_from_mask
from lineinspect.core.modelcard import ModelCard
from lineinspect.core.preprocess import Geometry


class SegmentationAdapter:
    def __init__(self, card: ModelCard, output_names: list[str]) -> None:
        self.card = card
        self.labels = card.labels
        bg = card.background_class or self.labels[0]
        if bg not in self.labels:
            raise AdapterError(f"segmentation adapter: background_class '{bg}' is not in labels {self.labels}")
        self.background = self.labels.index(bg)
        self.output = output_names[0]

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput:
        raw = np.asarray(outputs[self.output])
        n = len(self.labels)
        if raw.ndim == 4 and raw.shape[1] == n and n > 1:
            probs = activate(raw[0].astype(np.float32), self.card.activation, axis=0)
            class_ids = probs.argmax(axis=0).astype(np.uint8)
            class_score = np.take_along_axis(probs, class_ids[None].astype(np.int64), axis=0)[0]
        elif raw.ndim in (3, 4) and np.issubdtype(raw.dtype, np.integer):
            class_ids = raw.reshape(raw.shape[-2:]).astype(np.uint8)
            class_score = np.ones(class_ids.shape, dtype=np.float32)
        else:
            raise AdapterError(
                f"segmentation adapter: output '{self.output}' has shape {raw.shape} ({raw.dtype}); "
                f"expected [1, {n}, H, W] class scores for labels {self.labels} or [1, H, W] class ids"
            )
        ids_full = geometry.map_to_image(class_ids, cv2.INTER_NEAREST)
        score_full = geometry.map_to_image(class_score.astype(np.float32))
        defect_score = np.where(ids_full == self.background, 0.0, score_full).astype(np.float32)
        defects = []
        for c, name in enumerate(self.labels):
            if c == self.background:
                continue
            mask = (ids_full == c) & (score_full >= self.card.threshold_for(name))
            if mask.any():
                defects.extend(defects_from_mask(mask, score_full, name))
        return ModelOutput(score=float(defect_score.max()), defects=defects, score_map=DefectMap(defect_score))
