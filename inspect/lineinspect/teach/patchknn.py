"""Teach a patch-memory anomaly model from good images (`lineinspect teach --method patchknn`).

Method ("patch nearest neighbour"), chosen for parts that do NOT sit at the
same place in every image (loose tiles, castings on a belt): a patch is a
defect when no patch of any good image looks like it, wherever that was.

1. Every image is read as gray, stretched to the model input (256x256 for
   the magnetic tiles) and divided by its mean brightness (lamp drift).
2. A fixed filter bank (`patch_features`; Gaussians written into the graph,
   nothing learned or downloaded) is taken over 4x4 pixel cells: brightness
   at σ 2 and 8, a difference of Gaussians (dents, uneven areas), x/y
   gradient energy, local standard deviation and fine-detail energy
   (texture) are averaged over the cell; dark and bright blobs, lines across
   the grinding marks (Hessian eigenvalues at σ 1.5 and 3) and thin dark
   lines (fine DoG, cracks) count with their strongest response in the cell,
   as such defects are small. Borders are mirrored, not
   zero-padded, so that a tile edge near the image border looks like itself.
3. The cell's place in the image is added (y, x in −1…1) with a small weight
   (`position_weight`): tiles are not aligned, but their edges and glare lie
   near the image's edges, and comparing a patch mostly with good patches from
   about the same region lifted image AUROC on the tiles (a 120-image subset)
   from 0.62 (weight 0: fully translation invariant) to 0.70 (8) and 0.72 (16).
   Their borders (dark background, glare) gave most false alarms; ignoring a
   16 px band (`ignore_border_px`) took the subset to 0.80; on the full batch
   split, weight 32 and a 24 px band give 0.80 (bench/magnetic_tile.py).
4. The patches of the good images are standardised (global mean and std per
   number) and thinned to a memory bank by greedy k-centre selection (a
   coreset: every good patch has a bank patch close to it), stored in the
   graph in float16.
5. At run time each patch's score is its distance to the nearest bank patch,
   computed in the graph as ||x||² − 2 x·M + ||M||² (one MatMul and a
   ReduceMin); the map is smoothed (σ 1/32 of the shorter side) and resized to the input; the
   image score is the map's maximum. Both raw (outputs `anomaly_map`
   [1,1,H,W] and `pred_score` [1]).
6. Thresholds come from held-back good images exactly as for the statistics
   method (`thresholds.calibrate_thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from lineinspect.teach.filter_bank import GraphParts
from lineinspect.teach.good_folder import TeachError

METHOD = "patch nearest neighbour v1"
GRAPH_NAME = "lineinspect_patchknn"
CELL_PX = 4
# Per cell: 7 averaged (brightness σ2 and σ8, DoG σ4−σ8, x/y gradient energy, local std σ4,
# fine-detail energy), 7 strongest responses (`_blobs` at σ 1.5 and 3, dark thin line), and
# the cell's position (y, x).
FEATURE_COUNT = 7 + 7 + 2
PAD_PX = 3 * 8 + 2  # the widest blur's radius (σ 8) and a derivative's, mirrored at the border
# The map is smoothed over 1/32 of the input's shorter side (2 cells at 256 px), at least 1 cell.
MAP_SIGMA_OF_SIDE = 1 / 32


@dataclass(frozen=True, slots=True)
class PatchOptions:
    """bank_size: patches kept in memory. sample_patches: good patches the bank is chosen from.
    position_weight: how much a patch's place in the image counts against its look (0: not at all).
    ignore_border_px: a band of the model input along its edges that is never called defective.
    """

    teach: TeachOptions
    bank_size: int = 2048
    sample_patches: int = 200_000
    position_weight: float = 1.0
    ignore_border_px: int = 0


def teach_patchknn(good_images: Sequence[Path], out_dir: Path, options: PatchOptions) -> ModelCard:
    """Build model.onnx + model.yaml in out_dir from images of good parts; return the card."""
    teach = options.teach
    check_options(teach, len(good_images))
    if options.bank_size < 16:
        raise TeachError(f"--bank-size {options.bank_size}: keep at least 16 patches")
    spec = InputSpec(width=teach.width, height=teach.height, color="GRAY", layout="NCHW", resize="stretch")

    def learn(train: np.ndarray, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, Any]]:
        patches = good_patches(train, spec, teach.progress)
        mean, std, bank = memory_bank(patches, options, rng)
        model = patchknn_graph(spec, mean, std, bank, options.ignore_border_px)
        details = {
            "patches_seen": len(patches),
            "bank_size": len(bank),
            "position_weight": options.position_weight,
            "ignore_border_px": options.ignore_border_px,
        }
        return model, details

    return teach_from_good(good_images, out_dir, teach, method=METHOD, spec=spec, learn=learn)


def memory_bank(
    patches: np.ndarray, options: PatchOptions, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, bank): the standardisation folded into the graph and the chosen standardised patches."""
    mean = patches.mean(axis=0)
    std = np.maximum(patches.std(axis=0), 1e-4)
    # Position (the last two numbers) counts position_weight times as much as one appearance feature.
    std[-2:] /= max(options.position_weight, 1e-6)
    pool = patches[rng.permutation(len(patches))[: options.sample_patches]]
    standard = ((pool - mean) / std).astype(np.float32)
    return mean, std, greedy_coreset(standard, min(options.bank_size, len(standard)), rng)


def good_patches(tensors: np.ndarray, spec: InputSpec, progress: bool) -> np.ndarray:
    """(M·cells, FEATURE_COUNT) float32 patch features of every cell of every image."""
    parts = GraphParts()
    features = patch_features(parts, "input", spec)
    session = open_session(features_model(parts, spec, features))
    batches = run_batches(session, features, tensors, "learning", progress)
    return np.concatenate([values.transpose(0, 2, 3, 1).reshape(-1, FEATURE_COUNT) for values in batches])


def greedy_coreset(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-centre: each next point is the one farthest from those chosen (float32, O(size·N·D))."""
    chosen = [int(rng.integers(len(points)))]
    norms = np.einsum("ij,ij->i", points, points)
    nearest = np.full(len(points), np.inf, np.float32)
    for _ in range(size - 1):
        c = points[chosen[-1]]
        d2 = norms - 2.0 * (points @ c) + float(c @ c)
        np.minimum(nearest, d2, out=nearest)
        chosen.append(int(np.argmax(nearest)))
    return points[chosen].astype(np.float32)


def patch_features(parts: GraphParts, image: str, spec: InputSpec) -> str:
    """image [N,1,H,W] 0–1 → [N, FEATURE_COUNT, H/4, W/4] patch features (the output's name)."""
    # A lamp that ages or an exposure that drifts scales the whole image: divide it out first.
    mean = parts.op("ReduceMean", [image], axes=[1, 2, 3], keepdims=1)
    eps = parts.constant("eps", np.array(1e-3, np.float32))
    x = parts.op("Div", [image, parts.op("Add", [mean, eps])], "normalised")
    # Mirrored, not zero, borders: a tile edge near the image border must look like itself.
    pads = parts.constant("pads", np.array([0, 0, PAD_PX, PAD_PX, 0, 0, PAD_PX, PAD_PX], np.int64))
    x = parts.op("Pad", [x, pads], mode="reflect")

    g2, g4, g8 = (parts.blur(x, s, 1) for s in (2.0, 4.0, 8.0))
    g1 = parts.blur(x, 1.0, 1)
    diff = np.array([[-0.5, 0.0, 0.5]], np.float32)
    dx = parts.depthwise(g1, diff, 1)
    dy = parts.depthwise(g1, diff.T.copy(), 1)
    energy_dx = parts.op("Sqrt", [parts.blur(parts.op("Mul", [dx, dx]), 2.0, 1)])
    energy_dy = parts.op("Sqrt", [parts.blur(parts.op("Mul", [dy, dy]), 2.0, 1)])
    zero = parts.constant("zero", np.array(0.0, np.float32))
    variance = parts.op("Sub", [parts.blur(parts.op("Mul", [x, x]), 4.0, 1), parts.op("Mul", [g4, g4])])
    std4 = parts.op("Sqrt", [parts.op("Max", [variance, zero])])
    dog_fine = parts.op("Sub", [g1, parts.blur(x, 2.5, 1)])
    energy_fine = parts.op("Sqrt", [parts.blur(parts.op("Mul", [dog_fine, dog_fine]), 3.0, 1)])
    averaged = parts.op("Concat", [g2, g8, parts.op("Sub", [g4, g8]), energy_dx, energy_dy, std4, energy_fine], axis=1)
    dark_line = parts.op("Neg", [dog_fine])
    peaks = parts.op("Concat", [*_blobs(parts, x, 1.5), *_blobs(parts, x, 3.0), dark_line], axis=1)

    starts = parts.constant("starts", np.array([PAD_PX, PAD_PX], np.int64))
    ends = parts.constant("ends", np.array([PAD_PX + spec.height, PAD_PX + spec.width], np.int64))
    axes = parts.constant("axes", np.array([2, 3], np.int64))
    averaged = parts.op("Slice", [averaged, starts, ends, axes])
    peaks = parts.op("Slice", [peaks, starts, ends, axes])
    cell = [CELL_PX, CELL_PX]
    # Texture is averaged over a cell; blobs and lines are small, so their strongest response counts.
    cells = parts.op(
        "Concat",
        [
            parts.op("AveragePool", [averaged], kernel_shape=cell, strides=cell),
            parts.op("MaxPool", [peaks], kernel_shape=cell, strides=cell),
        ],
        axis=1,
    )
    # Where in the image: the tiles are not aligned, but their edges are near the image's edges,
    # so a patch is compared mostly with good patches from about the same place (see POSITION).
    h, w = spec.height // CELL_PX, spec.width // CELL_PX
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    grid = parts.constant("grid", np.stack([yy, xx])[None].astype(np.float32))
    batch = parts.op("Shape", [cells], end=1)
    shape = parts.op("Concat", [batch, parts.constant("grid_shape", np.array([2, h, w], np.int64))], axis=0)
    return parts.op("Concat", [cells, parts.op("Expand", [grid, shape])], "patch_features", axis=1)


def _blobs(parts: GraphParts, x: str, sigma: float) -> list[str]:
    """Scale-normalised Hessian eigenvalues at sigma: dark blob, bright blob, and |∂²/∂y²|.

    A blowhole is a dark blob (both eigenvalues positive); the grinding marks are vertical
    lines (one eigenvalue), so they barely move the smaller one; a crack across them shows in ∂²/∂y².
    """
    g = parts.blur(x, sigma, 1)
    second = np.array([[1.0, -2.0, 1.0]], np.float32)
    cross = np.array([[0.25, 0.0, -0.25], [0.0, 0.0, 0.0], [-0.25, 0.0, 0.25]], np.float32)
    s2 = parts.constant("sigma2", np.array(sigma * sigma, np.float32))
    half = parts.constant("half", np.array(0.5, np.float32))
    hxx = parts.op("Mul", [parts.depthwise(g, second, 1), s2])
    hyy = parts.op("Mul", [parts.depthwise(g, second.T.copy(), 1), s2])
    hxy = parts.op("Mul", [parts.depthwise(g, cross, 1), s2])
    middle = parts.op("Mul", [parts.op("Add", [hxx, hyy]), half])
    spread = parts.op("Mul", [parts.op("Sub", [hxx, hyy]), half])
    root = parts.op("Sqrt", [parts.op("Add", [parts.op("Mul", [spread, spread]), parts.op("Mul", [hxy, hxy])])])
    dark = parts.op("Sub", [middle, root])
    bright = parts.op("Neg", [parts.op("Add", [middle, root])])
    return [dark, bright, parts.op("Abs", [hyy])]


def patchknn_graph(
    spec: InputSpec,
    mean: np.ndarray,
    std: np.ndarray,
    bank: np.ndarray,
    ignore_border_px: int = 0,
) -> onnx.ModelProto:
    """input [N,1,H,W] → anomaly_map [N,1,H,W], pred_score [N] (raw distances in std units)."""
    parts = GraphParts()
    features = patch_features(parts, "input", spec)
    h, w = spec.height // CELL_PX, spec.width // CELL_PX
    shift = parts.constant("patch_mean", mean.reshape(1, -1, 1, 1).astype(np.float32))
    scale = parts.constant("patch_inv_std", (1.0 / std).reshape(1, -1, 1, 1).astype(np.float32))
    z = parts.op("Mul", [parts.op("Sub", [features, shift]), scale])
    flat = parts.op("Reshape", [z, parts.constant("flat", np.array([0, FEATURE_COUNT, -1], np.int64))])
    rows = parts.op("Transpose", [flat], perm=[0, 2, 1])  # [N, P, D]
    distance = _nearest(parts, rows, bank, "memory_bank")
    cell_map = parts.op("Reshape", [distance, parts.constant("map_shape", np.array([-1, 1, h, w], np.int64))])
    smoothed = parts.blur(cell_map, max(1.0, MAP_SIGMA_OF_SIDE * min(h, w)), 1)
    if ignore_border_px > 0:
        # A band along the image's edges scores 0 (as good as can be), in the map and the score alike.
        inside = np.zeros((1, 1, h, w), np.float32)
        m = min(round(ignore_border_px / CELL_PX), (min(h, w) - 1) // 2)
        inside[..., m : h - m, m : w - m] = 1.0
        smoothed = parts.op("Mul", [smoothed, parts.constant("inside", inside)])
    size = parts.constant("map_size", np.array([1, spec.height, spec.width], np.int64))
    sizes = parts.op("Concat", [parts.op("Shape", [smoothed], end=1), size], axis=0)
    parts.nodes.append(helper.make_node("Resize", [smoothed, "", "", sizes], ["anomaly_map"], mode="linear"))
    parts.nodes.append(helper.make_node("ReduceMax", [smoothed], ["pred_score"], axes=[1, 2, 3], keepdims=0))
    return graph_model(parts, spec, anomaly_outputs(spec), GRAPH_NAME)


def _nearest(parts: GraphParts, rows: str, bank: np.ndarray, stem: str) -> str:
    """rows [N, P, D] → [N, P, 1] Euclidean distance to the nearest bank row: ||x||² − 2 x·M + ||M||²."""
    stored = parts.constant(f"{stem}_t", np.ascontiguousarray(bank.T).astype(np.float16))
    bank_t = parts.op("Cast", [stored], to=TensorProto.FLOAT)  # [D, K]
    bank_sq = parts.constant(f"{stem}_sq", np.einsum("ij,ij->i", bank, bank).astype(np.float32)[None, None])
    two = parts.constant("two", np.array(2.0, np.float32))
    cross = parts.op("Mul", [parts.op("MatMul", [rows, bank_t]), two])
    row_sq = parts.op("ReduceSum", [parts.op("Mul", [rows, rows]), parts.constant("ax2", np.array([2], np.int64))])
    d2 = parts.op("ReduceMin", [parts.op("Sub", [bank_sq, cross])], axes=[2], keepdims=1)
    zero = parts.constant("zero_d", np.array(0.0, np.float32))
    return parts.op("Sqrt", [parts.op("Max", [parts.op("Add", [d2, row_sq]), zero])])


def features_model(parts: GraphParts, spec: InputSpec, features: str) -> onnx.ModelProto:
    """The graph collected so far, with the patch features [N, FEATURE_COUNT, H/4, W/4] as its output."""
    shape = (FEATURE_COUNT, spec.height // CELL_PX, spec.width // CELL_PX)
    return graph_model(parts, spec, {features: shape}, GRAPH_NAME)
