"""The station runtime, measured side by side in one run.

1. Pipeline efficiency: station parts/s (a camera triggered as fast as the station takes parts,
   frame → inspection → outbox → MQTT PUBACK) ÷ raw onnxruntime inferences/s (session.run on one
   preprocessed tensor), same model and thread layout (as many concurrent runs as the station has
   inspection threads, the same intra-op threads). One started station per camera; each round is a
   station slice between raw slices (raw, raw one run at a time with every core — the model-alone
   figure —, station, the same two in reverse), back to back, so that a busy neighbour shifts a
   round's figures alike; a warm-up of each is not counted. The camera is `replay` (decoded frames
   from memory, as a real camera delivers them); the `folder` camera, which decodes a PNG per part,
   is the second figure. Medians and the spread (min–max) over the rounds are printed.
2. At 1.0× and 1.5× a line rate of 0.8× the measured capacity (software triggers from the simulated
   line, replay camera): the share of parts that end `undecided`, and the overhead = end-to-end p99
   (frame → result received by an MQTT subscriber, an upper bound of frame → PUBACK) − model p99
   (session.run alone, same layout, in raw slices just before and after the phase); the first second
   of each phase is a warm-up and its latencies are not counted.
3. Memory: `lineinspect run` in its own process at 1.0× the line rate for --minutes; its peak RSS and
   the slope of its RSS over the run (after a warm-up), which must stay flat.

    python bench/bench_station.py [--model models/default] [--images sample_images] [--rounds 8] [--minutes 10]

The broker is a Mosquitto started here on a free loopback port (the embedded broker if none is installed).
The load average of the machine is printed at the start and the end: figures from a busy machine vary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from lineinspect.assemble import build_station
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.preprocess import preprocess
from lineinspect.core.result import Result
from lineinspect.line.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench/site/area/line/cell/lineinspect/bench"  # the UNS path write_station gives the station
RSS_WARMUP_S = 30.0
# The stages whose p99 a line-rate phase prints beside the end-to-end figure.
LINE_STAGES = ("queue", "plausibility", "preprocess", "infer", "postprocess", "end_to_end")
WARMUP_S = 1.0  # each round's and phase's first second: caches, the broker link, the first commits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker() -> Iterator[tuple[int, str]]:
    """A loopback broker: (port, what it is)."""
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if mosquitto is None:
        with EmbeddedBroker() as embedded:
            yield embedded.port, "embedded amqtt"
        return
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    (folder / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n")
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "m.conf")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port, "mosquitto"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


class Latencies:
    """Subscribes to the results; frame capture → arrival here, per result, in ms."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.ms: list[float] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{port}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/result", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = datetime.now(UTC)
        captured = datetime.fromisoformat(json.loads(msg.payload)["captured_at"].replace("Z", "+00:00"))
        with self._lock:
            self.ms.append((now - captured).total_seconds() * 1000)

    def take(self) -> list[float]:
        with self._lock:
            out, self.ms = self.ms, []
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else float("nan")


def spread(values: list[float]) -> str:
    """`median (min–max, ±x % of the median)` of round figures."""
    mid = statistics.median(values)
    rel = (max(values) - min(values)) / 2 / mid if mid else float("nan")
    return f"{mid:.2f} ({min(values):.2f}–{max(values):.2f}, ±{rel:.0%})"


def write_station(
    folder: Path,
    model: Path,
    images: Path,
    patterns: list[str],
    port: int,
    layout: ThreadLayout,
    camera: dict[str, Any],
    *,
    backend: str = "replay",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    link = folder / "models" / "bench"
    if not link.exists():
        link.symlink_to(model.resolve())
    line = {"inspection_threads": layout.inspection_threads, **camera.pop("line", {})}
    config = {
        "station": {
            "id": "bench",
            "uns": {"enterprise": "bench", "site": "site", "area": "area", "line": "line", "cell": "cell"},
        },
        "runtime": {"intra_op_threads": layout.intra_op_threads},
        "recipes": [{"id": "bench", "model": "bench"}],
        "mqtt": {"port": port, "outbox_file": "var/outbox.sqlite", "max_inflight": 100},
        "line": line,
        **camera.pop("station_sections", {}),
    }
    (folder / "station.yaml").write_text(yaml.safe_dump(config))
    (folder / "cameras").mkdir(exist_ok=True)
    cam = {"source": {"backend": backend, "path": str(images.resolve()), "patterns": patterns}, **camera}
    (folder / "cameras" / "cam.yaml").write_text(yaml.safe_dump(cam))
    return folder


@dataclass(frozen=True)
class ThreadLayout:
    """Parts inspected at once × onnxruntime intra-op threads per inference."""

    inspection_threads: int
    intra_op_threads: int

    def __str__(self) -> str:
        return f"{self.inspection_threads} inspection thread(s) × {self.intra_op_threads} intra-op thread(s)"


def raw_round(model: Model, image: Path, streams: int, seconds: float) -> tuple[float, list[float]]:
    """session.run alone, from `streams` threads at once (as many as the station inspects parts at once):
    (runs/s, each run's ms)."""
    tensor, _ = preprocess(read_image_file(str(image)), model.card.input)
    feed = {model.input_name: tensor}
    times: list[list[float]] = [[] for _ in range(streams)]
    counting = threading.Event()
    stop = threading.Event()

    def runner(mine: list[float]) -> None:
        while not stop.is_set():
            t0 = time.monotonic_ns()
            model.session.run(model.output_names, feed)
            if counting.is_set():
                mine.append((time.monotonic_ns() - t0) / 1e6)

    threads = [threading.Thread(target=runner, args=(mine,), name="bench-raw") for mine in times]
    for thread in threads:
        thread.start()
    counting.set()
    t0 = time.monotonic()
    time.sleep(seconds)
    stop.set()
    elapsed = time.monotonic() - t0
    for thread in threads:
        thread.join()
    return sum(len(mine) for mine in times) / elapsed, [ms for mine in times for ms in mine]


class Decided:
    """A result sink of the station under test: wakes the flood when a part has its result, and keeps each
    result's stage times (ms) as the Inspector and the worker measured them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.stage_ms: dict[str, list[float]] = {}

    def __call__(self, result: Result) -> None:
        with self._cond:
            self.count += 1
            for stage, ms in result.timings_ms.items():
                self.stage_ms.setdefault(stage, []).append(ms)
            self._cond.notify()

    def wait_for_fewer(self, sent: int, outstanding: int, timeout_s: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: sent - self.count < outstanding, timeout=timeout_s)


@dataclass
class PairedRounds:
    """Rounds of one camera backend: each a raw slice and a station slice right after it (same load)."""

    raw_per_s: list[float] = field(default_factory=list)
    serial_per_s: list[float] = field(default_factory=list)
    station_per_s: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    undecided: int = 0
    writes_per_commit: float = float("nan")
    stage_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def efficiency(self) -> list[float]:
        return [s / r for s, r in zip(self.station_per_s, self.raw_per_s, strict=True)]

    @property
    def serial_efficiency(self) -> list[float]:
        return [s / r for s, r in zip(self.station_per_s, self.serial_per_s, strict=True)]


class Flood:
    """A started station, triggered as fast as it takes parts in slices: a new software trigger whenever fewer
    than inspection threads + 2 parts are without a result (so a worker never waits for a frame and no frame
    is grabbed only to be dropped). Between slices the station is idle, every part acknowledged."""

    def __init__(self, folder: Path, layout: ThreadLayout) -> None:
        self.decided = Decided()
        self.station = build_station(folder, load_station(folder), result_sinks=[self.decided])
        self.outstanding = layout.inspection_threads + 2
        self.sent = 0

    def __enter__(self) -> Flood:
        self.station.start()
        time.sleep(1.0)  # camera open, broker connected
        return self

    def __exit__(self, *exc: object) -> None:
        self.station.stop()

    def slice(self, seconds: float) -> float:
        """Results acknowledged by the broker per second while flooding for `seconds`; then drained."""
        a0, t0 = self.station.publisher.stats().acked, time.monotonic()
        while time.monotonic() - t0 < seconds:
            self.decided.wait_for_fewer(self.sent, self.outstanding, timeout_s=0.5)
            self.station.trigger("cam")
            self.sent += 1
        a1, t1 = self.station.publisher.stats().acked, time.monotonic()
        deadline = t1 + 10
        while (self.decided.count < self.sent or self.station.outbox.depth()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return (a1 - a0) / (t1 - t0)


def paired_rounds(
    folder: Path, model: Model, serial_model: Model, image: Path, layout: ThreadLayout, rounds: int, seconds: float
) -> PairedRounds:
    """`rounds` × (raw, raw one run at a time, station, raw one run at a time, raw), after a warm-up of each
    that is not counted: a busy neighbour shifts the figures of a round alike, so their ratios hold."""
    figures = PairedRounds()
    with Flood(folder, layout) as flood:
        raw_round(model, image, layout.inspection_threads, WARMUP_S)
        raw_round(serial_model, image, 1, WARMUP_S)
        flood.slice(WARMUP_S)
        c0 = flood.station.outbox.commits
        stages_from = len(flood.decided.stage_ms.get("total", []))
        for _ in range(rounds):
            # raw, one at a time, station, one at a time, raw: a load that drifts during the round shifts the
            # station slice as much as the mean of the raw slices around it.
            raw_before, times_before = raw_round(model, image, layout.inspection_threads, seconds / 2)
            serial_before = raw_round(serial_model, image, 1, seconds / 2)[0]
            figures.station_per_s.append(flood.slice(seconds))
            serial_after = raw_round(serial_model, image, 1, seconds / 2)[0]
            raw_after, times_after = raw_round(model, image, layout.inspection_threads, seconds / 2)
            figures.raw_per_s.append((raw_before + raw_after) / 2)
            figures.serial_per_s.append((serial_before + serial_after) / 2)
            figures.model_ms += times_before + times_after
        c1 = flood.station.outbox.commits
        figures.undecided = flood.station.counts.snapshot()["undecided"]
        figures.stage_ms = {stage: ms[stages_from:] for stage, ms in flood.decided.stage_ms.items()}
    if c1[0] > c0[0]:
        figures.writes_per_commit = (c1[1] - c0[1]) / (c1[0] - c0[0])
    return figures


def line_round(
    folder: Path, seconds: float, latencies: Latencies
) -> tuple[dict[str, int], list[float], dict[str, list[float]]]:
    """(part counts, frame → subscriber ms per result, the results' own stage ms after the warm-up)."""
    decided = Decided()
    station = build_station(folder, load_station(folder), result_sinks=[decided])
    station.start()
    try:
        time.sleep(WARMUP_S)
        latencies.take()  # the warm-up's parts are counted below, their latencies are not
        warm = {stage: len(ms) for stage, ms in decided.stage_ms.items()}
        time.sleep(seconds)
        assert station.line is not None
        station.line.stop()
        deadline = time.monotonic() + 10
        while station.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        station.stop()
    stages = {stage: ms[warm.get(stage, 0) :] for stage, ms in decided.stage_ms.items()}
    return station.counts.snapshot(), latencies.take(), stages


def rss_run(folder: Path, minutes: float) -> tuple[float, float, list[tuple[float, float]]]:
    """`lineinspect run` in its own process; (peak RSS MiB, slope MiB/min after warm-up, samples)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'inspect'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "lineinspect.cli", "run", "--station-dir", str(folder), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    samples: list[tuple[float, float]] = []
    peak = 0.0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < minutes * 60 and proc.poll() is None:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
            samples.append((time.monotonic() - t0, int(fields["VmRSS"]) / 1024))
            peak = max(peak, int(fields["VmHWM"]) / 1024)
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    later = [(t, r) for t, r in samples if t >= min(RSS_WARMUP_S, minutes * 60 / 3)]
    slope = (
        statistics.linear_regression([t for t, _ in later], [r for _, r in later]).slope * 60 if len(later) > 2 else 0
    )
    return peak, slope, samples


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def main(argv: list[str] | None = None) -> int:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--images", type=Path, default=REPO / "sample_images")
    p.add_argument("--patterns", nargs="+", default=["good/*.png", "defective/*.png"])
    p.add_argument("--inspection-threads", type=int, default=min(2, cpus), help="parts inspected at once (both sides)")
    p.add_argument(
        "--threads", type=int, help="onnxruntime intra-op threads (both sides; default: cores ÷ inspection threads)"
    )
    p.add_argument("--rounds", type=int, default=8, help="rounds per camera: raw, raw one at a time, station")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each slice (a line-rate phase: twice)")
    p.add_argument("--line-rate", type=float, help="parts/min (default: 0.8 of the measured station capacity)")
    p.add_argument("--budget-ms", type=float, help="trigger → verdict budget (default: 4 × model p99, ≥ 100)")
    p.add_argument("--minutes", type=float, default=1.0, help="length of the RSS run (10 for the acceptance figure)")
    args = p.parse_args(argv)
    # Skipped and late parts are expected under overload; their per-part log lines would drown the figures.
    logging.basicConfig(level=logging.ERROR)
    layout = ThreadLayout(args.inspection_threads, args.threads or max(1, cpus // args.inspection_threads))

    model = Model.load(args.model, RuntimeOptions(intra_op_threads=layout.intra_op_threads, inter_op_threads=1))
    # The first figure: one run at a time with every core (what a bench of the model alone reports).
    serial = ThreadLayout(1, cpus)
    serial_model = Model.load(args.model, RuntimeOptions(intra_op_threads=cpus, inter_op_threads=1))
    first_image = sorted(p for pat in args.patterns for p in args.images.glob(pat))[0]
    work = Path(tempfile.mkdtemp(prefix="bench-station-"))
    try:
        with broker() as (port, what):
            print(f"model {args.model}, {layout}, broker {what} :{port}, cpus {cpus}, {load()}")
            flood_camera = {
                "acquisition": {"trigger": {"mode": "software"}},
                "queue": {"size": layout.inspection_threads + 4},
                "line": {"budget_ms": 60_000},
            }
            floods = {
                backend: write_station(
                    work / f"flood-{backend}",
                    args.model,
                    args.images,
                    args.patterns,
                    port,
                    layout,
                    json.loads(json.dumps(flood_camera)),
                    backend=backend,
                )
                for backend in ("replay", "folder")
            }
            measured = {
                backend: paired_rounds(folder, model, serial_model, first_image, layout, args.rounds, args.seconds)
                for backend, folder in floods.items()
            }
            replay = measured["replay"]
            print(f"{args.rounds} rounds × {args.seconds:g} s per figure, each after a {WARMUP_S:g} s warm-up")
            for backend, got in measured.items():
                print(
                    f"{backend} camera: raw onnxruntime {spread(got.raw_per_s)} inferences/s "
                    f"(p99 {p99(got.model_ms):.1f} ms); station {spread(got.station_per_s)} parts/s frame→PUBACK; "
                    f"pipeline efficiency {spread(got.efficiency)}"
                )
            print(
                f"replay camera ÷ raw onnxruntime one run at a time ({serial}, "
                f"{spread(replay.serial_per_s)} inferences/s): {spread(replay.serial_efficiency)}"
            )
            print(
                "replay camera, per part (median ms, wall): "
                + ", ".join(f"{stage} {statistics.median(v):.2f}" for stage, v in replay.stage_ms.items() if v)
            )
            print(
                f"outbox: {replay.writes_per_commit:.2f} writes per commit (results, journal entries, "
                f"acknowledgements); undecided parts in the floods: {sum(m.undecided for m in measured.values())}"
            )
            rates = {backend: got.station_per_s for backend, got in measured.items()}
            capacity = statistics.median(rates["replay"]) * 60
            line_rate = args.line_rate or round(capacity * 0.8)
            budget = args.budget_ms or max(100.0, 4 * p99(replay.model_ms))
            latencies = Latencies(port)
            try:
                for factor in (1.0, 1.5):
                    folder = write_station(
                        work / f"line{factor}",
                        args.model,
                        args.images,
                        args.patterns,
                        port,
                        layout,
                        {
                            "acquisition": {"trigger": {"mode": "software"}},
                            "queue": {"size": 4, "full_policy": "undecided_new"},
                            "line": {"budget_ms": budget, "trigger_rate_parts_per_min": line_rate * factor},
                        },
                    )
                    before = raw_round(model, first_image, layout.inspection_threads, args.seconds)[1]
                    counts, ms, stages = line_round(folder, args.seconds * 2, latencies)
                    after = raw_round(model, first_image, layout.inspection_threads, args.seconds)[1]
                    model_p99 = p99(before + after)
                    total = counts["pass"] + counts["fail"] + counts["undecided"]
                    share = counts["undecided"] / total if total else float("nan")
                    p50 = statistics.median(ms) if ms else float("nan")
                    print(
                        f"{factor:.1f}× line rate ({line_rate * factor:.0f} parts/min = "
                        f"{line_rate * factor / capacity:.2f}× capacity, budget {budget:.0f} ms): {total} parts, "
                        f"undecided {counts['undecided']} = {share:.1%} (skipped {counts['skipped']}, "
                        f"late {counts['late']}); end-to-end p50 {p50:.1f} ms, p99 {p99(ms):.1f} ms, "
                        f"model p99 {model_p99:.1f} ms (raw, just before and after), "
                        f"overhead {p99(ms) - model_p99:.1f} ms"
                    )
                    print(
                        "  of which, p99 in the station (trigger → verdict, before the outbox): "
                        + ", ".join(f"{k} {p99(stages.get(k, []) or [float('nan')]):.1f} ms" for k in LINE_STAGES)
                    )
            finally:
                latencies.close()
            rss_station = write_station(
                work / "rss",
                args.model,
                args.images,
                args.patterns,
                port,
                layout,
                {
                    "acquisition": {"trigger": {"mode": "software"}},
                    "line": {"budget_ms": budget, "trigger_rate_parts_per_min": line_rate},
                    "station_sections": {"http": {"port": 0}},
                },
            )
            if args.minutes > 0:
                peak, slope, samples = rss_run(rss_station, args.minutes)
                warm = next((r for t, r in samples if t >= min(RSS_WARMUP_S, args.minutes * 20)), samples[-1][1])
                print(
                    f"RSS over {args.minutes:g} min at {line_rate:.0f} parts/min (one camera, this model): "
                    f"peak {peak:.1f} MiB, after warm-up {warm:.1f} → end {samples[-1][1]:.1f} MiB, "
                    f"slope after warm-up {slope:+.3f} MiB/min"
                )
            print(f"end: {load()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
