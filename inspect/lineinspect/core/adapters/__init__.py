"""Adapters turn a model's raw outputs into defects, chosen by the model card's `adapter`."""

from __future__ import annotations

from lineinspect.core.adapters.anomaly import AnomalyAdapter
from lineinspect.core.adapters.base import Adapter, AdapterError, ModelOutput
from lineinspect.core.adapters.classification import ClassificationAdapter
from lineinspect.core.adapters.segmentation import SegmentationAdapter
from lineinspect.core.adapters.yolo import YoloAdapter
from lineinspect.core.modelcard import ModelCard

__all__ = ["Adapter", "AdapterError", "ModelOutput", "make_adapter"]


def make_adapter(card: ModelCard, output_names: list[str], metadata: dict[str, str]) -> Adapter:
    if card.adapter == "anomaly":
        return AnomalyAdapter(card, output_names)
    if card.adapter == "segmentation":
        return SegmentationAdapter(card, output_names)
    if card.adapter == "yolo":
        return YoloAdapter(card, output_names, metadata)
    return ClassificationAdapter(card, output_names, metadata)
