"""Undistortion's share of frame time, measured side by side in one run.

A 1920×1200 frame goes through the Inspector with models/default, with and without
a calibration, with and without a recipe ROI. Also compared, on the same frame:
fixed-point maps (what lineinspect uses) against float maps, and undistorting
the whole frame then cropping against remapping the ROI only (`undistort_region`).
Phases are interleaved over rounds; medians of per-round ratios are printed, so
a busy neighbour shifts all figures alike.

    python bench/bench_calibration.py [--model models/default] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.calibration import BoardDescription, Calibration, CalibrationFile, Intrinsics, now_utc
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe, Roi

WIDTH, HEIGHT = 1920, 1200
ROI = Roi(x=480, y=300, width=960, height=600)


def typical_calibration() -> Calibration:
    """A 1920×1200 camera with an 8 mm-class lens: noticeable barrel distortion."""
    k = [[1850.0, 0.0, 965.0], [0.0, 1850.0, 598.0], [0.0, 0.0, 1.0]]
    return Calibration(
        CalibrationFile(
            id="bench",
            camera="cam1",
            created_at=now_utc(),
            image_width=WIDTH,
            image_height=HEIGHT,
            intrinsics=Intrinsics(
                camera_matrix=k,
                distortion=[-0.18, 0.07, 0.0005, -0.0004, 0.0],
                rms_px=0.1,
                images=[],
                board=BoardDescription(kind="chessboard", cols=9, rows=7, square_mm=20.0),
            ),
        )
    )


def ms_per_call(fn: Callable[[], object], seconds: float) -> float:
    count = 0
    t0 = time.monotonic_ns()
    deadline = t0 + int(seconds * 1e9)
    while time.monotonic_ns() < deadline:
        fn()
        count += 1
    return (time.monotonic_ns() - t0) / 1e6 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per phase per round")
    args = parser.parse_args()

    model = Model.load(Path(args.model), RuntimeOptions())
    calibration = typical_calibration()
    recipes = {
        "whole": Recipe(id="whole", model=model.id),
        "roi": Recipe(id="roi", model=model.id, roi=ROI),
    }
    calibrated = Inspector({model.id: model}, recipes, "whole", {"cam1": calibration})
    plain = Inspector({model.id: model}, recipes, "whole")
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), (5, 5), 0)
    frame = Frame(image, camera_id="cam1")
    k = np.array(calibration.data.intrinsics.camera_matrix)  # type: ignore[union-attr]
    d = np.array(calibration.data.intrinsics.distortion)  # type: ignore[union-attr]
    float_maps = cv2.initUndistortRectifyMap(k, d, None, k, (WIDTH, HEIGHT), cv2.CV_32FC1)
    r = ROI

    phases: dict[str, Callable[[], object]] = {
        "frame, no calibration": lambda: plain.inspect(frame, "whole"),
        "frame, calibrated": lambda: calibrated.inspect(frame, "whole"),
        "frame+ROI, no calibration": lambda: plain.inspect(frame, "roi"),
        "frame+ROI, calibrated": lambda: calibrated.inspect(frame, "roi"),
        "undistort fixed-point": lambda: calibration.undistort(image),
        "undistort float maps": lambda: cv2.remap(image, *float_maps, cv2.INTER_LINEAR),
        "undistort then crop ROI": lambda: calibration.undistort(image)[r.y : r.y + r.height, r.x : r.x + r.width],
        "undistort ROI only": lambda: calibration.undistort_region(image, r.x, r.y, r.width, r.height),
    }
    for fn in phases.values():
        fn()  # warm-up: maps, caches, onnxruntime arenas
    times: dict[str, list[float]] = {name: [] for name in phases}
    for _ in range(args.rounds):
        for name, fn in phases.items():
            times[name].append(ms_per_call(fn, args.seconds))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    # The Inspector's own split of each frame: undistort (+ ROI crop) against the frame's total.
    shares = {}
    for recipe_id in ("whole", "roi"):
        timings = [calibrated.inspect(frame, recipe_id).timings_ms for _ in range(10 * args.rounds)]
        shares[recipe_id] = statistics.median(t["undistort_roi"] / t["total"] for t in timings)

    print(f"{WIDTH}x{HEIGHT} BGR frame, model {model.id}, {args.rounds} rounds; medians")
    for name, values in times.items():
        print(f"  {name:28} {statistics.median(values):8.2f} ms")
    print("ratios (same run):")
    print(f"  Inspector timings, undistort / total, whole frame: {shares['whole']:.3f}")
    print(f"  Inspector timings, undistort+ROI / total, ROI:     {shares['roi']:.3f}")
    print(f"  undistort share of a calibrated frame:        {ratio('undistort fixed-point', 'frame, calibrated'):.3f}")
    print(f"  calibrated / uncalibrated frame:              {ratio('frame, calibrated', 'frame, no calibration'):.3f}")
    print(f"  undistort share of a calibrated ROI frame: {ratio('undistort ROI only', 'frame+ROI, calibrated'):.3f}")
    print(
        f"  float maps / fixed-point maps:                {ratio('undistort float maps', 'undistort fixed-point'):.3f}"
    )
    print(
        f"  ROI-only remap / whole remap then crop:       {ratio('undistort ROI only', 'undistort then crop ROI'):.3f}"
    )


if __name__ == "__main__":
    main()
