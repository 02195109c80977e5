"""Teach a small network on top of the fixed filter bank (`lineinspect teach --method featnet`).

Method ("filter-bank network"), chosen because a line-side box has two CPU
cores, no internet and no pretrained weights, yet should learn from the
plant's own labelled defects in minutes:

1. Every image is read as gray, stretched to the model input and divided by
   its mean brightness (lamp drift); the fixed filter bank of the patch
   method (`patchknn.patch_features`: brightness, differences of Gaussians,
   gradient and texture energy, Hessian blob and line responses, the cell's
   place) describes every 4x4 pixel cell with 16 numbers. Nothing there is
   learned, so the features of every training image are computed once.
2. A small network learns on those cells: a 1x1 layer, five 3x3 layers with
   growing dilation (1, 2, 4, 8, 1: each cell sees about 120 px of the input
   around it, enough to tell a tile's end from a break) and two heads — a
   per-cell defect logit (the map) and a per-image defect logit (from the
   mean and maximum of the last layer and of the map). Both are trained with
   binary cross-entropy, on batches that are half good and half defective
   images, flipped at random.
3. Unsupervised (good images only): defects painted onto good images
   (`painted.paint_defect`) are the defective half of every batch; on a
   surface with a grain (`painted.texture_grain`) half of them follow it.
   With labelled defects (`--defects DIR`): the defective images and their
   masks (a cell is defective when any of its pixels is; an image without a
   mask still teaches the image head), and the painted defects besides. The
   labelled ones make n / (n + `LABELS_BALANCE`) of the defective draws for n
   labelled images, painted ones the rest: a first week's tens of reviewed
   rejects add to what painting teaches instead of replacing it (a few labels
   alone fit those few), and hundreds of labels outweigh it. Measured on the
   tiles' validation split (learn exp0-1, measure exp2, 600 steps, seed 0):
   with 4 labelled tiles per class image AUROC 0.880 from them alone, 0.955
   mixed (painted alone 0.862); with all 66, 0.992 alone, 0.987 mixed.
   Pasting the labelled defects onto other good tiles as well was tried and
   dropped: 0.932-0.940 with 4 per class, 0.942-0.972 with all.
4. Export: one ONNX graph — the filter bank, then the network (exported by
   torch, opset 17) run on the cells as they are and flipped up-down,
   left-right and both (the maps flipped back, the four answers averaged) —
   with `anomaly_map` [N,1,H,W] (the cell logits, resized
   to the input) and `pred_score` [N] (the image logit), for the `anomaly`
   adapter. Logits, not probabilities, so that clear defects do not all tie
   at 1.0 and the thresholds are never out of reach. Tried and dropped, from
   good parts alone: two networks (each its own painted defects, weights and
   batches) averaged, with two of the flips each so that a part costs the
   same: on the validation split (600 steps, seeds 0-2) image AUROC 0.869
   against 0.864, on the test batches 0.921 against 0.921, for twice the
   teaching time. Scoring the image by the map's largest cells instead of the
   image head, or beside it, lowered validation AUROC (0.73-0.87).
5. Thresholds from held-back good images at the target false-reject rate
   (`thresholds.empirical_calibration`, as `lineinspect retune` sets them): the image
   threshold from their scores, the pixel threshold from their maps' largest
   values. Look at the held-back parts that score highest (the card gives
   their maximum): on the magnetic tiles the top one shows a dark pit. A part whose image
   score reaches its threshold fails even where no map pixel reaches the
   pixel threshold (the adapter reports it at the map's peak).

Needs torch (the `train` extra) to teach; the model needs only onnxruntime.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from lineinspect.core.modelcard import CardRuntime, InputSpec, ModelCard
from lineinspect.offline.datasets import find_defects, read_labelled
from lineinspect.offline.thresholds import empirical_calibration
from lineinspect.teach.common import (
    OPSET,
    TeachOptions,
    check_options,
    good_tensors,
    input_tensor,
    load_torch,
    open_session,
    run_batches,
    score_held_back,
    split_holdout,
    train_network,
    write_anomaly_card,
)
from lineinspect.teach.filter_bank import GraphParts
from lineinspect.teach.good_folder import TeachError
from lineinspect.teach.painted import paint_defect, texture_grain
from lineinspect.teach.patchknn import CELL_PX, FEATURE_COUNT, features_model, patch_features

METHOD = "filter-bank network v2"
FEATURES = "patch_features"
BATCH = 16
# Position (y, x) is the last two feature channels: a flip moves the look of a cell, not the grid.
LOOK_CHANNELS = FEATURE_COUNT - 2
DILATIONS = (1, 2, 4, 8, 1)
IMAGE_LOSS_WEIGHT = 0.5
# The flips (tensor dims of the cell grid) averaged at run time, besides the image as it is: on the
# tiles' validation split (learn exp0-1, measure exp2) they lifted image AUROC by 0.015-0.03.
TEST_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))
# Unsupervised: painted images per good training image (each painted once, up front; 8 did better
# than 4 on the magnetic tiles), at most PAINTED_MAX in all so that memory stays bounded (each is
# 16 feature maps of the input's cells: 0.26 MB at 256x256).
PAINTED_PER_GOOD = 8
PAINTED_MAX = 2500
# With n labelled defective images, labelled ones make n / (n + LABELS_BALANCE) of the defective draws,
# painted ones the rest (module docstring, 3.).
LABELS_BALANCE = 25


@dataclass(frozen=True, slots=True)
class FeatNetOptions:
    """steps: training batches of 16 images. channels: the network's width. threads: torch CPU threads."""

    teach: TeachOptions
    steps: int = 1500
    channels: int = 32
    threads: int = 2


@dataclass(frozen=True, slots=True)
class _Examples:
    """Defective training images as features: (N, F, h, w) float32, cell masks (N, h, w) float32, whether each
    mask is known, and each image's share of the draws (N,) summing to 1 (None: all drawn alike)."""

    features: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    draw: np.ndarray | None = None


def labelled_share(labelled_images: int) -> float:
    """The labelled images' share of the defective draws: n / (n + LABELS_BALANCE)."""
    return labelled_images / (labelled_images + LABELS_BALANCE)


def _mixed(labelled: _Examples, painted: _Examples) -> _Examples:
    """One pool: the labelled examples with `labelled_share` of the draws, the painted ones the rest."""
    share = labelled_share(len(labelled.features))
    draws = [
        np.full(len(pool.features), part / len(pool.features))
        for pool, part in ((labelled, share), (painted, 1 - share))
    ]
    return _Examples(
        np.concatenate([labelled.features, painted.features]),
        np.concatenate([labelled.masks, painted.masks]),
        np.concatenate([labelled.has_mask, painted.has_mask]),
        np.concatenate(draws),
    )


def teach_featnet(
    good_images: Sequence[Path], defects: Path | None, out_dir: Path, options: FeatNetOptions
) -> ModelCard:
    """Train, calibrate and export model.onnx + model.yaml into out_dir; return the card."""
    teach = options.teach
    torch = load_torch("featnet", "stats or patchknn", seed=teach.seed, threads=options.threads)
    check_options(teach, len(good_images))
    if teach.width % CELL_PX or teach.height % CELL_PX or min(teach.width, teach.height) < 64:
        raise TeachError(
            f"--size {teach.width}x{teach.height}: --method featnet needs both sides multiples of {CELL_PX} "
            "and at least 64 px"
        )
    if options.steps < 1:
        raise TeachError(f"--steps {options.steps}: train for at least one step (default 1500)")
    started = time.monotonic_ns()
    rng = np.random.default_rng(teach.seed)
    spec = InputSpec(width=teach.width, height=teach.height, color="GRAY", layout="NCHW", resize="stretch")

    tensors, _ = good_tensors(good_images, spec)
    holdout, train = split_holdout(len(tensors), teach.holdout_fraction, rng)
    parts = GraphParts()
    feature_name = patch_features(parts, "input", spec)
    bank = open_session(features_model(parts, spec, feature_name), options.threads)
    good = _features(bank, tensors[train], "features of good parts", teach.progress)
    cells = good.shape[-2:]
    grain = texture_grain(tensors[train][:, 0])
    painted = _painted_defects(bank, tensors[train], grain, rng, cells, teach.progress)
    labelled = None if defects is None else _labelled_defects(bank, defects, spec, cells, teach.progress)
    bad = painted if labelled is None else _mixed(labelled, painted)
    labelled_images = 0 if labelled is None else len(labelled.features)

    net = _network(torch, good, options.channels)
    _train(torch, net, good, bad, options, rng)

    model = _export(torch, net, parts, spec, feature_name)
    scores, maxima = score_held_back(model, tensors[holdout], options.threads)
    supervised = labelled is not None
    taught_from = f"{len(painted.features)} painted defects"
    if supervised:
        taught_from = f"{labelled_images} labelled defective images, {taught_from}"
    return write_anomaly_card(
        out_dir,
        teach,
        model=model,
        method=METHOD,
        summary=f"Defect model taught from {len(tensors)} good images and {taught_from}",
        spec=spec,
        # Empirical levels, no normal fit or margin: logits of good parts are far from normal (a long
        # tail towards the few that look a little like a defect), and a margin measured in logits
        # would put the threshold out of reach of real defects.
        calibration=empirical_calibration(scores, maxima, teach.target_false_reject),
        held_back_scores=scores,
        images_learned=len(train),
        started_ns=started,
        good_images=good_images,
        runtime=CardRuntime(onnxruntime_nchwc=False, nchwc_after=feature_name),
        details={
            "defect_images_learned": labelled_images,
            "supervised": supervised,
            "painted_defects": len(painted.features),
            # The surface's grain found in the good images (degrees from the x axis), which half the painted
            # defects follow; None: no direction dominates.
            "surface_grain_deg": None if grain is None else round(float(np.degrees(grain)) % 180, 1),
            "labelled_share_of_defect_draws": round(labelled_share(labelled_images), 4),
            "defect_images_without_mask": 0 if labelled is None else int((~labelled.has_mask).sum()),
            "steps": options.steps,
            "batch": BATCH,
            "channels": options.channels,
            "threads": options.threads,
        },
    )


def _features(bank: ort.InferenceSession, tensors: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    """(M, FEATURE_COUNT, h, w) float32 cell features of input tensors (M, 1, H, W); bank: the filter bank alone."""
    output = bank.get_outputs()[0].name
    return np.concatenate(list(run_batches(bank, output, tensors, desc, progress))).astype(np.float32)


def _cell_mask(mask: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """(H, W) 0/1 at the model input → (h, w): a cell is defective when any of its pixels is."""
    h, w = cells
    return mask.reshape(h, CELL_PX, w, CELL_PX).max(axis=(1, 3)).astype(np.float32)


def _labelled_defects(
    bank: ort.InferenceSession, folder: Path, spec: InputSpec, cells: tuple[int, int], progress: bool
) -> _Examples:
    """The labelled defective images of folder as examples."""
    tensors, masks, known = [], [], []
    for item in find_defects(folder):
        image, mask = read_labelled(item)
        tensors.append(input_tensor(image, spec))
        known.append(mask is not None)
        if mask is None:
            masks.append(np.zeros(cells, np.float32))
        else:
            resized = cv2.resize(mask.astype(np.uint8), (spec.width, spec.height), interpolation=cv2.INTER_NEAREST)
            masks.append(_cell_mask(resized, cells))
    if len(tensors) < 2:
        raise TeachError(f"--defects {folder}: {len(tensors)} defective image(s); give at least 2 (dozens work best)")
    features = _features(bank, np.stack(tensors), "features of defective parts", progress)
    return _Examples(features, np.stack(masks), np.array(known))


def _painted_defects(
    bank: ort.InferenceSession,
    tensors: np.ndarray,
    grain: float | None,
    rng: np.random.Generator,
    cells: tuple[int, int],
    progress: bool,
) -> _Examples:
    painted, masks = [], []
    for _ in range(min(PAINTED_PER_GOOD * len(tensors), PAINTED_MAX)):
        image = tensors[int(rng.integers(len(tensors)))][0] * 255.0
        other = tensors[int(rng.integers(len(tensors)))][0] * 255.0
        mask = np.zeros_like(image)
        for _ in range(int(rng.integers(1, 3))):
            image, one = paint_defect(rng, image, other, grain)
            mask = np.maximum(mask, one)
        painted.append(np.clip(image, 0, 255)[None] / 255.0)
        masks.append(_cell_mask(mask, cells))
    keep = [i for i, m in enumerate(masks) if m.any()]  # a paint job too faint to see is no defect
    features = _features(bank, np.stack([painted[i] for i in keep]).astype(np.float32), "painted defects", progress)
    return _Examples(features, np.stack([masks[i] for i in keep]), np.ones(len(keep), bool))


def _network(torch: Any, good: np.ndarray, channels: int) -> Any:
    nn = torch.nn
    mean = torch.from_numpy(good.mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1).astype(np.float32))
    inv_std = torch.from_numpy(
        (1.0 / np.maximum(good.std(axis=(0, 2, 3)), 1e-4)).reshape(1, -1, 1, 1).astype(np.float32)
    )

    def layer(width: int, dilation: int) -> Any:
        return nn.Sequential(
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    class FeatNet(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", inv_std)
            self.body = nn.Sequential(
                nn.Conv2d(FEATURE_COUNT, channels, 1), nn.ReLU(inplace=True), *(layer(channels, d) for d in DILATIONS)
            )
            self.cell_head = nn.Conv2d(channels, 1, 1)
            self.image_head = nn.Linear(2 * channels + 2, 1)

        def forward(self, features: Any) -> tuple[Any, Any]:
            x = self.body((features - self.mean) * self.inv_std)
            cell_logit = self.cell_head(x)
            prob = torch.sigmoid(cell_logit)
            pooled = torch.cat(
                [x.mean(dim=(2, 3)), x.amax(dim=(2, 3)), prob.mean(dim=(2, 3)), prob.amax(dim=(2, 3))], 1
            )
            return cell_logit, self.image_head(pooled)[:, 0]

    return FeatNet()


def _train(
    torch: Any, net: Any, good: np.ndarray, bad: _Examples, options: FeatNetOptions, rng: np.random.Generator
) -> None:
    f = torch.nn.functional
    zero_mask = np.zeros(good.shape[-2:], np.float32)
    # A pool drawn alike (painted defects alone) takes the same random numbers as before labelled ones could
    # be mixed in, so that an unsupervised model is taught exactly as it was.
    draw = None if bad.draw is None else np.cumsum(bad.draw)

    def batch_loss() -> tuple[Any, dict[str, Any]]:
        xs, ms, ys, weights = [], [], [], []
        for _ in range(BATCH):
            if rng.random() < 0.5:
                if draw is None:
                    i = int(rng.integers(len(bad.features)))
                else:
                    i = min(int(np.searchsorted(draw, rng.random() * draw[-1], side="right")), len(draw) - 1)
                x, m, y, known = bad.features[i].copy(), bad.masks[i].copy(), 1.0, bool(bad.has_mask[i])
            else:
                x, m, y, known = good[int(rng.integers(len(good)))].copy(), zero_mask.copy(), 0.0, True
            for axis in (1, 2):  # flips move the look of the cells, never the position grid
                if rng.random() < 0.5:
                    x[:LOOK_CHANNELS] = np.flip(x[:LOOK_CHANNELS], axis=axis)
                    m = np.flip(m, axis=axis - 1)
            xs.append(x)
            ms.append(np.ascontiguousarray(m))
            ys.append(y)
            weights.append(1.0 if known else 0.0)
        cell_logit, image_logit = net(torch.from_numpy(np.stack(xs)))
        target = torch.from_numpy(np.stack(ms)[:, None])
        weight = torch.tensor(weights, dtype=torch.float32).reshape(-1, 1, 1, 1).expand_as(target)
        cell_loss = f.binary_cross_entropy_with_logits(cell_logit, target, weight=weight)
        image_loss = f.binary_cross_entropy_with_logits(image_logit, torch.tensor(ys, dtype=torch.float32))
        return cell_loss + IMAGE_LOSS_WEIGHT * image_loss, {"cells": cell_loss, "images": image_loss}

    train_network(torch, net, options.steps, 3e-3, options.teach.progress, batch_loss)


def _export(torch: Any, net: Any, parts: GraphParts, spec: InputSpec, feature_name: str) -> onnx.ModelProto:
    """The filter bank graph followed by the trained network, as one ONNX model."""
    nn = torch.nn

    class Outputs(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, features: Any) -> tuple[Any, Any]:
            # Test-time flips: the network sees the cells as taught and flipped (look channels only,
            # as in training); the maps are flipped back and the four answers averaged.
            look, place = features[:, :LOOK_CHANNELS], features[:, LOOK_CHANNELS:]
            maps, scores = [], []
            for dims in TEST_FLIPS:
                flipped = torch.cat([torch.flip(look, dims), place], 1) if dims else features
                cell_logit, image_logit = self.net(flipped)
                maps.append(torch.flip(cell_logit, dims) if dims else cell_logit)
                scores.append(image_logit)
            cell_logit = torch.stack(maps).mean(0)
            image_logit = torch.stack(scores).mean(0)
            size = (spec.height, spec.width)
            return nn.functional.interpolate(cell_logit, size=size, mode="bilinear", align_corners=False), image_logit

    h, w = spec.height // CELL_PX, spec.width // CELL_PX
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            Outputs().eval(),
            (torch.zeros(1, FEATURE_COUNT, h, w),),
            buffer,
            input_names=[FEATURES],
            output_names=["anomaly_map", "pred_score"],
            dynamic_axes={FEATURES: {0: "batch"}, "anomaly_map": {0: "batch"}, "pred_score": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    head = onnx.load_from_string(buffer.getvalue())
    head = onnx.compose.add_prefix(head, "net_", rename_inputs=False, rename_outputs=False)
    filter_bank = features_model(parts, spec, feature_name)
    head.ir_version = filter_bank.ir_version
    merged = onnx.compose.merge_models(
        filter_bank, head, io_map=[(feature_name, FEATURES)], producer_name="lineinspect teach"
    )
    merged.graph.name = "lineinspect_featnet"
    onnx.checker.check_model(merged)
    return merged
