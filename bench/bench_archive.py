"""The image archive, measured side by side in one run.

1. At 1.0× a line rate (the simulated line, the default model, the sample parts: half of them defective),
   archive on (every fail, the first 10 passes, then 1 in 50) and off, in interleaved rounds: end-to-end
   p99 (trigger → result in the fanout, `timings_ms.end_to_end`) and the undecided share. The archive
   must not add more than 1 ms to p99 nor any undecided part.
2. The archive alone: frames written per second when it is offered frames as fast as its queue takes
   them (the rate it sustains before it starts skipping), in rounds.
3. The disk budget over the archive-on rounds with a small budget: the most bytes used ÷ the budget.

    python bench/bench_archive.py [--rounds 3] [--seconds 20] [--line-rate 120]

Each figure is printed with its spread over the rounds ((max − min) ÷ median); above 10 % it is not a
figure yet: run longer rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_station import REPO, broker, p99, write_station
from lineinspect.assemble import build_station
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.archive.archive import ImageArchive
from lineinspect.line.archive.settings import ArchiveSettings

BUDGET_BYTES = 20_000_000


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return "n/a" if median == 0 else f"{100 * (max(values) - min(values)) / abs(median):.0f} %"


def line_round(folder: Path, seconds: float) -> tuple[list[float], int, int, int]:
    """(end-to-end ms of every part, parts, undecided parts, most archive bytes used)."""
    results: list[Result] = []
    station = build_station(folder, load_station(folder), result_sinks=[results.append])
    most = 0
    station.start()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.2)
            if station.archive is not None:
                most = max(most, station.archive.status().used_bytes)
        assert station.line is not None
        station.line.stop()
        time.sleep(1.0)
    finally:
        station.stop()
    e2e = [r.timings_ms["end_to_end"] for r in results if "end_to_end" in r.timings_ms]
    undecided = sum(r.verdict is Verdict.UNDECIDED for r in results)
    return e2e, len(results), undecided, most


def write_rate_round(folder: Path, frames: list[np.ndarray], seconds: float) -> float:
    settings = ArchiveSettings(folder=folder, min_free_bytes=0, budget_bytes=BUDGET_BYTES, queue_frames=32)
    with ImageArchive(settings, folder=folder) as archive:
        offered = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if archive.status().queue_depth >= settings.queue_frames - 1:
                time.sleep(0.0005)
                continue
            frame = Frame(image=frames[offered % len(frames)], camera_id="cam")
            # Undecided parts are kept like fails: every offered frame is one the archive wants.
            archive.keep(Result.undecided(None, UndecidedKind.INFERENCE, "bench", frame=frame), frame)
            offered += 1
        archive.flush(timeout_s=30)
        status = archive.status()
        elapsed = time.monotonic() - t0
        if status.counters["skipped_busy"]:
            print(f"  (write round: {status.counters['skipped_busy']} skipped)")
        return status.counters["kept"] / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--images", type=Path, default=REPO / "sample_images")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--line-rate", type=float, default=120.0, help="parts/min of the simulated line (1.0×)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp, broker() as (port, _name):
        root = Path(tmp)
        folders = {}
        for label, archive in (("off", None), ("on", {"folder": "var/archive", "budget_bytes": BUDGET_BYTES})):
            sections: dict[str, object] = {
                "line": {"inspection_threads": 2, "budget_ms": 1000, "trigger_rate_parts_per_min": args.line_rate}
            }
            if archive is not None:
                sections["archive"] = {**archive, "min_free_bytes": 0}
            folders[label] = write_station(
                root / label,
                args.model,
                args.images,
                ["good/*.png", "defective/*.png"],
                port,
                2,
                {"acquisition": {"trigger": {"mode": "software"}}, "station_sections": sections},
            )
        p99s: dict[str, list[float]] = {"off": [], "on": []}
        undecided: dict[str, list[float]] = {"off": [], "on": []}
        budget_use: list[float] = []
        for n in range(args.rounds):
            for label in ("off", "on"):
                e2e, parts, und, most = line_round(folders[label], args.seconds)
                p99s[label].append(p99(e2e))
                undecided[label].append(und / max(1, parts))
                if label == "on":
                    budget_use.append(most / BUDGET_BYTES)
                print(f"round {n + 1} archive {label}: {parts} parts, p99 {p99(e2e):.1f} ms, {und} undecided")
        frames = [read_image_file(str(f)) for f in sorted(args.images.glob("*/*.png"))[:8]]
        rates = [write_rate_round(root / f"rate{n}", frames, min(args.seconds, 10.0)) for n in range(args.rounds)]
    deltas = [on - off for on, off in zip(p99s["on"], p99s["off"], strict=True)]
    ratios = [on / off for on, off in zip(p99s["on"], p99s["off"], strict=True)]
    print()
    print(
        f"at 1.0× line rate ({args.line_rate:g} parts/min), archive on vs off, "
        f"{args.rounds} rounds of {args.seconds:g} s:"
    )
    print(
        f"  end-to-end p99: off {statistics.median(p99s['off']):.1f} ms (spread {spread(p99s['off'])}), "
        f"on {statistics.median(p99s['on']):.1f} ms (spread {spread(p99s['on'])}); "
        f"on − off {statistics.median(deltas):+.2f} ms, ratio {statistics.median(ratios):.3f}"
    )
    print(
        f"  undecided share: off {100 * statistics.median(undecided['off']):.2f} %, "
        f"on {100 * statistics.median(undecided['on']):.2f} %"
    )
    print(
        f"  archive writes sustained without skipping: {statistics.median(rates):.0f} frames/s (spread {spread(rates)})"
    )
    print(f"  disk budget: most used {100 * max(budget_use):.1f} % of {BUDGET_BYTES} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
