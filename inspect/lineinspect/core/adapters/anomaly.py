"""Anomaly models: an anomaly map and/or an image score.

Runs lineinspect's own models and anomalib v2 ONNX exports as they are
(outputs among `pred_score`, `pred_label`, `anomaly_map`, `pred_mask`). Raw
scores are normalised with the card's thresholds so that 0.5 sits exactly on
the threshold (the convention anomalib uses), which lets recipes use one
scale for every anomaly model and lets a plant retune the card without
re-exporting.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from lineinspect.core.adapters.base import AdapterError, ModelOutput
from lineinspect.core.defect_map import DefectMap
from lineinspect.core.defects import Box, Defect
from lineinspect.core.modelcard import AnomalyCalibration, ModelCard
from lineinspect.core.preprocess import Geometry

DEFECT_CLASS = "anomaly"


def normalise(raw: np.ndarray | float, threshold: float, cal: AnomalyCalibration) -> np.ndarray:
    return np.clip((np.asarray(raw, dtype=np.float32) - threshold) / (cal.score_max - cal.score_min) + 0.5, 0.0, 1.0)


class AnomalyAdapter:
    def __init__(self, card: ModelCard, output_names: list[str]) -> None:
        assert card.anomaly is not None
        self.cal = card.anomaly
        self.class_name = card.labels[0] if card.labels else DEFECT_CLASS
        self.pixel_threshold = card.threshold_for(self.class_name)
        self.map_name = self.cal.map_output or ("anomaly_map" if "anomaly_map" in output_names else None)
        self.score_name = self.cal.score_output or ("pred_score" if "pred_score" in output_names else None)
        self.mask_name = "pred_mask" if "pred_mask" in output_names else None
        if self.map_name is None and self.score_name is None and self.mask_name is None:
            raise AdapterError(
                f"anomaly adapter: the model has outputs {output_names}; expected 'anomaly_map' "
                "and/or 'pred_score' (or name them in the card's anomaly.map_output/score_output)"
            )

    def decode(self, outputs: dict[str, np.ndarray], geometry: Geometry) -> ModelOutput:
        score_map = None
        raw_map = None
        if self.map_name is not None:
            raw_map = _squeeze_map(outputs[self.map_name], self.map_name)
            # Kept at model resolution: the regions are found there and enlarged only where they are.
            score_map = DefectMap(normalise(raw_map, self.cal.pixel_threshold, self.cal), geometry)
        elif self.mask_name is not None:
            mask_small = _squeeze_map(outputs[self.mask_name], self.mask_name).astype(np.float32)
            score_map = DefectMap(geometry.map_to_image(mask_small, cv2.INTER_NEAREST))

        raw_score: float | None = None
        if self.score_name is not None:
            raw_score = float(np.asarray(outputs[self.score_name]).reshape(-1)[0])
            score = float(normalise(raw_score, self.cal.image_threshold, self.cal))
        elif raw_map is not None:
            raw_score = float(raw_map.max())
            score = float(normalise(raw_score, self.cal.image_threshold, self.cal))
        else:
            score = score_map.peak() if score_map is not None else 0.0

        note = None
        threshold = self.pixel_threshold
        if score_map is not None:
            defects = score_map.regions(threshold, self.class_name)
            if not defects and score >= threshold:
                # The image score says defective though no pixel reaches the pixel threshold (a
                # model with an image head, or a pooled score): the part must still fail.
                peak = score_map.peak()
                defects = [_at_peak(score_map, peak, score, self.class_name, geometry)]
                note = (
                    f"image score {score:.2f} ≥ {threshold:g} though no anomaly-map pixel reaches {threshold:g} "
                    f"(map peak {peak:.2f}): the defect is placed at the map's hottest region"
                )
            elif defects and score < threshold:
                # The map decides: a local defect can be too small to lift the image score.
                note = (
                    f"image score {score:.2f} < {threshold:g}, but the anomaly map reaches "
                    f"{max(d.score for d in defects):.2f} ≥ {threshold:g} in {len(defects)} "
                    f"region{'s' if len(defects) > 1 else ''}: the map decides"
                )
        elif score >= threshold:
            box = Box(0.0, 0.0, float(geometry.image_width), float(geometry.image_height))
            defects = [Defect.from_box(self.class_name, score, box)]
            note = f"image score {score:.2f} ≥ {threshold:g} (the model gives no anomaly map): the whole image"
        else:
            defects = []
        return ModelOutput(score, defects, score_map, raw_score=raw_score, raw_map=raw_map, note=note)


def _at_peak(score_map: DefectMap, peak: float, score: float, class_name: str, geometry: Geometry) -> Defect:
    """One defect with the image score, where the map is hottest (its peak in image pixels): the region at half
    its peak or more."""
    if peak <= 0.0:  # the map says nothing: the whole image is the defect
        return Defect.from_box(
            class_name, score, Box(0.0, 0.0, float(geometry.image_width), float(geometry.image_height))
        )
    hottest = max(score_map.regions(peak / 2, class_name), key=lambda d: d.score)
    return dataclasses.replace(hottest, score=score)


def _squeeze_map(value: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise AdapterError(f"anomaly adapter: output '{name}' has shape {value.shape}; expected [1,1,H,W] or [1,H,W]")
    return arr.astype(np.float32, copy=False)
