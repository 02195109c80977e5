"""Remote inference on loopback: real KServe v2 servers over HTTP and gRPC against the local model.

Each phase calls `Model.infer` (preprocess → session → adapter, what the Inspector does) on the sample
images one at a time for `--seconds`: local onnxruntime; MLServer over HTTP with JSON tensors and over
gRPC; the `kserve` package's own server over HTTP with the binary data extension (a card's default, what
Triton and OpenVINO Model Server take; MLServer has no binary extension). The phases are interleaved over
`--rounds` rounds; the first `--warmup` calls of every phase are left out. Printed: each path's
inferences/s (median of the rounds, with their spread min–max) and its ratio to local in the same round,
and the latency the server adds (p50/p99 of remote minus local, over all kept calls).

Both servers run onnxruntime with one thread on this machine, so the figures show the protocols' cost, not
a GPU server's speed. The kserve server turns binary tensors into Python lists before it runs the model
(kserve 0.21's request decoding): its figure is the station's binary path plus that server-side cost.

    python bench/bench_remote.py [--model models/default] [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from lineinspect.core.model import Model, RuntimeOptions

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.kserve_server import REMOTE_PATHS, KServeServer  # noqa: E402

PATHS = ("local", *REMOTE_PATHS)


def remote_card(source: Path, dest: Path, protocol: str, url: str, model: str, binary: bool) -> Path:
    shutil.copytree(source, dest)
    card = yaml.safe_load((dest / "model.yaml").read_text())
    card["runtime"] = {
        "remote": {"url": url, "model": model, "protocol": protocol, "timeout_ms": 10_000, "http_binary": binary}
    }
    (dest / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return dest


def phase(model: Model, images: list[np.ndarray], seconds: float, warmup: int) -> tuple[float, list[float]]:
    """Inferences/s over `seconds` after `warmup` calls, and each kept call's latency in ms."""
    for i in range(warmup):
        model.infer(images[i % len(images)])
    latencies_ms: list[float] = []
    t0 = time.monotonic_ns()
    deadline = t0 + int(seconds * 1e9)
    i = 0
    while time.monotonic_ns() < deadline or not latencies_ms:
        s = time.monotonic_ns()
        model.infer(images[i % len(images)])
        latencies_ms.append((time.monotonic_ns() - s) / 1e6)
        i += 1
    return len(latencies_ms) / ((time.monotonic_ns() - t0) / 1e9), latencies_ms


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default", help="model folder (model.onnx + model.yaml)")
    parser.add_argument("--images", default="sample_images", help="folder of sample images (searched for *.png)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3, help="calls left out at the start of every phase")
    args = parser.parse_args(argv)

    source = Path(args.model)
    images = [cv2.imread(str(p)) for p in sorted(Path(args.images).glob("*/*.png"))[:20]]
    if not (source / "model.onnx").is_file() or not images:
        print(f"bench: need {source}/model.onnx and images under {args.images}/", file=sys.stderr)
        return 2
    options = RuntimeOptions(intra_op_threads=1, remote_budget_ms=10_000)
    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    servers = {name: KServeServer({"m": source / "model.onnx"}, server=name) for name in ("mlserver", "kserve")}
    models: dict[str, Model] = {}
    try:
        for name, server in servers.items():
            try:
                server.start()
            except Exception as exc:
                print(f"bench: {name} did not start ({exc}); `make kserve` builds its virtualenv", file=sys.stderr)
                return 2
        models["local"] = Model.load(source, options)
        for path, (name, protocol, binary) in REMOTE_PATHS.items():
            folder = remote_card(source, work / path, protocol, servers[name].url(protocol), "m", binary)
            models[path] = Model.load(folder, options)
        rates: dict[str, list[float]] = {p: [] for p in PATHS}
        ratios: dict[str, list[float]] = {p: [] for p in PATHS}
        latencies: dict[str, list[float]] = {p: [] for p in PATHS}
        for _ in range(args.rounds):
            this_round = {}
            for path in PATHS:
                rate, kept = phase(models[path], images, args.seconds, args.warmup)
                this_round[path] = rate
                rates[path].append(rate)
                latencies[path].extend(kept)
            for path in PATHS:
                ratios[path].append(this_round[path] / this_round["local"])
        spec = models["local"].card.input
        print(
            f"remote inference on loopback, model {source} ({spec.layout} {spec.channels}x{spec.height}x{spec.width}), "
            f"{len(images)} images, {args.rounds} rounds x {args.seconds:g} s per path, {args.warmup} warm-up calls "
            "left out per phase; MLServer 1.7 (http: JSON tensors; grpc), kserve 0.21 (http-binary), "
            "onnxruntime 1 thread on both sides"
        )
        print(f"{'path':<11} {'inf/s median':>12} {'spread':>15} {'x local':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for path in PATHS:
            r = rates[path]
            lat = latencies[path]
            print(
                f"{path:<11} {statistics.median(r):>12.1f} {f'{min(r):.1f}-{max(r):.1f}':>15} "
                f"{statistics.median(ratios[path]):>8.3f} {percentile(lat, 50):>8.1f} {percentile(lat, 99):>8.1f}"
            )
        local = latencies["local"]
        for path in PATHS[1:]:
            lat = latencies[path]
            print(
                f"added by {path}: p50 {percentile(lat, 50) - percentile(local, 50):+.1f} ms, "
                f"p99 {percentile(lat, 99) - percentile(local, 99):+.1f} ms"
            )
        return 0
    finally:
        for model in models.values():
            model.close()
        for server in servers.values():
            server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
