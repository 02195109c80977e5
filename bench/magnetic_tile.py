"""`teach` then `evaluate` on the Magnetic Tile Defect set, split by acquisition batch.

    python bench/magnetic_tile.py                            # every method, default split
    python bench/magnetic_tile.py --methods stats --data ../shared/datasets/magnetic-tile
    python bench/magnetic_tile.py --train-batches exp0,exp1 --test-batches exp2   # choosing settings
    python bench/magnetic_tile.py --methods none --curve 0,5,20 --seeds 0 --jobs 2   # the few-labels curve alone
    python bench/magnetic_tile.py --methods none --curve none --rotate --jobs 3 --teach-args '--steps 600'

Data: Y. Huang, C. Qiu, K. Yuan, "Surface defect saliency of magnetic tile",
The Visual Computer 36:85–96 (2020). Research use; the images are read where
they lie and never copied into the repository (the script links them into a
temporary folder to give `teach` and `evaluate` the folders they take).

Split by batch (file-name prefix exp0…exp4), never randomly by image: models
learn from good tiles of the training batches (teach holds part of them back
to set its thresholds) and are tested on every good and defective tile of the
test batches, which they have never seen. A supervised method also learns
from the defective tiles (with masks) of the training batches. Choose a
method's settings on the training batches alone (learn from exp0–1, measure
on exp2), so that the test batches say how a model does on a batch nobody
tuned it for; featnet's painted defects were chosen that way. exp2 alone (159
good, 64 defective tiles) cannot tell changes of about 0.01 apart over three
seeds; `--rotate` measures featnet on each training batch in turn, learnt from
the others (exp1 and exp2: exp0 holds 3 tiles, too few to measure on), for
each of `--seeds`.

Prints, per method: image AUROC, pixel AUROC, IoU, false-reject and escape
rates at the card's threshold, the escape rate where 2 % of the test's good
tiles are rejected, training seconds and model ms/image, and the exact
commands it ran.

The few-labels curve (`--curve`, default 0,5,10,20,50,all): featnet taught on
the good training tiles and k labelled defective tiles per class of the
training batches (all of a class where it has fewer; 0: unsupervised), for
each of `--seeds` (which tiles are picked, and teach's own seed), tested on
the test batches as above: image AUROC per seed, its mean and range, pixel
AUROC, the escape rate at the card's threshold and at the threshold where 2 %
of the test's good tiles are rejected (the same for every model). `--jobs 2` runs two teach
runs at once, each on its share of the cores (`teach --threads`). Published anchors for image AUROC on this set (with
ImageNet-pretrained backbones): DifferNet 0.977, PatchCore 0.979.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lineinspect.cli import main as lineinspect

CITATION = 'Huang, Qiu & Yuan, "Surface defect saliency of magnetic tile", Vis Comput 36:85-96, 2020'
GOOD_CLASS = "MT_Free"
# method → extra `teach` arguments; "supervised" methods also get --defects.
METHODS: dict[str, list[str]] = {
    "stats": ["--method", "stats"],
    "patchknn": ["--method", "patchknn", "--size", "256x256", "--position-weight", "32", "--ignore-border", "24"],
    "featnet": ["--method", "featnet", "--size", "256x256"],
    "featnet-supervised": ["--method", "featnet", "--size", "256x256"],
    "draem": ["--method", "draem"],
    "draem-supervised": ["--method", "draem"],
}
SUPERVISED = {"featnet-supervised", "draem-supervised"}
# A training batch is measured on in --rotate when it holds at least this many good and defective tiles.
FOLD_MIN_IMAGES = 20
# The false-reject rate at which escapes are compared (issue #19: escapes <= 10 % at 2 % false rejects).
COMPARED_FALSE_REJECT = 0.02


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "magnetic-tile"),
        help="the magnetic-tile folder (default ../shared/datasets/magnetic-tile from the repository)",
    )
    parser.add_argument("--train-batches", default="exp0,exp1,exp2", help="batches to learn from")
    parser.add_argument("--test-batches", default="exp3,exp4", help="batches to test on")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {list(METHODS)}")
    parser.add_argument("--work", help="folder for models and reports (default: a temporary folder)")
    parser.add_argument(
        "--target-false-reject",
        default="0.02",
        help="teach's target for every method (default 0.02: teach holds back 63 of the 317 good training tiles, "
        "too few to resolve teach's own default of 0.005, which then sits above the single highest of them)",
    )
    parser.add_argument("--teach-args", default="", help="extra arguments for every teach run, e.g. '--seed 1'")
    parser.add_argument(
        "--curve",
        default="0,5,10,20,50,all",
        help="labelled defects per class for the few-labels curve (featnet), comma-separated; 'none' to skip it",
    )
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the curve's runs, comma-separated")
    parser.add_argument("--jobs", type=int, default=1, help="curve runs at once (each its own process)")
    parser.add_argument(
        "--rotate",
        action="store_true",
        help="choosing settings: instead of the test batches, measure featnet on each training batch in turn "
        "(learnt from the others), for each of --seeds, --jobs at once; --teach-args apply (e.g. '--steps 600')",
    )
    parser.add_argument("--results", help="also write the figures, commands and timings to this JSON file")
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not (data / GOOD_CLASS / "Imgs").is_dir():
        print(f"{data}: not the magnetic-tile folder (no {GOOD_CLASS}/Imgs); give --data", file=sys.stderr)
        return 2
    methods = [m for m in args.methods.split(",") if m and m != "none"]
    curve = [] if args.curve == "none" else [c for c in args.curve.split(",") if c]
    if any(c != "all" and not c.isdigit() for c in curve):
        print(f"--curve {args.curve}: give counts per class (0, 5, …) or 'all', comma-separated", file=sys.stderr)
        return 2
    seeds = [int(x) for x in args.seeds.split(",") if x]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"--methods: unknown {unknown}; choose from {list(METHODS)}", file=sys.stderr)
        return 2
    train_batches = tuple(args.train_batches.split(","))
    test_batches = tuple(args.test_batches.split(","))
    if args.rotate and len(train_batches) < 2:
        print(f"--rotate: --train-batches {args.train_batches} is one batch; it takes two or more, each measured on "
              "in turn while featnet learns from the others", file=sys.stderr)  # fmt: skip
        return 2

    with tempfile.TemporaryDirectory(prefix="magnetic-tile-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        folders = link_split(data, Path(tmp) / "split", train_batches, test_batches)
        print(f"Magnetic tile ({CITATION})")
        print(f"train batches {train_batches}, test batches {test_batches}")
        counts_by_folder = folders["counts"]
        assert isinstance(counts_by_folder, dict)
        for name, counts in counts_by_folder.items():
            print(f"  {name:14} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        lines = []
        results: dict[str, object] = {}  # method (and "curve") → figures
        for method in methods:
            teach_args = ["--target-false-reject", args.target_false_reject, *shlex.split(args.teach_args)]
            line, figures = run_method(method, folders, work, teach_args)
            lines.append(line)
            results[method] = figures
        print()
        header = ("method", "img AUROC", "px AUROC", "IoU", "FRR", "escape", "esc@2%FR", "train s", "ms/img")
        print(f"{header[0]:18} " + " ".join(f"{h:>9}" for h in header[1:]))
        for line in lines:
            print(line)
        if lines:
            print("anchors (ImageNet-pretrained): DifferNet 0.977, PatchCore 0.979 image AUROC")
        teach_args = ["--target-false-reject", args.target_false_reject, *shlex.split(args.teach_args)]
        if curve:
            results["curve"] = few_labels_curve(folders, work, curve, seeds, teach_args, args.jobs)
        if args.rotate:
            folds = rotation_folds(data, Path(tmp) / "folds", train_batches)
            if not folds:
                print(f"--rotate: no batch of {train_batches} holds {FOLD_MIN_IMAGES} good and {FOLD_MIN_IMAGES} "
                      "defective tiles to measure on", file=sys.stderr)  # fmt: skip
                return 2
            results["rotation"] = rotation(folds, work, seeds, teach_args, args.jobs)
        if args.results:
            summary = {
                "dataset": f"Magnetic Tile Defect ({CITATION})",
                "split": {"train_batches": train_batches, "test_batches": test_batches, "images": counts_by_folder},
                "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
                "anchors_image_auroc_imagenet_pretrained": {"DifferNet": 0.977, "PatchCore": 0.979},
                "methods": results,
            }
            Path(args.results).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
            print(f"figures written to {args.results}")
    return 0


def link_split(
    data: Path, root: Path, train_batches: tuple[str, ...], test_batches: tuple[str, ...]
) -> dict[str, object]:
    """Symbolic links: train_good/, train_defects/<Class>/, test_good/, test_defects/<Class>/ (+ masks)."""
    names = ("train_good", "train_defects", "test_good", "test_defects")
    counts: dict[str, Counter[str]] = {n: Counter() for n in names}
    for class_dir in sorted(data.glob("MT_*")):
        for image in sorted((class_dir / "Imgs").glob("*.jpg")):
            batch = image.name.split("_", 1)[0]
            side = "train" if batch in train_batches else "test" if batch in test_batches else None
            if side is None:
                continue
            good = class_dir.name == GOOD_CLASS
            target = root / (f"{side}_good" if good else f"{side}_defects/{class_dir.name}")
            target.mkdir(parents=True, exist_ok=True)
            (target / image.name).symlink_to(image.resolve())
            mask = image.with_suffix(".png")
            if not good and mask.is_file():
                (target / mask.name).symlink_to(mask.resolve())
            counts[f"{side}_{'good' if good else 'defects'}"][class_dir.name.removeprefix("MT_")] += 1
    paths: dict[str, object] = {name: root / name for name in counts}
    paths["counts"] = counts
    return paths


def run_method(
    method: str, folders: dict[str, object], work: Path, teach_args: list[str]
) -> tuple[str, dict[str, object]]:
    """Teach and evaluate one method: (the table line, its figures for --results)."""
    model = work / "models" / f"magnetic-tile-{method}"
    teach = ["teach", "--good", str(folders["train_good"]), "--out", str(model), *METHODS[method], *teach_args]
    if method in SUPERVISED:
        teach += ["--defects", str(folders["train_defects"])]
    out = work / "evaluation" / method
    evaluate = [
        "evaluate", "--model", str(model), "--good", str(folders["test_good"]),
        "--defects", str(folders["test_defects"]), "--out", str(out), "--quiet",
    ]  # fmt: skip
    print(f"\n== {method}\n$ lineinspect {shlex.join(teach)}", flush=True)
    started = time.monotonic_ns()
    if lineinspect(teach) != 0:
        return f"{method:18} teach failed", {"failed": "teach", "teach": shlex.join(["lineinspect", *teach])}
    train_s = (time.monotonic_ns() - started) / 1e9
    print(f"$ lineinspect {shlex.join(evaluate)}", flush=True)
    if lineinspect(evaluate) != 0:
        failed = {"failed": "evaluate", "evaluate": shlex.join(["lineinspect", *evaluate])}
        return f"{method:18} evaluate failed", failed
    r = json.loads((out / "report.json").read_text(encoding="utf-8"))
    compared = escapes_at_false_reject(r["rows"], COMPARED_FALSE_REJECT)
    split_root = str(Path(str(folders["train_good"])).parent)

    def portable(argv: list[str]) -> str:
        """The command with the temporary folders named $SPLIT (link_split's folders) and $WORK."""
        return shlex.join(["lineinspect", *argv]).replace(split_root, "$SPLIT").replace(str(work), "$WORK")

    figures: dict[str, object] = {
        "supervised": method in SUPERVISED,
        "teach": portable(teach),
        "evaluate": portable(evaluate),
        "train_seconds": round(train_s, 1),
        **{k: r[k] for k in ("image_auroc", "pixel_auroc", "pixel_iou", "false_reject_rate", "escape_rate")},
        "escape_rate_at_2pct_false_rejects": compared,
        "confusion": r["confusion"],
        "ms_per_image": r["ms_per_image"],
        "classes": {name: {"images": c["images"], "image_auroc": c["image_auroc"], "recall": c["recall"]}
                    for name, c in r["classes"].items()},
    }  # fmt: skip
    return (
        f"{method:18} {_f(r['image_auroc']):>9} {_f(r['pixel_auroc']):>9} {_f(r['pixel_iou'], 3):>9} "
        f"{_p(r['false_reject_rate']):>9} {_p(r['escape_rate']):>9} "
        f"{_p(compared):>9} {train_s:9.1f} {r['ms_per_image']['median']:9.1f}"
    ), figures


def few_labels_curve(
    folders: dict[str, object], work: Path, curve: list[str], seeds: list[int], teach_args: list[str], jobs: int
) -> list[dict[str, object]]:
    """Teach featnet with k labelled defects per class (k in curve) for each seed, evaluate each; print the table."""
    train_defects = Path(str(folders["train_defects"]))
    largest = max(len(list(d.glob("*.jpg"))) for d in train_defects.iterdir() if d.is_dir())
    # A count no class reaches picks every labelled tile, as "all" does: taught once, shown on both lines.
    same = {k: "all" for k in curve if k != "all" and int(k) >= largest and "all" in curve}
    for k, as_k in same.items():
        print(f"  {k} per class picks every labelled tile (no class has more than {largest}): the '{as_k}' run")
    runs = [(k, seed) for k in curve if k not in same for seed in seeds]

    def one(k: str, seed: int) -> dict[str, object]:
        picked, extra = 0, []
        if k != "0":
            subset = work / "labelled" / f"{k}-seed-{seed}"
            picked = pick_defects(train_defects, subset, None if k == "all" else int(k), seed)
            extra = ["--defects", str(subset)]
        row = featnet_run(f"featnet-labels-{k}-seed-{seed}", folders, work, [*teach_args, *extra], seed, jobs)
        print(f"  featnet-labels-{k}-seed-{seed}: {picked} labelled, {row['said']}", flush=True)
        return {"per_class": k, "seed": seed, "labelled": picked, **row}

    print(f"\n== few-labels curve: featnet, {len(runs)} runs ({jobs} at a time)", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(lambda run: one(*run), runs))
    rows += [
        {**row, "per_class": k, "same_as": as_k} for k, as_k in same.items() for row in rows if row["per_class"] == as_k
    ]
    print()
    print(f"{'labels/class':>12} {'labelled':>8} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
          + f" {'mean':>7} {'range':>13} {'px AUROC':>9} {'escape':>7} {'esc@2%FR':>9}")  # fmt: skip
    for k in curve:
        mine = [row for row in rows if row["per_class"] == k and "failed" not in row]
        aurocs = [float(str(row["image_auroc"])) for row in mine]
        if not aurocs:
            print(f"{k:>12} failed")
            continue
        px = [float(str(row["pixel_auroc"])) for row in mine if row["pixel_auroc"] is not None]
        esc = [float(str(row["escape_rate"])) for row in mine if row["escape_rate"] is not None]
        compared = [float(str(x)) for row in mine if (x := row["escape_rate_at_2pct_false_rejects"]) is not None]
        labelled = sorted({int(str(row["labelled"])) for row in mine})
        px_mean = _f(statistics.mean(px) if px else None)
        escape = _p(statistics.mean(esc) if esc else None)
        spread = f"{min(aurocs):6.4f}–{max(aurocs):6.4f}"
        print(f"{k:>12} {'/'.join(map(str, labelled)):>8} " + " ".join(f"{a:8.4f}" for a in aurocs)
              + f" {statistics.mean(aurocs):7.4f} {spread:>13} {px_mean:>9} {escape:>7}"
              + f" {_p(statistics.mean(compared) if compared else None):>9}")  # fmt: skip
    return rows


def featnet_run(
    name: str, folders: dict[str, object], work: Path, teach_args: list[str], seed: int, jobs: int
) -> dict[str, object]:
    """Teach featnet on folders' good training tiles (with teach_args) and evaluate it on the test tiles, in
    processes of their own, `jobs` such runs at once; its figures, with "said": the line to print ("failed": the
    step that failed)."""
    # Runs at once share the cores: each teaches on its share of them (unless teach_args say --threads).
    threads = [] if "--threads" in teach_args else ["--threads", str(max(1, (os.cpu_count() or 2) // max(1, jobs)))]
    model = work / "models" / name
    teach = ["teach", "--method", "featnet", "--size", "256x256", "--good", str(folders["train_good"]),
             "--out", str(model), "--seed", str(seed), *threads, *teach_args]  # fmt: skip
    out = work / "evaluation" / name
    evaluate = ["evaluate", "--model", str(model), "--good", str(folders["test_good"]),
                "--defects", str(folders["test_defects"]), "--out", str(out), "--quiet"]  # fmt: skip
    started = time.monotonic()
    for argv in (teach, evaluate):
        done = subprocess.run([sys.executable, "-m", "lineinspect.cli", *argv], capture_output=True, text=True)
        if done.returncode != 0:
            return {"failed": argv[0], "said": f"{argv[0]} failed: {done.stderr.strip()[-400:]}"}
    r = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"teach": shlex.join(["lineinspect", *teach]),
            **{key: r[key] for key in ("image_auroc", "pixel_auroc", "escape_rate", "false_reject_rate")},
            "escape_rate_at_2pct_false_rejects": escapes_at_false_reject(r["rows"], COMPARED_FALSE_REJECT),
            "classes": {n: c["image_auroc"] for n, c in r["classes"].items()},
            "said": f"image AUROC {_f(r['image_auroc'])} ({time.monotonic() - started:.0f} s)"}  # fmt: skip


def rotation_folds(data: Path, root: Path, batches: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """For each training batch with FOLD_MIN_IMAGES good and defective tiles: link_split's folders that learn from
    the other batches and test on it. A batch with fewer is learnt from, never measured on (it says so)."""
    folds = {}
    for held in batches:
        fold = link_split(data, root / f"without-{held}", tuple(b for b in batches if b != held), (held,))
        counts = fold["counts"]
        assert isinstance(counts, dict)
        good, bad = sum(counts["test_good"].values()), sum(counts["test_defects"].values())
        if min(good, bad) >= FOLD_MIN_IMAGES:
            folds[held] = fold
        else:  # exp0 holds 1 good and 2 defective tiles
            print(f"  {held}: {good} good and {bad} defective tiles, too few to measure on; learnt from, not measured")
    return folds


def rotation(
    folds: dict[str, dict[str, object]], work: Path, seeds: list[int], teach_args: list[str], jobs: int
) -> list[dict[str, object]]:
    """Validation on the training batches alone (`rotation_folds`): featnet learns all but one of them and is
    measured on that one, each in turn, for each seed (len(folds) × len(seeds) runs, `jobs` at once); prints the
    table."""
    batches = tuple(folds)

    def one(held: str, seed: int) -> dict[str, object]:
        name = f"featnet-without-{held}-seed-{seed}"
        row = featnet_run(name, folds[held], work / "rotation", teach_args, seed, jobs)
        print(f"  {name}: {row['said']}", flush=True)
        return {"measured_on": held, "seed": seed, **row}

    runs = [(held, seed) for seed in seeds for held in batches]
    print(f"\n== validation by rotation: featnet, {len(runs)} runs ({jobs} at a time)", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(lambda run: one(*run), runs))
    print()
    print(f"{'seed':>6} " + " ".join(f"{held:>8}" for held in batches) + f" {'mean':>7} {'esc@2%FR':>9}")
    means = []
    for seed in seeds:
        mine = {str(r["measured_on"]): r for r in rows if r["seed"] == seed and "failed" not in r}
        aurocs = [float(str(mine[b]["image_auroc"])) if b in mine else None for b in batches]
        found = [a for a in aurocs if a is not None]
        esc = [float(str(x)) for r in mine.values() if (x := r["escape_rate_at_2pct_false_rejects"]) is not None]
        mean = statistics.mean(found) if len(found) == len(batches) else None
        if mean is not None:
            means.append(mean)
        print(f"{seed:>6} " + " ".join(f"{_f(a):>8}" for a in aurocs) + f" {_f(mean):>7}"
              + f" {_p(statistics.mean(esc) if esc else None):>9}")  # fmt: skip
    if means:
        spread = f" (seeds {min(means):.4f}–{max(means):.4f})" if len(means) > 1 else ""
        print(f"image AUROC over the folds and seeds: {statistics.mean(means):.4f}{spread}")
    return rows


def pick_defects(train_defects: Path, subset: Path, per_class: int | None, seed: int) -> int:
    """Link per_class defective images of each class (all where None or fewer), with their masks, into subset."""
    rng = random.Random(seed)
    picked = 0
    for class_dir in sorted(p for p in train_defects.iterdir() if p.is_dir()):
        images = sorted(class_dir.glob("*.jpg"))
        rng.shuffle(images)
        target = subset / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for image in images if per_class is None else images[:per_class]:
            (target / image.name).symlink_to(image.resolve())
            mask = image.with_suffix(".png")
            if mask.exists():
                (target / mask.name).symlink_to(mask.resolve())
            picked += 1
    return picked


def escapes_at_false_reject(rows: list[dict[str, object]], share: float) -> float | None:
    """The share of defective images that pass at the threshold where `share` of the test's good images are
    rejected (ranked by the report's `rank`, the score AUROC uses): escapes at a false-reject target set on the
    test batches themselves, the same for every model, whatever its own card's threshold gives there."""
    good = sorted((float(str(r["rank"])) for r in rows if r["class"] == "good"), reverse=True)
    bad = [float(str(r["rank"])) for r in rows if r["class"] != "good"]
    if not good or not bad:
        return None
    threshold = good[min(int(share * len(good)), len(good) - 1)]  # good ones above it: at most `share`
    return sum(rank <= threshold for rank in bad) / len(bad)


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
