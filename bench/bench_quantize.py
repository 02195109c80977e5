"""Float vs int8 (`lineinspect quantize`), side by side in one run: inferences/s and image AUROC.

    python bench/bench_quantize.py [--work build/bench-quantize] [--rounds 7] [--seconds 1.5]

1. Throughput: onnxruntime alone (one preprocessed tensor, `session.run` in a loop, as
   bench_inspection.py measures it) for the committed default model and a featnet model taught here on
   generated parts, each float model beside its int8 copy. The two run in turns, `--rounds` times for
   `--seconds` each, after a warm-up that is not counted; printed: the median inferences/s of each and
   the median int8/float ratio of the rounds with its spread (lowest–highest round).
   The default model (filter-bank statistics) has no dense layer, so `quantize` refuses its default
   `--layers dense`; it is quantized with `--layers all` to show what int8 costs there.
2. Accuracy: image AUROC of float vs int8 on the magnetic tiles (Huang, Qiu & Yuan, "Surface defect
   saliency of magnetic tile", Vis Comput 36:85-96, 2020; research use, read from ../shared, never
   copied), split by batch as bench/magnetic_tile.py does: taught on exp0-2 (stats; featnet supervised,
   fewer steps than the README's table to keep the bench short), quantized with exp0-2's good tiles as
   calibration, evaluated on exp3-4 by `lineinspect evaluate`.

Target of issue #15: int8 >= 1.5x the float model's inferences/s for <= 0.005 image AUROC lost.
With --work, taught models are kept and reused by the next run (int8 copies are made again each run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lineinspect.cli import main as lineinspect
from lineinspect.core.decode import read_image_file
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.preprocess import preprocess
from magnetic_tile import CITATION, GOOD_CLASS, link_split

ROOT = Path(__file__).resolve().parent.parent
TARGET_SPEEDUP = 1.5
TARGET_AUROC_LOSS = 0.005


def run(argv: list[str]) -> None:
    print(f"$ lineinspect {' '.join(argv)}", flush=True)
    if lineinspect(argv) != 0:
        raise SystemExit(f"lineinspect {argv[0]} failed")


def quantized(model: Path, calibration: Path, layers: str) -> Path:
    out = model.with_name(f"{model.name}-int8")
    shutil.rmtree(out, ignore_errors=True)
    run(["quantize", "--model", str(model), "--calibration", str(calibration), "--out", str(out), "--layers", layers])
    return out


def throughput(pair: tuple[Path, Path], image: Path, rounds: int, seconds: float, threads: int) -> dict[str, object]:
    """Interleaved rounds of float and int8 session.run on one preprocessed image; warm-up excluded."""
    models = [Model.load(p, RuntimeOptions(intra_op_threads=threads)) for p in pair]
    feeds = [{m.input_name: preprocess(read_image_file(str(image)), m.card.input)[0]} for m in models]
    for model, feed in zip(models, feeds, strict=True):  # warm-up, not counted
        for _ in range(20):
            model.session.run(model.output_names, feed)
    per_s: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, (model, feed) in enumerate(zip(models, feeds, strict=True)):
            done, t0 = 0, time.monotonic_ns()
            deadline = t0 + int(seconds * 1e9)
            while time.monotonic_ns() < deadline:
                model.session.run(model.output_names, feed)
                done += 1
            per_s[i].append(done / ((time.monotonic_ns() - t0) / 1e9))
    ratios = [q / f for f, q in zip(per_s[0], per_s[1], strict=True)]
    return {
        "float_per_s": statistics.median(per_s[0]),
        "int8_per_s": statistics.median(per_s[1]),
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
    }


def auroc(model: Path, folders: dict[str, object], out: Path) -> float:
    run(["evaluate", "--model", str(model), "--good", str(folders["test_good"]), "--defects",
         str(folders["test_defects"]), "--out", str(out), "--quiet"])  # fmt: skip
    value: float = json.loads((out / "report.json").read_text(encoding="utf-8"))["image_auroc"]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="the committed default model")
    parser.add_argument("--samples", default=str(ROOT / "sample_images"), help="its sample parts (good/ calibrates)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "magnetic-tile"))
    parser.add_argument("--work", help="folder for models and reports, kept between runs (default: temporary)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--tile-steps", default="300", help="featnet training steps on the tiles (README: 1500)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []

        # 1. Throughput.
        default = work / "models" / "default"
        shutil.rmtree(default, ignore_errors=True)
        shutil.copytree(args.model, default)
        calibration = Path(args.samples) / "good"
        refused = lineinspect(["quantize", "--model", str(default), "--calibration", str(calibration)])
        print(f"quantize --layers dense on the default model: exit {refused} (refused: nothing dense)")
        pairs = {"default (stats), --layers all": (default, quantized(default, calibration, "all"))}
        generated = work / "generated"
        featnet = work / "models" / "featnet"
        if not (featnet / "model.yaml").is_file():
            run(["samples", "--out", str(generated), "--good", "60", "--defective", "20", "--seed", "3000"])
            run(["teach", "--method", "featnet", "--good", str(generated / "good"), "--defects",
                 str(generated / "defective"), "--out", str(featnet), "--size", "256x256",
                 "--steps", "150"])  # fmt: skip
        pairs["featnet 256x256, --layers dense"] = (featnet, quantized(featnet, generated / "good", "dense"))
        image = sorted(calibration.glob("*.png"))[0]
        figures: dict[str, dict[str, object]] = {}
        for name, pair in pairs.items():
            figures[name] = throughput(pair, image, args.rounds, args.seconds, args.threads)

        # 2. Image AUROC on the magnetic tiles.
        data = Path(args.data)
        aurocs: dict[str, tuple[float, float]] = {}
        if (data / GOOD_CLASS / "Imgs").is_dir():
            folders = link_split(data, Path(tmp) / "split", ("exp0", "exp1", "exp2"), ("exp3", "exp4"))
            taught = {
                "stats": ["--method", "stats"],
                "featnet-supervised": ["--method", "featnet", "--size", "256x256", "--steps", args.tile_steps,
                                       "--defects", str(folders["train_defects"])],
            }  # fmt: skip
            for method, teach_args in taught.items():
                model = work / "models" / f"tile-{method}"
                if not (model / "model.yaml").is_file():
                    run(["teach", "--good", str(folders["train_good"]), "--out", str(model),
                         "--target-false-reject", "0.02", *teach_args])  # fmt: skip
                layers = "all" if method == "stats" else "dense"
                int8 = quantized(model, Path(str(folders["train_good"])), layers)
                aurocs[f"{method}, --layers {layers}"] = (
                    auroc(model, folders, work / "evaluation" / f"{method}-float"),
                    auroc(int8, folders, work / "evaluation" / f"{method}-int8"),
                )
        else:
            print(f"{data}: no magnetic-tile set; AUROC skipped", file=sys.stderr)

        print(f"\nthroughput, onnxruntime alone, {args.threads} thread(s), {args.rounds} interleaved rounds of "
              f"{args.seconds:g} s, warm-up excluded")  # fmt: skip
        print(f"{'model':34} {'float inf/s':>11} {'int8 inf/s':>11} {'int8/float':>10} {'spread':>13}")
        for name, f in figures.items():
            lines.append(
                f"{name:34} {f['float_per_s']:11.1f} {f['int8_per_s']:11.1f} {f['ratio']:9.2f}x "
                f"{f['ratio_low']:6.2f}-{f['ratio_high']:.2f}x"
            )
        print("\n".join(lines))
        if aurocs:
            print(f"\nimage AUROC, magnetic tile ({CITATION}), taught exp0-2, tested exp3-4")
            print(f"{'model':34} {'float':>7} {'int8':>7} {'loss':>7}")
            for name, (f_auroc, q_auroc) in aurocs.items():
                print(f"{name:34} {f_auroc:7.4f} {q_auroc:7.4f} {f_auroc - q_auroc:+7.4f}")
        print(f"target: int8 >= {TARGET_SPEEDUP}x float inferences/s for <= {TARGET_AUROC_LOSS} image AUROC lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
