"""Accuracy of a station recipe on generated sample parts, against the generator's ground truth.

    python bench/sample_accuracy.py                          # held-out set: 100 good + 100 defective, seed 2000
    python bench/sample_accuracy.py --samples sample_images  # the committed samples, one line per image

Runs the station's own Inspector (station.yaml, `--recipe`, its model) on
every image and counts a part as right when a good part passes and a
defective part fails. Prints the false-reject rate, the recall per defect
class, how many failed parts had a defect region overlapping the true
defect, and the model time per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lineinspect.assemble import build_inspector
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.defects import Box
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import Verdict
from lineinspect.offline.synthetic import DEFECT_CLASSES, MANIFEST_FILE, write_sample_set


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--station-dir", default=".", help="station directory (default: the current one)")
    parser.add_argument("--recipe", default="bracket", help="recipe to run (default bracket)")
    parser.add_argument("--samples", help="an existing sample folder with manifest.json; default: generate one")
    parser.add_argument("--good", type=int, default=100, help="good parts to generate (default 100)")
    parser.add_argument("--defective", type=int, default=100, help="defective parts to generate (default 100)")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the generated set (default 2000)")
    parser.add_argument("--per-image", action="store_true", help="one line per image (default for ≤ 40 images)")
    args = parser.parse_args()

    station_dir = Path(args.station_dir).resolve()
    inspector = build_inspector(station_dir, load_station(station_dir))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.samples) if args.samples else Path(tmp)
        if not args.samples:
            print(f"generating {args.good} good + {args.defective} defective parts (seed {args.seed}) …")
            write_sample_set(folder, good=args.good, defective=args.defective, seed=args.seed)
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return report(inspector, folder, manifest, args.recipe, args.per_image)


def report(inspector: Inspector, folder: Path, manifest: dict[str, Any], recipe: str, per_image: bool) -> int:
    images = manifest["images"]
    per_image = per_image or len(images) <= 40
    right = 0
    false_rejects = 0
    goods = 0
    caught: dict[str, list[bool]] = defaultdict(list)
    located = 0
    failed_defective = 0
    infer_ms = []
    for entry in images:
        image = read_image_file(str(folder / entry["file"]))
        t0 = time.monotonic_ns()
        result = inspector.inspect(Frame(image, source=entry["file"]), recipe)
        infer_ms.append((time.monotonic_ns() - t0) / 1e6)
        failed = result.verdict is not Verdict.PASS
        good = entry["label"] == "good"
        ok = failed != good
        right += ok
        if good:
            goods += 1
            false_rejects += failed
        else:
            for name in entry["classes"]:
                caught[name].append(failed)
            if failed:
                failed_defective += 1
                truth = read_image_file(str(folder / entry["mask"])) > 0
                located += any(_overlaps(f.defect.box, truth) for f in result.findings if f.counts)
        if per_image:
            expected = "fail" if not good else "pass"
            classes = ",".join(entry["classes"]) or "-"
            mark = "ok  " if ok else "WRONG"
            print(
                f"{mark} {entry['file']:<32} truth {expected:<4} ({classes:<22}) got {result.verdict.value:<9}"
                f" score {result.score if result.score is not None else float('nan'):.2f}  {result.reason}"
            )
    n = len(images)
    defective = n - goods
    print(f"\nrecipe '{recipe}', {n} images: {right}/{n} right ({100 * right / max(n, 1):.1f} %)")
    if goods:
        print(f"good parts passed: {goods - false_rejects}/{goods} (false rejects {100 * false_rejects / goods:.1f} %)")
    if defective:
        share = 100 * failed_defective / defective
        print(f"defective parts failed: {failed_defective}/{defective} ({share:.1f} %)")
        for name in DEFECT_CLASSES:
            hits = caught.get(name, [])
            if hits:
                print(f"  {name:<14} recall {sum(hits)}/{len(hits)} ({100 * sum(hits) / len(hits):.1f} %)")
        if failed_defective:
            print(f"  failed parts whose counted defect overlaps the true defect: {located}/{failed_defective}")
    print(f"inspection time per image: median {np.median(infer_ms):.1f} ms (CPU)")
    return 0 if right == n else 1


def _overlaps(box: Box, truth: np.ndarray) -> bool:
    x0, y0, x1, y1 = (round(v) for v in (box.x0, box.y0, box.x1, box.y1))
    return bool(truth[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].any())


if __name__ == "__main__":
    sys.exit(main())
