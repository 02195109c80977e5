"""Teach an anomaly model from images of good parts only (`lineinspect teach`, the `stats` method).

Method ("filter-bank statistics"), chosen because parts on a line sit in a
fixture and look alike, so "unlike the good parts at this place" is a defect:

1. Every image is resized to the model input (default 320x240) and divided by
   its mean brightness (lamp and exposure drift).
2. A fixed filter bank (`filter_bank.FEATURES`: blurred colour, two
   differences of Gaussians, local energy of fine detail and of the x/y
   gradients) gives 8 numbers per pixel. Nothing is learned here and nothing
   is downloaded: the filters are Gaussians written into the graph.
3. Over the good images, each feature's mean and standard deviation are
   taken per location. The part moves a little in its fixture, so the
   deviations are widened by a small max filter, and floored at half the
   feature's median deviation so that a spot that happened to be very calm in
   the good images does not flag every speck of noise. The statistics are
   stored at half resolution in float16 (the model stays well under 1 MB).
4. At run time the anomaly map is the largest |z-score| over the features at
   each pixel, smoothed by a Gaussian (σ 1.5 px); the image score is the
   map's maximum. Both are raw z-scores (outputs `anomaly_map` [1,1,h,w] and
   `pred_score` [1]); the model card's `anomaly` section scales them.
5. Part of the good images is held back and scored by the model. The image
   threshold is set where the held-back scores give the target false-reject
   rate (`thresholds.calibrate_thresholds`: the larger of the empirical
   quantile and a normal fit, plus a 25 % margin of its distance from the
   median). The pixel threshold is the same rule over the held-back maps'
   largest values (here the same value, as the score is the map's maximum):
   a good part must show no defect region at all, so a recipe's size limits
   decide only between defects. score_min is the held-back median
   (normalised 0) and score_max the mirror of it about the threshold
   (normalised 1).

The whole model is one standard ONNX graph (Conv, ReduceMax, Resize, …), so
`check`, `serve` and the station run it like any other anomaly model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from lineinspect.core.modelcard import InputSpec, ModelCard
from lineinspect.teach.common import (
    TeachOptions,
    anomaly_outputs,
    check_options,
    graph_model,
    open_session,
    run_batches,
    teach_from_good,
)
from lineinspect.teach.filter_bank import FEATURES, GraphParts, feature_nodes

METHOD = "filter-bank statistics v1"
MAP_SIGMA_PX = 1.5
JITTER_RADIUS_PX = 1  # at half resolution: the deviation map is widened by this much
STD_FLOOR_OF_MEDIAN = 0.5


def teach_stats(good_images: Sequence[Path], out_dir: Path, options: TeachOptions) -> ModelCard:
    """Build model.onnx + model.yaml in out_dir from images of good parts; return the card."""
    check_options(options, len(good_images))
    spec = InputSpec(width=options.width, height=options.height, color="RGB", layout="NCHW", resize="stretch")

    def learn(train: np.ndarray, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, Any]]:
        mean, std = _feature_statistics(train, spec, options.progress)
        return _anomaly_graph(spec, mean, std), {}

    return teach_from_good(good_images, out_dir, options, method=METHOD, spec=spec, learn=learn)


def _feature_statistics(tensors: np.ndarray, spec: InputSpec, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-location mean and (widened, floored) std of each feature, (F, H/2, W/2) float32 each."""
    parts = GraphParts()
    features = feature_nodes(parts, "input")
    outputs = {features: (len(FEATURES), spec.height, spec.width)}
    session = open_session(graph_model(parts, spec, outputs, "lineinspect_features"))
    total = np.zeros((len(FEATURES), spec.height, spec.width), np.float64)
    squares = np.zeros_like(total)
    for batch in run_batches(session, features, tensors, "learning", progress):
        values = batch.astype(np.float64)
        total += values.sum(axis=0)
        squares += (values * values).sum(axis=0)
    n = len(tensors)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0) * n / max(n - 1, 1))

    half = (max(1, spec.width // 2), max(1, spec.height // 2))
    size = 2 * JITTER_RADIUS_PX + 1
    widen = np.ones((size, size), np.uint8)
    mean_half = np.stack([cv2.resize(m.astype(np.float32), half, interpolation=cv2.INTER_AREA) for m in mean])
    std_half = []
    for s in std.astype(np.float32):
        pooled = cv2.dilate(cv2.dilate(s, np.ones((2, 2), np.uint8))[::2, ::2][: half[1], : half[0]], widen)
        floor = max(STD_FLOOR_OF_MEDIAN * float(np.median(pooled)), 1e-4)
        std_half.append(np.maximum(pooled, floor))
    return mean_half, np.stack(std_half)


def _anomaly_graph(spec: InputSpec, mean: np.ndarray, std: np.ndarray) -> onnx.ModelProto:
    """input [N,3,H,W] → anomaly_map [N,1,H,W], pred_score [N] (raw z-scores)."""
    parts = GraphParts()
    features = feature_nodes(parts, "input")
    sizes = parts.constant("stats_size", np.array([1, len(FEATURES), spec.height, spec.width], np.int64))

    def full_size(values: np.ndarray, stem: str) -> str:
        stored = parts.constant(stem, values[None].astype(np.float16))
        as_float = parts.op("Cast", [stored], to=TensorProto.FLOAT)
        return parts.op("Resize", [as_float, "", "", sizes], mode="linear")

    mean_full = full_size(mean, "good_mean")
    inv_std_full = full_size(1.0 / std, "good_inv_std")
    z = parts.op("Abs", [parts.op("Mul", [parts.op("Sub", [features, mean_full]), inv_std_full])], "z")
    worst = parts.op("ReduceMax", [z], axes=[1], keepdims=1)
    smoothed = parts.blur(worst, MAP_SIGMA_PX, 1)
    parts.nodes.append(helper.make_node("Identity", [smoothed], ["anomaly_map"]))
    parts.nodes.append(helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0))
    return graph_model(parts, spec, anomaly_outputs(spec), "lineinspect_anomaly")
