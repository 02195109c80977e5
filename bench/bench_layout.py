"""onnxruntime's NCHWc layout on and off (the card's `runtime.onnxruntime_nchwc` / `nchwc_after`), side by side.

    python bench/bench_layout.py [--model models/default] [--model PATH ...] [--rounds 8] [--seconds 1.5]

For each model: `session.run` per second on one preprocessed tensor (as bench_inspection.py's raw
figure) with onnxruntime's default layout (NCHWc on), with it off for the whole graph, and, where the
card names `nchwc_after` (or `--split` names a tensor), cut there into two sessions: the first half
without NCHWc, the second with it. The variants run in turns, `--rounds` times for `--seconds` each,
after a warm-up that is not counted; printed: the median per second of each and the median ratio to
NCHWc-on with its spread over the rounds (lowest–highest). The outputs of every variant are compared
with NCHWc-on's (largest absolute difference), so a faster layout that answers otherwise shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lineinspect.core.decode import read_image_file
from lineinspect.core.model import Model, RuntimeOptions, open_session
from lineinspect.core.modelcard import MODEL_FILE, CardRuntime, load_card
from lineinspect.core.preprocess import preprocess

ROOT = Path(__file__).resolve().parent.parent


def variants(folder: Path, split: str | None) -> dict[str, CardRuntime | None]:
    card = load_card(folder)
    after = split or (card.runtime.nchwc_after if card.runtime is not None else None)
    chosen: dict[str, CardRuntime | None] = {
        "NCHWc on (onnxruntime's default)": None,
        "NCHWc off": CardRuntime(onnxruntime_nchwc=False),
    }
    if after:
        chosen[f"split at {after}"] = CardRuntime(onnxruntime_nchwc=False, nchwc_after=after)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="model folder (repeat; default models/default)")
    parser.add_argument("--split", help="tensor to cut every given model at (default: the card's nchwc_after)")
    parser.add_argument("--image", type=Path, default=ROOT / "sample_images" / "good" / "good_000.png")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    folders = args.model or [ROOT / "models" / "default"]
    options = RuntimeOptions(intra_op_threads=args.threads)
    print(f"bench_layout: {args.rounds} rounds x {args.seconds:g} s per variant, {args.threads} intra-op thread(s)")
    for folder in folders:
        card = load_card(folder)
        models = {
            name: Model(folder, card, open_session(folder / MODEL_FILE, options, runtime))
            for name, runtime in variants(folder, args.split).items()
        }
        tensor, _ = preprocess(read_image_file(str(args.image)), card.input)
        answers = {name: model.run(tensor) for name, model in models.items()}
        reference = next(iter(answers.values()))
        rates: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds + 1):  # the first round warms up and is not counted
            for name, model in models.items():
                done, t0 = 0, time.monotonic()
                while time.monotonic() - t0 < args.seconds:
                    model.run(tensor)
                    done += 1
                rates[name].append(done / (time.monotonic() - t0))
        base = rates[next(iter(models))][1:]
        print(f"\n{folder} ({card.input.width}x{card.input.height})")
        print(f"{'layout':44} {'runs/s (median)':>15} {'÷ NCHWc on (range)':>20} {'max |Δ output|':>15}")
        for name in models:
            mine = rates[name][1:]
            ratios = [m / b for m, b in zip(mine, base, strict=True)]
            diff = max(float(np.abs(answers[name][k] - reference[k]).max()) for k in reference)
            spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
            print(f"{name:44} {statistics.median(mine):15.1f} {spread:>20} {diff:15.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
