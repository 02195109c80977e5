"""Teach an anomaly model from images of good parts only (`lineinspect teach`).

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
   rate (the larger of the empirical quantile and a normal fit, plus a 25 %
   margin of its distance from the median). The pixel threshold is the same
   rule over the held-back maps' largest values (here the same value, as the
   score is the map's maximum): a good part must show no defect region at
   all, so a recipe's size limits decide only between defects. score_min is the held-back median
   (normalised 0) and score_max the mirror of it about the threshold
   (normalised 1).

The whole model is one standard ONNX graph (Conv, ReduceMax, Resize, …), so
`check`, `serve` and the station run it like any other anomaly model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tqdm import tqdm

from lineinspect.core.modelcard import MODEL_FILE, AnomalyCalibration, InputSpec, ModelCard
from lineinspect.core.preprocess import preprocess
from lineinspect.teach.card import write_anomaly_card
from lineinspect.teach.filter_bank import FEATURES, GraphParts, feature_nodes
from lineinspect.teach.good_folder import TeachError, read_good_images

METHOD = "filter-bank statistics v1"
OPSET = 17
MIN_TRAIN_IMAGES = 5
MIN_HOLDOUT_IMAGES = 3
MIN_IMAGES = MIN_TRAIN_IMAGES + MIN_HOLDOUT_IMAGES
MAP_SIGMA_PX = 1.5
JITTER_RADIUS_PX = 1  # at half resolution: the deviation map is widened by this much
STD_FLOOR_OF_MEDIAN = 0.5
THRESHOLD_MARGIN = 0.25
BATCH = 8


@dataclass(frozen=True, slots=True)
class TeachOptions:
    """name: the model id recipes use. width/height: model input in pixels.
    target_false_reject: wanted share of good parts rejected (0.005 = 0.5 %).
    holdout_fraction: share of good images held back to set thresholds.
    """

    name: str
    width: int = 320
    height: int = 240
    target_false_reject: float = 0.005
    holdout_fraction: float = 0.2
    seed: int = 0
    progress: bool = True
    description: str = ""


def teach_anomaly(good_images: Sequence[Path], out_dir: Path, options: TeachOptions) -> ModelCard:
    """Build model.onnx + model.yaml in out_dir from images of good parts; return the card."""
    _check_options(options, len(good_images))
    started = time.monotonic_ns()
    spec = InputSpec(width=options.width, height=options.height, color="RGB", layout="NCHW", resize="stretch")
    tensors, sizes = _load(good_images, spec, options.progress)

    holdout, train = split_holdout(len(tensors), options.holdout_fraction, np.random.default_rng(options.seed))

    mean, std = _feature_statistics(tensors[train], spec, options.progress)
    model = _anomaly_graph(spec, mean, std)
    session = _session(model)
    maps, scores = _run(session, tensors[holdout])
    calibration = calibrate_thresholds(scores, options.target_false_reject, map_maxima=maps.max(axis=(1, 2)))

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_dir / MODEL_FILE))
    card = write_anomaly_card(
        out_dir,
        name=options.name,
        description=options.description
        or f"Anomaly model taught from {len(tensors)} images of good parts by lineinspect teach ({METHOD}).",
        method=METHOD,
        spec=spec,
        calibration=calibration,
        held_back_scores=scores,
        target_false_reject=options.target_false_reject,
        started_ns=started,
        counts={"images": len(tensors), "images_learned": len(train), "images_held_back": len(holdout)},
        details={"image_sizes": sorted(f"{w}x{h}" for w, h in sizes)},
    )
    return card


def split_holdout(count: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (held back, learned): the held-back good images set the thresholds, never the model."""
    order = rng.permutation(count)
    n_holdout = max(MIN_HOLDOUT_IMAGES, round(count * fraction))
    holdout, train = order[:n_holdout], order[n_holdout:]
    if len(train) < MIN_TRAIN_IMAGES:
        raise TeachError(
            f"{count} good images with --holdout {fraction:g} leave {len(train)} to learn "
            f"from; at least {MIN_TRAIN_IMAGES} are needed (give more images or a smaller --holdout)"
        )
    return holdout, train


def _check_options(options: TeachOptions, count: int) -> None:
    if not 0 < options.target_false_reject < 0.5:
        raise TeachError(f"--target-false-reject {options.target_false_reject:g}: give a rate between 0 and 0.5")
    if not 0 < options.holdout_fraction < 1:
        raise TeachError(f"--holdout {options.holdout_fraction:g}: give a fraction between 0 and 1 (e.g. 0.2)")
    if options.width < 32 or options.height < 32 or options.width > 2048 or options.height > 2048:
        raise TeachError(f"--size {options.width}x{options.height}: each side must be 32–2048 px")
    if count < MIN_IMAGES:
        raise TeachError(f"{count} good image(s) given; teach needs at least {MIN_IMAGES}")


def _load(paths: Sequence[Path], spec: InputSpec, progress: bool) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Decode and resize every image: (M, 3, H, W) float32 input tensors and the original sizes seen."""
    tensors = []
    sizes: set[tuple[int, int]] = set()
    images = read_good_images(list(paths))
    with _bar(len(paths), "reading", progress) as bar:
        for _, image in images:
            sizes.add((image.shape[1], image.shape[0]))
            tensors.append(preprocess(image, spec)[0][0])
            if bar is not None:
                bar.update()
    return np.stack(tensors), sizes


def _bar(total: int, desc: str, enabled: bool) -> tqdm[Any] | nullcontext[None]:
    """A progress bar, or nothing: a disabled tqdm bar is never closed and keeps tqdm's monitor thread alive."""
    return tqdm(total=total, desc=desc, unit="img") if enabled else nullcontext()


def _feature_statistics(tensors: np.ndarray, spec: InputSpec, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-location mean and (widened, floored) std of each feature, (F, H/2, W/2) float32 each."""
    parts = GraphParts()
    features = feature_nodes(parts, "input")
    session = _session(_model(parts, spec, {features: len(FEATURES)}, "lineinspect_features"))
    total = np.zeros((len(FEATURES), spec.height, spec.width), np.float64)
    squares = np.zeros_like(total)
    batches = range(0, len(tensors), BATCH)
    with _bar(len(tensors), "learning", progress) as bar:
        for start in batches:
            values = session.run([features], {"input": tensors[start : start + BATCH]})[0].astype(np.float64)
            total += values.sum(axis=0)
            squares += (values * values).sum(axis=0)
            if bar is not None:
                bar.update(len(values))
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
    return _model(parts, spec, {"anomaly_map": 1, "pred_score": 0}, "lineinspect_anomaly")


def _model(parts: GraphParts, spec: InputSpec, outputs: dict[str, int], graph_name: str) -> onnx.ModelProto:
    """Wrap the collected nodes; outputs: name → channels (0: a score per image)."""
    infos = [
        helper.make_tensor_value_info(
            name, TensorProto.FLOAT, ["batch", ch, spec.height, spec.width] if ch else ["batch"]
        )
        for name, ch in outputs.items()
    ]
    graph = helper.make_graph(
        parts.nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, spec.height, spec.width])],
        infos,
        initializer=parts.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lineinspect teach")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(maps (M, H, W), scores (M,)) for a stack of input tensors."""
    maps, scores = [], []
    for start in range(0, len(tensors), BATCH):
        m, s = session.run(["anomaly_map", "pred_score"], {"input": tensors[start : start + BATCH]})
        maps.append(m[:, 0])
        scores.append(s)
    return np.concatenate(maps), np.concatenate(scores)


def calibrate_thresholds(
    scores: np.ndarray, target_false_reject: float, *, map_maxima: np.ndarray | None = None
) -> AnomalyCalibration:
    """Thresholds from the held-back good scores (see the module docstring, step 5).

    map_maxima: the held-back images' largest anomaly-map values. A part fails on any map pixel
    at or above the pixel threshold, so where a map can peak above the image score, the pixel
    threshold is the same level taken over those maxima (never below the image threshold).
    """
    threshold = _level(scores, target_false_reject)
    pixel = threshold if map_maxima is None else max(threshold, _level(map_maxima, target_false_reject))
    median = float(np.median(scores))
    return AnomalyCalibration(
        image_threshold=round(threshold, 4),
        pixel_threshold=round(pixel, 4),
        score_min=round(median, 4),
        score_max=round(2 * threshold - median, 4),
    )


def _level(values: np.ndarray, target_false_reject: float) -> float:
    """The larger of the empirical quantile and a normal fit, plus THRESHOLD_MARGIN of its distance from the median."""
    median = float(np.median(values))
    empirical = float(np.quantile(values, 1.0 - target_false_reject))
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    fitted = float(np.mean(values)) + statistics.NormalDist().inv_cdf(1.0 - target_false_reject) * spread
    level = max(empirical, fitted)
    return level + THRESHOLD_MARGIN * max(level - median, 1e-3)
