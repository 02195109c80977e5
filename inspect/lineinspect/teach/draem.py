"""Teach a small segmentation network from scratch to find defects (`lineinspect teach --method draem`).

Method (after DRAEM's idea: learn what a defect looks like from defects made
up on good parts; Zavrtanik et al., ICCV 2021 — no code or weights of theirs
are used), chosen because a plant has many good parts and few labelled bad
ones:

1. Good images are resized to the model input and converted to gray; the
   network divides each image by its own mean brightness first (lamp drift).
2. Training pairs are made on the fly: a made-up defect (`painted.paint_defect`:
   a crack, pits, an edge chip, a blob or a large area of changed texture) is
   painted onto a random crop of a good image. The network learns to mark
   exactly the painted pixels. With `--defects`, real defective images with
   their masks are mixed in (supervised), a third of every batch.
3. The network is a 4-level U-Net (16 base channels, ~0.5 M weights) trained
   with binary cross-entropy + Dice on 2 CPU threads; no pretrained weights.
4. Export (ONNX opset 17): `anomaly_map` [N,1,H,W] = defect probability and
   `pred_score` [N] = the largest 9x9 average of the map, for the `anomaly`
   adapter. Thresholds come from held-back good images at the target
   false-reject rate, as for the stats method, kept within reach of a
   probability (`thresholds.reachable_calibration`).

Needs torch (the `train` extra); the exported model needs only onnxruntime.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineinspect.core.modelcard import MODEL_FILE, InputSpec, ModelCard
from lineinspect.offline.datasets import find_defects, read_labelled
from lineinspect.offline.thresholds import reachable_calibration
from lineinspect.teach.common import (
    OPSET,
    TeachOptions,
    check_options,
    load_torch,
    split_holdout,
    train_network,
    write_anomaly_card,
)
from lineinspect.teach.good_folder import TeachError, read_good_images
from lineinspect.teach.painted import paint_defect

METHOD = "draem-style segmentation v1"
CROP_PX = 128
BATCH = 8
SCORE_POOL_PX = 9


@dataclass(frozen=True, slots=True)
class DraemOptions:
    """epochs: passes over the training images; base_channels: U-Net width; threads: torch CPU threads."""

    teach: TeachOptions
    epochs: int = 12
    base_channels: int = 16
    threads: int = 2


def teach_draem(good_images: Sequence[Path], defects: Path | None, out_dir: Path, options: DraemOptions) -> ModelCard:
    """Train, calibrate and export model.onnx + model.yaml into out_dir; return the card."""
    teach = options.teach
    torch = load_torch("draem", "stats", seed=teach.seed, threads=options.threads)
    import onnx  # noqa: F401  # torch.onnx.export needs it; fail here with the clear message below

    check_options(teach, len(good_images))
    if teach.width < CROP_PX or teach.height < CROP_PX:
        raise TeachError(f"--size {teach.width}x{teach.height}: --method draem needs at least {CROP_PX} px a side")
    started = time.monotonic_ns()
    rng = np.random.default_rng(teach.seed)
    size = (teach.width, teach.height)
    images = np.stack([_gray(image, size) for _, image in read_good_images(list(good_images))])
    held_idx, train_idx = split_holdout(len(images), teach.holdout_fraction, rng)
    holdout, train = images[held_idx], images[train_idx]
    real = _real_defects(defects, size) if defects is not None else []

    net = _unet(torch, options.base_channels)
    steps_per_epoch = max(1, math.ceil(len(train) / BATCH))
    total_steps = steps_per_epoch * options.epochs

    def batch_loss() -> tuple[Any, dict[str, Any]]:
        x, y = _batch(rng, train, real)
        logits = net(torch.from_numpy(x))
        target = torch.from_numpy(y)
        prob = torch.sigmoid(logits)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        loss = bce + dice
        return loss, {"loss": loss}

    train_network(torch, net, total_steps, 2e-3, teach.progress, batch_loss)

    exported = _Exported(torch, net)
    scores, maxima = _held_back(torch, exported, holdout)
    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, teach.height, teach.width)
    torch.onnx.export(
        exported,
        (dummy,),
        str(out_dir / MODEL_FILE),
        input_names=["input"],
        output_names=["anomaly_map", "pred_score"],
        dynamic_axes={"input": {0: "batch"}, "anomaly_map": {0: "batch"}, "pred_score": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    supervised = f", {len(real)} real defect images" if real else ""
    return write_anomaly_card(
        out_dir,
        teach,
        method=METHOD,
        summary=f"Defect segmentation taught from {len(images)} good images{supervised}",
        spec=InputSpec(width=teach.width, height=teach.height, color="GRAY", layout="NCHW", resize="stretch"),
        calibration=reachable_calibration(scores, maxima, teach.target_false_reject),
        held_back_scores=scores,
        images_learned=len(train),
        started_ns=started,
        good_images=good_images,
        details={
            "defect_images_learned": len(real),
            "supervised": bool(real),
            "epochs": options.epochs,
            "steps": total_steps,
            "threads": options.threads,
        },
    )


def _held_back(torch: Any, exported: Any, holdout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image scores (n,), largest map values (n,)), float32 0–1, of the held-back (n, H, W) uint8 gray images."""
    with torch.no_grad():
        held = torch.from_numpy(holdout[:, None].astype(np.float32) / 255.0)
        pairs = [exported(held[i : i + BATCH]) for i in range(0, len(held), BATCH)]
    scores = np.concatenate([score.numpy() for _, score in pairs])
    maxima = np.concatenate([m.amax(dim=(1, 2, 3)).numpy() for m, _ in pairs])
    return scores, maxima


def _gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _real_defects(folder: Path, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for item in find_defects(folder):
        image, mask = read_labelled(item)
        if mask is None:
            continue  # a supervised pair needs its mask
        pairs.append((_gray(image, size), cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)))
    if not pairs:
        raise TeachError(f"--defects {folder}: no defective image has a mask; supervised training needs masks")
    return pairs


def _batch(
    rng: np.random.Generator, good: np.ndarray, real: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(x (B,1,C,C) float32 0–1, y (B,1,C,C) float32 0/1) random crops, most with a painted defect."""
    xs, ys = [], []
    h, w = good.shape[1:]
    for _ in range(BATCH):
        top, left = int(rng.integers(0, h - CROP_PX + 1)), int(rng.integers(0, w - CROP_PX + 1))
        window = (slice(top, top + CROP_PX), slice(left, left + CROP_PX))
        if real and rng.random() < 1 / 3:
            image, mask = real[int(rng.integers(len(real)))]
            ys_, xs_ = np.nonzero(mask)
            if len(ys_):  # centre the crop on the defect so that it is seen
                i = int(rng.integers(len(ys_)))
                top = int(np.clip(ys_[i] - CROP_PX // 2 + rng.integers(-20, 21), 0, h - CROP_PX))
                left = int(np.clip(xs_[i] - CROP_PX // 2 + rng.integers(-20, 21), 0, w - CROP_PX))
                window = (slice(top, top + CROP_PX), slice(left, left + CROP_PX))
            crop, target = image[window].astype(np.float32), mask[window].astype(np.float32)
        else:
            crop = good[int(rng.integers(len(good)))][window].astype(np.float32)
            target = np.zeros_like(crop)
            if rng.random() < 0.75:
                other = good[int(rng.integers(len(good)))][window].astype(np.float32)
                crop, target = paint_defect(rng, crop, other)
        crop = crop * float(rng.uniform(0.8, 1.2))  # lamp and exposure drift
        if rng.random() < 0.5:
            crop, target = crop[:, ::-1], target[:, ::-1]
        xs.append(np.clip(crop, 0, 255) / 255.0)
        ys.append(target)
    return np.stack(xs)[:, None].astype(np.float32), np.stack(ys)[:, None].astype(np.float32)


def _unet(torch: Any, base: int) -> Any:
    nn = torch.nn

    def block(cin: int, cout: int) -> Any:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            widths = [base, base * 2, base * 4, base * 8]
            self.down = nn.ModuleList([block(1, widths[0])] + [block(a, b) for a, b in itertools.pairwise(widths)])
            self.up = nn.ModuleList([block(b + a, a) for a, b in itertools.pairwise(widths)])
            self.head = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x: Any) -> Any:
            # Divide by the image's own mean brightness: lamp and exposure drift do not matter.
            x = x / (x.mean(dim=(1, 2, 3), keepdim=True) + 1e-3) - 1.0
            skips = []
            for i, level in enumerate(self.down):
                x = level(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for i in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
                x = self.up[i](torch.cat([x, skips[i]], dim=1))
            return self.head(x)

    return UNet()


class _Exported:
    """The trained net with the outputs the anomaly adapter reads; also what calibration runs."""

    def __new__(cls, torch: Any, net: Any) -> Any:
        nn = torch.nn

        class Outputs(nn.Module):  # type: ignore[name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> tuple[Any, Any]:
                anomaly_map = torch.sigmoid(self.net(x))
                pooled = nn.functional.avg_pool2d(anomaly_map, SCORE_POOL_PX, 1, SCORE_POOL_PX // 2)
                return anomaly_map, pooled.amax(dim=(1, 2, 3))

        return Outputs().eval()
