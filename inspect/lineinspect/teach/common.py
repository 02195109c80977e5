"""What every teach method shares: options and their checks, the hold-back split, good images as input
tensors, an ONNX graph built from `GraphParts` → onnxruntime session → its outputs, the model card,
and the training loop of the torch methods.

Each method (`stats.py`, `patchknn.py`, `featnet.py`, `draem.py`) learns from
part of the good images and sets its thresholds from the rest (`split_holdout`;
the threshold rules are in `lineinspect.offline.thresholds`), then writes
model.onnx and its card (`write_anomaly_card`). The methods that learn a graph
from good images alone (stats, patchknn) follow one plan, `teach_from_good`.
A method's graph runs here exactly as the runtime will run it: CPU,
onnxruntime, the input preprocessed by `core.preprocess`. torch is imported
only by `load_torch` (the `train` extra; the service never needs it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tqdm import tqdm

from lineinspect.core.clock import utc_now_iso
from lineinspect.core.model import NCHWC_OPTIMIZER
from lineinspect.core.modelcard import (
    MODEL_FILE,
    AnomalyCalibration,
    CardRuntime,
    InputSpec,
    ModelCard,
    file_sha256,
    write_card,
)
from lineinspect.core.plausibility import baseline_of_images
from lineinspect.core.preprocess import preprocess
from lineinspect.offline.thresholds import calibrate_thresholds
from lineinspect.teach.filter_bank import GraphParts
from lineinspect.teach.good_folder import TeachError, read_good_images

OPSET = 17
MIN_TRAIN_IMAGES = 5
MIN_HOLDOUT_IMAGES = 3
MIN_IMAGES = MIN_TRAIN_IMAGES + MIN_HOLDOUT_IMAGES
RUN_BATCH = 8  # images per onnxruntime call


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


def check_options(options: TeachOptions, count: int) -> None:
    """Raise TeachError for settings no method can teach from; count: the good images given."""
    if not 0 < options.target_false_reject < 0.5:
        raise TeachError(f"--target-false-reject {options.target_false_reject:g}: give a rate between 0 and 0.5")
    if not 0 < options.holdout_fraction < 1:
        raise TeachError(f"--holdout {options.holdout_fraction:g}: give a fraction between 0 and 1 (e.g. 0.2)")
    if options.width < 32 or options.height < 32 or options.width > 2048 or options.height > 2048:
        raise TeachError(f"--size {options.width}x{options.height}: each side must be 32–2048 px")
    if count < MIN_IMAGES:
        raise TeachError(f"{count} good image(s) given; teach needs at least {MIN_IMAGES}")


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


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "img") -> tqdm[Any] | nullcontext[None]:
    """A progress bar, or nothing: a disabled tqdm bar is never closed and keeps tqdm's monitor thread alive."""
    return tqdm(total=total, desc=desc, unit=unit) if enabled else nullcontext()


def input_tensor(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(C, H, W) float32 model input of one (H, W) gray or (H, W, 3) BGR uint8 image, as the runtime feeds it."""
    return preprocess(image, spec)[0][0]


def good_tensors(paths: Sequence[Path], spec: InputSpec, progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """(M, C, H, W) float32 input tensors of every good image, and the original sizes seen ("WxH", sorted).

    progress: show a "reading" bar.
    """
    tensors = []
    sizes: set[str] = set()
    with progress_bar(len(paths), "reading", progress) as bar:
        for _, image in read_good_images(list(paths)):
            sizes.add(f"{image.shape[1]}x{image.shape[0]}")
            tensors.append(input_tensor(image, spec))
            if bar is not None:
                bar.update()
    return np.stack(tensors), sorted(sizes)


def anomaly_outputs(spec: InputSpec) -> dict[str, tuple[int, ...]]:
    """The outputs the `anomaly` adapter reads: anomaly_map [N,1,H,W] and pred_score [N], as for `graph_model`."""
    return {"anomaly_map": (1, spec.height, spec.width), "pred_score": ()}


def graph_model(
    parts: GraphParts, spec: InputSpec, outputs: Mapping[str, tuple[int, ...]], graph_name: str
) -> onnx.ModelProto:
    """The collected nodes as one checked ONNX model; input "input" [batch, C, H, W] (C from spec.color).

    outputs: name → its shape after the batch axis (() for one score per image).
    """
    infos = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]) for name, shape in outputs.items()
    ]
    graph = helper.make_graph(
        parts.nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", spec.channels, spec.height, spec.width])],
        infos,
        initializer=parts.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lineinspect teach")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def open_session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A quiet CPU onnxruntime session of a filter-bank graph, without the NCHWc layout as the station runs
    it (`FILTER_BANK_RUNTIME`); threads: intra-op threads (0: onnxruntime's choice)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(),
        sess_options=options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=[NCHWC_OPTIMIZER],  # as FILTER_BANK_RUNTIME has the station run it
    )


def run_batches(
    session: ort.InferenceSession, output: str, tensors: np.ndarray, desc: str, progress: bool
) -> Iterator[np.ndarray]:
    """The session's `output` for RUN_BATCH input tensors (M, C, H, W) at a time, with a bar of images."""
    with progress_bar(len(tensors), desc, progress) as bar:
        for start in range(0, len(tensors), RUN_BATCH):
            values: np.ndarray = session.run([output], {"input": tensors[start : start + RUN_BATCH]})[0]
            yield values
            if bar is not None:
                bar.update(len(values))


def run_model(session: ort.InferenceSession, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(maps (M, H, W), scores (M,)) of an anomaly model (`anomaly_outputs`) for input tensors (M, C, H, W)."""
    maps, scores = [], []
    for start in range(0, len(tensors), RUN_BATCH):
        m, s = session.run(["anomaly_map", "pred_score"], {"input": tensors[start : start + RUN_BATCH]})
        maps.append(m[:, 0])
        scores.append(s)
    return np.concatenate(maps), np.concatenate(scores)


def score_held_back(model: onnx.ModelProto, tensors: np.ndarray, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(raw image scores (n,), largest raw map values (n,)) of an anomaly model over held-back input tensors."""
    maps, scores = run_model(open_session(model, threads), tensors)
    return scores, maps.max(axis=(1, 2))


# The filter bank's single-channel convolutions run about 1.8x faster without onnxruntime's NCHWc layout
# rewrite (the default model, one thread: 1.8x), so the cards of the filter-bank methods say so and the
# station opens their sessions without it. featnet's network after the bank is faster with it: its card
# names the tensor between the two (`nchwc_after`), and the station runs the two halves in two sessions.
FILTER_BANK_RUNTIME = CardRuntime(onnxruntime_nchwc=False)


def write_anomaly_card(
    out_dir: Path,
    teach: TeachOptions,
    *,
    method: str,
    summary: str,
    spec: InputSpec,
    calibration: AnomalyCalibration,
    held_back_scores: np.ndarray,
    images_learned: int,
    started_ns: int,
    good_images: Sequence[Path],
    details: dict[str, Any] | None = None,
    model: onnx.ModelProto | None = None,
    runtime: CardRuntime | None = None,
) -> ModelCard:
    """Save model as out_dir/model.onnx (None: the file is there already) and write its card; return the card.

    summary: what the model was taught from, the description's start where teach gives none (e.g.
    "Anomaly model taught from 200 images of good parts"). held_back_scores: raw image scores of
    the good images kept out of teaching (what set the thresholds); images_learned: the good images
    it learned from; details: method-specific facts for `trained`; started_ns: time.monotonic_ns()
    when teaching began; good_images: every good image given (held back or learned), whose frames
    become the card's `frame_baseline` (the frame plausibility limits); runtime: the card's `runtime`
    (`FILTER_BANK_RUNTIME` for the filter-bank methods). The sha256 is taken from the file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if model is not None:
        onnx.save(model, str(out_dir / MODEL_FILE))
    card = ModelCard(
        name=teach.name,
        description=teach.description or f"{summary} by lineinspect teach ({method}).",
        adapter="anomaly",
        input=spec,
        anomaly=calibration,
        frame_baseline=baseline_of_images(
            (image for _, image in read_good_images(list(good_images))), width_px=spec.width, height_px=spec.height
        ),
        sha256=file_sha256(out_dir / MODEL_FILE),
        runtime=runtime,
        trained={
            "method": method,
            "date_utc": utc_now_iso("seconds"),
            "images": images_learned + len(held_back_scores),
            "images_learned": images_learned,
            "images_held_back": len(held_back_scores),
            **(details or {}),
            "target_false_reject": teach.target_false_reject,
            "held_back_scores": {
                "median": round(float(np.median(held_back_scores)), 4),
                "max": round(float(held_back_scores.max()), 4),
                "over_threshold": int((held_back_scores >= calibration.image_threshold).sum()),
            },
            "seconds": round((time.monotonic_ns() - started_ns) / 1e9, 1),
            "pretrained_weights": None,
        },
    )
    write_card(card, out_dir)
    return card


def teach_from_good(
    good_images: Sequence[Path],
    out_dir: Path,
    teach: TeachOptions,
    *,
    method: str,
    spec: InputSpec,
    learn: Callable[[np.ndarray, np.random.Generator], tuple[onnx.ModelProto, dict[str, Any]]],
) -> ModelCard:
    """Teach a graph from good images only, set its thresholds from the held-back ones, write it; return the card.

    learn(train, rng): the method's graph (`anomaly_outputs`, z-score-like raw scores) from the
    learned good images' input tensors (M, C, H, W), and its facts for the card; rng is the one
    that made the split. Thresholds by the fitted level (`thresholds.calibrate_thresholds`), the
    pixel threshold over the held-back maps' maxima.
    """
    started = time.monotonic_ns()
    tensors, sizes = good_tensors(good_images, spec, teach.progress)
    rng = np.random.default_rng(teach.seed)
    holdout, train = split_holdout(len(tensors), teach.holdout_fraction, rng)
    model, details = learn(tensors[train], rng)
    scores, maxima = score_held_back(model, tensors[holdout])
    return write_anomaly_card(
        out_dir,
        teach,
        model=model,
        method=method,
        summary=f"Anomaly model taught from {len(tensors)} images of good parts",
        spec=spec,
        calibration=calibrate_thresholds(scores, teach.target_false_reject, map_maxima=maxima),
        held_back_scores=scores,
        images_learned=len(train),
        started_ns=started,
        good_images=good_images,
        details={"image_sizes": sizes, **details},
        runtime=FILTER_BANK_RUNTIME,
    )


def load_torch(method: str, instead: str, *, seed: int, threads: int) -> Any:
    """torch, seeded and held to `threads` CPU threads; TeachError where it is not installed.

    method: the teach method that needs it; instead: the methods to suggest that do not.
    """
    try:
        import torch
    except ImportError:
        raise TeachError(
            f"--method {method} needs torch, which the service does not: pip install 'lineinspect[train]' "
            f"(or use --method {instead})"
        ) from None
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return torch


def train_network(
    torch: Any, net: Any, steps: int, lr: float, progress: bool, batch_loss: Callable[[], tuple[Any, dict[str, Any]]]
) -> None:
    """Train net for `steps` batches: AdamW (weight decay 1e-4), a one-cycle rate peaking at lr; net ends in eval.

    batch_loss: makes one batch and returns its loss (a torch scalar) and the losses shown beside the
    bar (name → torch scalar).
    """
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    net.train()
    with progress_bar(steps, "training", progress, unit="step") as bar:
        for _ in range(steps):
            loss, shown = batch_loss()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            if bar is not None:
                bar.update()
                bar.set_postfix({name: f"{float(value.detach()):.3f}" for name, value in shown.items()})
    net.eval()
