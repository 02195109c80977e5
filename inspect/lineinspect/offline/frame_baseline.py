"""The frame baseline of a model card from a folder of good images (what `teach` and `retune` write).

`retune` calls `folder_baseline` along with its thresholds. For a card taught before frame plausibility
existed (or to refresh only the baseline after a lamp change), run it alone; it leaves the model, its
sha256 and its thresholds untouched:

    python -m lineinspect.offline.frame_baseline --model models/default --good build/teach-good/good
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lineinspect.core.clock import utc_now_iso
from lineinspect.core.modelcard import InputSpec, load_card, write_card
from lineinspect.core.plausibility import FrameBaseline, baseline_of_images
from lineinspect.errors import LineinspectError
from lineinspect.offline.datasets import find_good, read_labelled


def folder_baseline(folder: Path, spec: InputSpec) -> FrameBaseline:
    """The baseline of every good image under folder, measured at the model input's size."""
    items = find_good(folder)
    return baseline_of_images((read_labelled(item)[0] for item in items), width_px=spec.width, height_px=spec.height)


def write_baseline(model_dir: Path, good_folder: Path) -> FrameBaseline:
    """Measure the good images and write the baseline into model_dir's card (nothing else changes but `trained`)."""
    card = load_card(model_dir)
    baseline = folder_baseline(good_folder, card.input)
    card.frame_baseline = baseline
    card.trained = {
        **card.trained,
        "frame_baseline": {"date_utc": utc_now_iso("seconds"), "good_folder": str(good_folder)},
    }
    write_card(card, model_dir)
    return baseline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineinspect.offline.frame_baseline", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model folder (model.onnx + model.yaml)")
    parser.add_argument("--good", type=Path, required=True, help="folder of images of good parts")
    args = parser.parse_args(argv)
    try:
        baseline = write_baseline(args.model, args.good)
    except LineinspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = baseline.limits().model_dump(exclude_none=True)
    print(f"{args.model}: frame baseline from {baseline.images} good images; taught limits {limits}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
