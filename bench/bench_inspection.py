"""Inspection throughput, measured side by side in one process and one run.

Prints raw onnxruntime inferences/s for a model, decode + inference/s (the
upload's bytes decoded, preprocessed and run, on as many threads as the HTTP
server has inference workers: the most its pool could do without HTTP), then
`lineinspect check` images/s and HTTP upload requests/s at 1, 2 and 4
concurrent clients (in a process of their own, sending requests built once),
each as a ratio to the raw figure and to decode + inference measured in the
same round. The phases are interleaved over several rounds and
the median ratio is reported with its range over the rounds, so a busy
neighbour on a shared machine shifts all figures alike instead of one.

    python bench/bench_inspection.py [--model models/default] [--images sample_images]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import onnxruntime as ort

from lineinspect.assemble import model_dir, single_model_inspector
from lineinspect.config import HttpSection
from lineinspect.core.decode import decode_image, read_image_file
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.preprocess import preprocess
from lineinspect.http.app import create_app
from lineinspect.http.server import bind_socket, make_server
from lineinspect.offline.check import check_images, collect_images

CLIENT_COUNTS = (1, 2, 4)
SERVER_START_TIMEOUT_S = 30


def per_second(run_once: Callable[[], int], seconds: float) -> float:
    """Call `run_once` (returns how many items it did) until `seconds` have passed; items per second."""
    done = 0
    t0 = time.monotonic_ns()
    deadline = t0 + int(seconds * 1e9)
    while time.monotonic_ns() < deadline:
        done += run_once()
    return done / ((time.monotonic_ns() - t0) / 1e9)


def raw_inferences_per_s(model: Model, image_path: Path, seconds: float) -> float:
    """onnxruntime alone: one preprocessed tensor, session.run in a loop."""
    tensor, _ = preprocess(read_image_file(str(image_path)), model.card.input)
    feed = {model.input_name: tensor}

    def once() -> int:
        model.session.run(model.output_names, feed)
        return 1

    return per_second(once, seconds)


def per_second_in_threads(
    threads: int, seconds: float, stem: str, body: Callable[[int, Callable[[], bool]], int]
) -> float:
    """Items per second of `threads` threads started together, each running body(index, running) until running()
    turns false after `seconds`; body returns how many items it did."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline_ns = [0]

    def run(index: int) -> None:
        start.wait()
        counts[index] = body(index, lambda: time.monotonic_ns() < deadline_ns[0])

    workers = [threading.Thread(target=run, args=(i,), name=f"{stem}-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    t0 = time.monotonic_ns()
    deadline_ns[0] = t0 + int(seconds * 1e9)
    start.wait()
    for thread in workers:
        thread.join()
    return sum(counts) / ((time.monotonic_ns() - t0) / 1e9)


def decode_and_infer_per_s(model: Model, uploads: list[tuple[str, bytes]], threads: int, seconds: float) -> float:
    """Upload bytes → decode_image → preprocess → session.run, on `threads` threads taking the images in turn."""

    def worker(index: int, running: Callable[[], bool]) -> int:
        done = 0
        while running():
            name, data = uploads[(index + done) % len(uploads)]
            tensor, _ = preprocess(decode_image(data, name=name), model.card.input)
            model.session.run(model.output_names, {model.input_name: tensor})
            done += 1
        return done

    return per_second_in_threads(threads, seconds, "bench-decode", worker)


def check_images_per_s(inspector: Inspector, paths: list[Path], seconds: float) -> float:
    """What `lineinspect check` does per image: read, decode, inspect, judge."""
    return per_second(lambda: check_images(inspector, paths).summary.images, seconds)


BOUNDARY = "lineinspect-bench-boundary"
_BODIES: list[bytes] = []  # the load generator's pre-built requests (set in its process by _load_bodies)


def multipart_body(name: str, data: bytes) -> bytes:
    """A whole multipart/form-data body with the image as field `file`: built once per image, sent as it is."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _load_bodies(bodies: list[bytes]) -> None:
    _BODIES[:] = bodies


def http_requests_per_s(host: str, port: int, clients: int, seconds: float) -> tuple[float, str | None, float]:
    """Runs in the load generator's own process: `clients` threads, each on its own kept-alive connection,
    posting the pre-built requests in turn until the time is up; (requests/s, the first failure or None,
    the CPU cores this process used meanwhile: what the clients take from the server on a shared machine)."""
    failures: list[str] = []
    cpu0, wall0 = time.process_time(), time.monotonic()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def client(index: int, running: Callable[[], bool]) -> int:
        done = 0
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            while running():
                connection.request(
                    "POST", "/v1/inspections", body=_BODIES[(index + done) % len(_BODIES)], headers=headers
                )
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    failures.append(f"{response.status} {answer[:200]!r}")
                    break
                done += 1
        finally:
            connection.close()
        return done

    rate = per_second_in_threads(clients, seconds, "bench-client", client)
    cores = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    return rate, failures[0] if failures else None, cores


def cpu_ms_per_item(measure: Callable[[], float], seconds: float) -> tuple[float, float]:
    """(items/s, this process's CPU ms per item) of measure(), which returns items/s over `seconds`."""
    cpu0 = time.process_time()
    rate = measure()
    return rate, (time.process_time() - cpu0) * 1000 / max(rate * seconds, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default", help="model folder or name under models/")
    parser.add_argument(
        "--images",
        nargs="+",
        default=["sample_images/good", "sample_images/defective"],
        help="images: folders, files or globs (default: the sample parts, not their masks)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--workers", type=int, default=HttpSection().inference_workers, help="HTTP inference workers")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: the default)")
    args = parser.parse_args(argv)

    folder = Path(args.model) if Path(args.model).is_dir() else model_dir(Path.cwd(), args.model)
    if not folder.is_dir():
        print(f"bench: model folder {folder} not found; build it (make default-model) or pass --model", file=sys.stderr)
        return 2
    paths = collect_images(args.images)
    options = RuntimeOptions(intra_op_threads=args.threads) if args.threads else RuntimeOptions()
    inspector = single_model_inspector(folder, options)
    model = next(iter(inspector.models.values()))
    uploads = [(p.name, p.read_bytes()) for p in paths]

    settings = HttpSection(inference_workers=args.workers, max_waiting=max(CLIENT_COUNTS))
    app = create_app(inspector, settings, station_path="bench")
    sock = bind_socket("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    server = make_server(app, log_level="warning", access_log=False)
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bench-uvicorn")
    serving.start()
    # The clients run in a process of their own and send requests built once, so that what they cost
    # (building multipart bodies, parsing answers, holding the GIL) is not taken from the server's process.
    load = multiprocessing.get_context("spawn").Pool(
        1, initializer=_load_bodies, initargs=([multipart_body(name, data) for name, data in uploads],)
    )

    client_cores: dict[int, list[float]] = {n: [] for n in CLIENT_COUNTS}

    def http_rate(clients: int) -> float:
        rate, failure, cores = load.apply(http_requests_per_s, (host, port, clients, args.seconds))
        if failure is not None:
            raise SystemExit(f"bench: HTTP upload failed: {failure}")
        client_cores[clients].append(cores)
        return rate

    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started and time.monotonic() < deadline and serving.is_alive():
            time.sleep(0.02)
        if not server.started:
            print("bench: the HTTP server did not start", file=sys.stderr)
            return 2
        spec = model.card.input
        print(
            f"lineinspect bench: model {model.id} ({model.card.adapter}, {spec.width}x{spec.height}), "
            f"{len(paths)} images from {' '.join(args.images)}, {args.rounds} rounds x {args.seconds:g} s per figure, "
            f"{os.cpu_count()} CPUs, onnxruntime {ort.__version__}, {options.intra_op_threads} intra-op threads, "
            f"{args.workers} HTTP workers"
        )
        decoded = f"decode + inference, {args.workers} thread{'s' if args.workers > 1 else ''}"
        names = ["raw onnxruntime inference", decoded, "check (read, decode, inspect)"]
        names += [f"HTTP upload, {n} client{'s' if n > 1 else ''}" for n in CLIENT_COUNTS]
        figures: dict[str, list[float]] = {n: [] for n in names}
        cpu_ms: dict[str, list[float]] = {n: [] for n in names}
        ratios: dict[str, list[float]] = {n: [] for n in names}
        to_decoded: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            phases: list[Callable[[], float]] = [
                partial(raw_inferences_per_s, model, paths[0], args.seconds),
                partial(decode_and_infer_per_s, model, uploads, args.workers, args.seconds),
                partial(check_images_per_s, inspector, paths, args.seconds),
                *(partial(http_rate, n) for n in CLIENT_COUNTS),
            ]
            timed = [cpu_ms_per_item(phase, args.seconds) for phase in phases]
            measured = [rate for rate, _ in timed]
            for name, (value, ms) in zip(names, timed, strict=True):
                figures[name].append(value)
                cpu_ms[name].append(ms)
                ratios[name].append(value / measured[0])
                to_decoded[name].append(value / measured[1])
        print(
            f"{'measure':38} {'per second (median)':>26} {'÷ raw (range)':>18} {'÷ decode+inference (range)':>27}"
            f" {'CPU ms/item':>11} {'client cores':>12}"
        )
        for name, clients in zip(names, [None] * (len(names) - len(CLIENT_COUNTS)) + list(CLIENT_COUNTS), strict=True):
            unit = "inferences" if name.startswith("raw") else "images" if not name.startswith("HTTP") else "requests"
            value = statistics.median(figures[name])
            cores = f"{statistics.median(client_cores[clients]):.2f}" if clients is not None else ""
            print(
                f"{name:38} {value:15.1f} {unit:10} {_ratio(ratios[name]):>18} {_ratio(to_decoded[name]):>27}"
                f" {statistics.median(cpu_ms[name]):11.1f} {cores:>12}"
            )
        print(
            "CPU ms/item: this process's CPU time (every thread: server, pool, onnxruntime) per item; "
            "client cores: what the load generator's process used beside it, out of "
            f"{os.cpu_count()} CPUs"
        )
    finally:
        load.terminate()
        server.should_exit = True
        serving.join(timeout=30)
        sock.close()
    return 0


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


if __name__ == "__main__":
    sys.exit(main())
