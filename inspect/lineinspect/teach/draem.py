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
   false-reject rate, as for the stats method (`anomaly.calibrate_thresholds`).

Needs torch (the `train` extra); the exported model needs only onnxruntime.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lineinspect.core.modelcard import MODEL_FILE, AnomalyCalibration, InputSpec, ModelCard
from lineinspect.offline.datasets import find_defects, read_labelled
from lineinspect.offline.retune import level_for
from lineinspect.teach.anomaly import _check_options, calibrate_thresholds, split_holdout
from lineinspect.teach.card import write_anomaly_card
from lineinspect.teach.good_folder import TeachError, read_good_images
from lineinspect.teach.painted import paint_defect

METHOD = "draem-style segmentation v1"
CROP_PX = 128
BATCH = 8
SCORE_POOL_PX = 9
OPSET = 17


@dataclass(frozen=True, slots=True)
class DraemOptions:
    """As TeachOptions; epochs: passes over the training images; base_channels: U-Net width."""

    name: str
    width: int = 256
    height: int = 256
    target_false_reject: float = 0.005
    holdout_fraction: float = 0.2
    seed: int = 0
    epochs: int = 12
    base_channels: int = 16
    threads: int = 2
    progress: bool = True
    description: str = ""


def teach_draem(good_images: Sequence[Path], defects: Path | None, out_dir: Path, options: DraemOptions) -> ModelCard:
    """Train, calibrate and export model.onnx + model.yaml into out_dir; return the card."""
    try:
        import torch
    except ImportError:
        raise TeachError(
            "--method draem needs torch, which the service does not: pip install 'lineinspect[train]' "
            "(or use --method stats)"
        ) from None
    import onnx  # noqa: F401  # torch.onnx.export needs it; fail here with the clear message below

    _check_options(options, len(good_images))  # type: ignore[arg-type]
    if options.width < CROP_PX or options.height < CROP_PX:
        raise TeachError(f"--size {options.width}x{options.height}: --method draem needs at least {CROP_PX} px a side")
    started = time.monotonic_ns()
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    rng = np.random.default_rng(options.seed)
    size = (options.width, options.height)
    images = np.stack([_gray(image, size) for _, image in read_good_images(list(good_images))])
    held_idx, train_idx = split_holdout(len(images), options.holdout_fraction, rng)
    holdout, train = images[held_idx], images[train_idx]
    real = _real_defects(defects, size) if defects is not None else []

    net = _unet(torch, options.base_channels)
    steps_per_epoch = max(1, math.ceil(len(train) / BATCH))
    total_steps = steps_per_epoch * options.epochs
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=total_steps)
    net.train()
    # No tqdm object at all when progress is off (a disabled bar keeps tqdm's monitor thread alive).
    with tqdm(total=total_steps, desc="training", unit="step") if options.progress else nullcontext() as bar:
        for _ in range(total_steps):
            x, y = _batch(rng, train, real)
            logits = net(torch.from_numpy(x))
            target = torch.from_numpy(y)
            prob = torch.sigmoid(logits)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            loss = bce + dice
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    net.eval()

    exported = _Exported(torch, net)
    with torch.no_grad():
        held = torch.from_numpy(holdout[:, None].astype(np.float32) / 255.0)
        scores = np.concatenate([exported(held[i : i + BATCH])[1].numpy() for i in range(0, len(held), BATCH)])
    calibration = calibrate_thresholds(scores, options.target_false_reject)
    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, options.height, options.width)
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
    card = write_anomaly_card(
        out_dir,
        name=options.name,
        description=options.description
        or f"Defect segmentation taught from {len(images)} good images{supervised} by lineinspect teach ({METHOD}).",
        method=METHOD,
        spec=InputSpec(width=options.width, height=options.height, color="GRAY", layout="NCHW", resize="stretch"),
        calibration=_reachable(torch, exported, holdout, calibration, options.target_false_reject),
        held_back_scores=scores,
        target_false_reject=options.target_false_reject,
        started_ns=started,
        counts={
            "images": len(images),
            "images_learned": len(train),
            "images_held_back": len(holdout),
            "defect_images_learned": len(real),
        },
        details={"supervised": bool(real), "epochs": options.epochs, "steps": total_steps, "threads": options.threads},
    )
    return card


def _reachable(
    torch: Any, exported: Any, holdout: np.ndarray, calibration: AnomalyCalibration, target_false_reject: float
) -> AnomalyCalibration:
    """Thresholds this network can reach, keeping the target false-reject rate on the held-back parts.

    Its map and score are probabilities (at most 1), so the shared rule's margin above the
    held-back scores can land at 1 or more: such a model could never reject a part. Then the
    image threshold is the empirical level (`retune.level_for`). The station rejects a part for
    any map pixel at or above the pixel threshold, and a pixel of the map can exceed the pooled
    image score, so the pixel threshold is the same level taken over the held-back parts'
    largest map values (never below the image threshold).
    """
    with torch.no_grad():
        held = torch.from_numpy(holdout[:, None].astype(np.float32) / 255.0)
        pairs = [exported(held[i : i + BATCH]) for i in range(0, len(held), BATCH)]
    scores = np.concatenate([score.numpy() for _, score in pairs]).astype(np.float64)
    maxima = np.concatenate([m.amax(dim=(1, 2, 3)).numpy() for m, _ in pairs]).astype(np.float64)
    image = calibration.image_threshold
    if image >= 1.0:
        image = level_for(scores, target_false_reject)[0]
    pixel = max(image, level_for(maxima, target_false_reject)[0])
    low = min(float(np.median(scores)), image - 1e-6)
    return AnomalyCalibration(
        image_threshold=image, pixel_threshold=pixel, score_min=low, score_max=max(2 * image - low, image + 1e-6)
    )


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
