"""The image archive, measured side by side in one run.

1. At 1.0× a line rate (the simulated line, the default model, the sample parts: half of them defective),
   one station whose archive is switched on (every fail, the first 10 passes, then 1 in 50) and off in
   alternating blocks of parts, so both see the same machine at the same time. Per part: the line's
   latency = `timings_ms.end_to_end` (trigger → decided) + the time the fanout spent handing the frame to
   the archive. The first parts after start-up and the first parts of every block (the writer's backlog
   from the block before) are not counted. Per round: p99 of several hundred parts each, archive on and
   off, their difference and ratio; the figures are the medians over the rounds, with the spread
   ((max − min) ÷ median). The archive must not add more than 1 ms to p99 nor any undecided part.
2. The archive alone: frames written per second when it is offered frames as fast as its queue takes
   them (the rate it sustains before it starts skipping), in rounds.
3. The disk budget over the archive-on blocks (a small budget, so that eviction runs): the most bytes used
   ÷ the budget.

    python bench/bench_archive.py [--rounds 3] [--round-parts 300] [--line-rate 900]
    python bench/bench_archive.py --soak-s 120      # only the disk budget over time, eviction running

A spread above 10 % means the figure is not one yet: give more --round-parts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_station import REPO, broker, p99, write_station
from lineinspect.assemble import build_archive, build_station
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.archive.archive import ImageArchive
from lineinspect.line.archive.settings import ArchiveSettings
from lineinspect.line.station import Station

BUDGET_BYTES = 20_000_000
POLL_S = 0.05


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return "n/a" if median == 0 else f"{100 * (max(values) - min(values)) / abs(median):.0f} %"


class SwitchedArchive:
    """The station's frame archive for the bench: the real one while `on`, none while off; each hand-over timed."""

    def __init__(self, archive: ImageArchive) -> None:
        self.archive = archive
        self.on = False
        self.handed_ms: dict[str, tuple[bool, float]] = {}  # result_id → (archive on, ms spent in keep)

    def keep(self, result: Result, frame: Frame) -> str | None:
        on = self.on
        t0 = time.monotonic_ns()
        ref = self.archive.keep(result, frame) if on else None
        self.handed_ms[result.result_id] = (on, (time.monotonic_ns() - t0) / 1e6)
        return ref


@dataclass
class Block:
    on: bool
    settle_parts: int
    seen: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    undecided: int = 0


class Parts:
    """A result sink: each final result's latency, counted into the block that is running."""

    def __init__(self, switched: SwitchedArchive) -> None:
        self.switched = switched
        self._lock = threading.Lock()
        self.block: Block | None = None
        self.total = 0

    def __call__(self, result: Result) -> None:
        on, handed_ms = self.switched.handed_ms.pop(result.result_id, (self.switched.on, 0.0))
        with self._lock:
            self.total += 1
            block = self.block
            if block is None:
                return
            block.seen += 1
            if block.seen <= block.settle_parts or on != block.on:
                return
            block.undecided += result.verdict is Verdict.UNDECIDED
            if "end_to_end" in result.timings_ms:
                block.latencies_ms.append(result.timings_ms["end_to_end"] + handed_ms)

    def run_block(self, block: Block, parts: int, station: Station, most: list[int]) -> Block:
        self.switched.on = block.on
        with self._lock:
            self.block = block
        deadline = time.monotonic() + 120
        while len(block.latencies_ms) + block.undecided < parts:
            if time.monotonic() > deadline:
                raise SystemExit(f"the station gave {block.seen} results in 120 s; is the line rate too high?")
            time.sleep(POLL_S)
            if block.on:
                most[0] = max(most[0], self.switched.archive.status().used_bytes)
        with self._lock:
            self.block = None
        return block


@dataclass
class Round:
    p99_ms: dict[bool, float]
    parts: dict[bool, int]
    undecided: dict[bool, float]


def side_by_side(folder: Path, args: argparse.Namespace, most: list[int]) -> list[Round]:
    config = load_station(folder)
    assert config.archive is not None
    archive = build_archive(folder, config.archive)
    switched = SwitchedArchive(archive)
    parts = Parts(switched)
    station = build_station(folder, config, archive=switched, result_sinks=[parts])
    station.start()
    rounds: list[Round] = []
    try:
        # Warm-up: start-up, the first passes the archive always keeps, caches.
        warm = Block(on=True, settle_parts=0)
        parts.run_block(warm, args.warmup_parts, station, [0])
        blocks = max(1, args.round_parts // args.block_parts)
        for n in range(args.rounds):
            done: dict[bool, list[Block]] = {True: [], False: []}
            for b in range(2 * blocks):
                on = (b + n) % 2 == 0  # each round starts with the other mode: order effects cancel out
                block = parts.run_block(Block(on=on, settle_parts=args.settle_parts), args.block_parts, station, most)
                done[on].append(block)
            latencies = {on: [ms for b in done[on] for ms in b.latencies_ms] for on in (True, False)}
            undecided = {on: sum(b.undecided for b in done[on]) for on in (True, False)}
            rounds.append(
                Round(
                    p99_ms={on: p99(latencies[on]) for on in (True, False)},
                    parts={on: len(latencies[on]) + undecided[on] for on in (True, False)},
                    undecided={on: undecided[on] / max(1, len(latencies[on]) + undecided[on]) for on in (True, False)},
                )
            )
            r = rounds[-1]
            print(
                f"round {n + 1}: archive off {r.parts[False]} parts, p99 {r.p99_ms[False]:.2f} ms; "
                f"on {r.parts[True]} parts, p99 {r.p99_ms[True]:.2f} ms; "
                f"on − off {r.p99_ms[True] - r.p99_ms[False]:+.2f} ms; "
                f"undecided off {100 * r.undecided[False]:.2f} %, on {100 * r.undecided[True]:.2f} %",
                flush=True,
            )
    finally:
        station.stop()
        archive.close()
    return rounds


def bytes_on_disk(folder: Path) -> int:
    """What the archive folder holds, as the disk sees it (SQLite's small -shm memory map is not data)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # removed by the writer meanwhile
            if path.is_file() and not path.name.endswith("-shm"):
                total += path.stat().st_size
    return total


def soak(folder: Path, seconds: float) -> int:
    """Archive on, at the line rate, for `seconds`: bytes on disk against the budget over time, eviction running."""
    config = load_station(folder)
    station = build_station(folder, config)
    assert station.archive is not None
    budget = station.archive.settings.budget_bytes
    most_disk = most_counted = samples = 0
    every_s = max(1.0, seconds / 20)
    print(f"soak: {seconds:g} s at the line rate, budget {budget} bytes (frames + index)")
    print(f"{'t s':>6} {'on disk':>11} {'of budget':>10} {'counted':>11} {'frames':>7} {'kept':>6} {'evicted':>8}")
    station.start()
    try:
        t0 = next_print = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            status = station.archive.status()
            disk = bytes_on_disk(station.archive.folder)
            most_disk, most_counted = max(most_disk, disk), max(most_counted, status.used_bytes)
            samples += 1
            if now >= next_print:
                next_print += every_s
                c = status.counters
                print(
                    f"{now - t0:6.1f} {disk:11d} {100 * disk / budget:9.1f}% {status.used_bytes:11d} "
                    f"{status.frames:7d} {c['kept']:6d} {c['evicted']:8d}",
                    flush=True,
                )
            time.sleep(POLL_S)
        final = station.archive.status()
    finally:
        station.stop()
    holds = max(most_disk, most_counted) <= budget
    print(
        f"soak: most on disk {most_disk} bytes = {100 * most_disk / budget:.1f} % of the budget (counted by the "
        f"archive: {100 * most_counted / budget:.1f} %) over {samples} samples; {final.counters['kept']} kept, "
        f"{final.counters['evicted']} evicted, {final.counters['skipped_busy']} skipped: the budget "
        + ("holds" if holds else "was EXCEEDED")
    )
    return 0 if holds else 1


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
    p.add_argument("--round-parts", type=int, default=300, help="parts counted per round, each of on and off")
    p.add_argument("--block-parts", type=int, default=30, help="parts per block before the archive is switched")
    p.add_argument("--settle-parts", type=int, default=5, help="parts not counted at the start of each block")
    p.add_argument("--warmup-parts", type=int, default=60)
    p.add_argument("--line-rate", type=float, default=900.0, help="parts/min of the simulated line (1.0×)")
    p.add_argument("--write-seconds", type=float, default=4.0, help="length of each write-rate round")
    p.add_argument("--soak-s", type=float, help="only the soak: the disk budget over this many seconds")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp, broker() as (port, _name):
        root = Path(tmp)
        sections: dict[str, object] = {
            "line": {"inspection_threads": 2, "budget_ms": 1000, "trigger_rate_parts_per_min": args.line_rate},
            "archive": {"folder": "var/archive", "budget_bytes": BUDGET_BYTES, "min_free_bytes": 0},
        }
        folder = write_station(
            root / "station",
            args.model,
            args.images,
            ["good/*.png", "defective/*.png"],
            port,
            2,
            {"acquisition": {"trigger": {"mode": "software"}}, "station_sections": sections},
        )
        if args.soak_s is not None:
            return soak(folder, args.soak_s)
        t0 = time.monotonic()
        most = [0]
        rounds = side_by_side(folder, args, most)
        frames = [read_image_file(str(f)) for f in sorted(args.images.glob("*/*.png"))[:8]]
        rates = [write_rate_round(root / f"rate{n}", frames, args.write_seconds) for n in range(args.rounds)]
    off = [r.p99_ms[False] for r in rounds]
    on = [r.p99_ms[True] for r in rounds]
    deltas = [a - b for a, b in zip(on, off, strict=True)]
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    parts = statistics.median([min(r.parts.values()) for r in rounds])
    print()
    print(
        f"at 1.0× line rate ({args.line_rate:g} parts/min), archive on vs off in alternating blocks of "
        f"{args.block_parts} parts, {args.rounds} rounds of ~{parts:.0f} counted parts each "
        f"({time.monotonic() - t0:.0f} s):"
    )
    print(
        f"  line latency p99: off {statistics.median(off):.2f} ms (spread {spread(off)}), "
        f"on {statistics.median(on):.2f} ms (spread {spread(on)})"
    )
    print(
        f"  on − off {statistics.median(deltas):+.2f} ms (rounds {', '.join(f'{d:+.2f}' for d in deltas)}); "
        f"ratio on/off {statistics.median(ratios):.3f} (spread {spread(ratios)})"
    )
    print(
        f"  undecided share: off {100 * statistics.median(r.undecided[False] for r in rounds):.2f} %, "
        f"on {100 * statistics.median(r.undecided[True] for r in rounds):.2f} %"
    )
    print(
        f"  archive writes sustained without skipping: {statistics.median(rates):.0f} frames/s (spread {spread(rates)})"
    )
    print(f"  disk budget: most used {100 * most[0] / BUDGET_BYTES:.1f} % of {BUDGET_BYTES} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
