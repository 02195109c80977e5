"""`lineinspect` command line. This is where objects are wired together."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lineinspect import __version__
from lineinspect.errors import LineinspectError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def cmd_schema(args: argparse.Namespace) -> int:
    from lineinspect.config import station_json_schema
    from lineinspect.core.modelcard import model_card_schema
    from lineinspect.core.result import result_schema

    schemas = {"station": station_json_schema, "result": result_schema, "model": model_card_schema}
    print(json.dumps(schemas[args.what](), indent=2, ensure_ascii=False))
    return EXIT_OK


def add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of station.yaml, of a result or of a model card")
    p.add_argument(
        "what",
        nargs="?",
        choices=["station", "result", "model"],
        default="station",
        help="station: station.yaml; result: the MES payload; model: models/<name>/model.yaml (default station)",
    )
    p.set_defaults(func=cmd_schema)


def _size(text: str) -> tuple[int, int]:
    """`WxH` → (width, height) in pixels, for argparse."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size; write it as WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': width and height must be positive")
    return w, h


def cmd_samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lineinspect.offline.synthetic import write_sample_set

    width, height = args.size
    if width < 64 or height < 48:
        raise LineinspectError(f"--size {width}x{height}: sample images must be at least 64x48 px")
    if args.good < 0 or args.defective < 0:
        raise LineinspectError("--good and --defective are counts of images; give 0 or more")
    out = Path(args.out)
    write_sample_set(
        out, good=args.good, defective=args.defective, seed=args.seed, width=width, height=height, progress=True
    )
    print(f"wrote {args.good} good and {args.defective} defective sample(s) with masks and manifest.json to {out}")
    return EXIT_OK


def add_samples(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help="generate synthetic sample parts (good and defective) with ground-truth masks")
    p.add_argument("--out", required=True, help="folder to write good/, defective/, masks/ and manifest.json into")
    p.add_argument("--good", type=int, default=12, help="number of good parts (default 12)")
    p.add_argument("--defective", type=int, default=12, help="number of defective parts (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same images")
    p.add_argument("--size", type=_size, default=(640, 480), help="image size WxH in pixels (default 640x480)")
    p.set_defaults(func=cmd_samples)


def torch_installed() -> bool:
    """Whether torch (the `train` extra) can be imported; found without importing it, which takes seconds."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# Options that belong to teach methods: (argparse dest, flag, the methods that take it).
_METHOD_OPTIONS = (
    ("defects", "--defects", ("featnet", "draem")),
    ("steps", "--steps", ("featnet",)),
    ("epochs", "--epochs", ("draem",)),
    ("threads", "--threads", ("featnet", "draem")),
    ("position_weight", "--position-weight", ("patchknn",)),
    ("ignore_border", "--ignore-border", ("patchknn",)),
)
_TORCH_METHODS = ("featnet", "draem")
_AUTO_FEATNET = (
    "--method not given: featnet, the best method installed (torch is there; from good parts alone it learns from "
    "defects painted on them; see README 'Teach methods'); give --method stats for a model in seconds"
)
_AUTO_STATS = (
    "--method not given: stats (torch is not installed; featnet does better on most surfaces: "
    "pip install 'lineinspect[train]'; --method patchknn for parts that are not in a fixture)"
)


def choose_teach_method(args: argparse.Namespace) -> tuple[str, str | None]:
    """teach's method and the line that says why it was chosen (None when --method was given).

    Without --method: the method the options given belong to (--defects: featnet; --steps: featnet;
    --epochs: draem; --position-weight, --ignore-border: patchknn), else featnet where torch is
    installed and stats where it is not. LineinspectError for options of two methods, or for a
    torch method's options without torch.
    """
    if args.method is not None:
        return args.method, None
    given = [(flag, methods) for dest, flag, methods in _METHOD_OPTIONS if getattr(args, dest) is not None]
    if not given:
        return ("featnet", _AUTO_FEATNET) if torch_installed() else ("stats", _AUTO_STATS)
    flags = " and ".join(flag for flag, _ in given)
    fits = [m for m in ("featnet", "draem", "patchknn") if all(m in methods for _, methods in given)]
    if not fits:
        owners = "; ".join(f"{flag} is " + " or ".join(f"{m}'s" for m in methods) for flag, methods in given)
        named = sorted({m for _, methods in given for m in methods})
        raise LineinspectError(f"{owners}: give --method with the one you mean ({', '.join(named)})")
    method = fits[0]
    one = len(given) == 1
    if method in _TORCH_METHODS and not torch_installed():
        raise LineinspectError(
            f"{flags} {'is' if one else 'are'} {method}'s, and {method} needs torch, which is not installed: "
            f"pip install 'lineinspect[train]' (or leave {flags} out: teach then uses stats, from good images alone)"
        )
    also = "".join(f" ({m} takes {'it' if one else 'them'} too: --method {m})" for m in fits[1:])
    return method, f"--method not given: {method}, the method {flags} {'belongs' if one else 'belong'} to{also}"


def _given(**options: Any) -> dict[str, Any]:
    """The method options the user gave (not None); the method's own defaults stand for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def cmd_teach(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lineinspect.teach.common import MIN_IMAGES, TeachOptions
    from lineinspect.teach.good_folder import find_good_images

    good = find_good_images(Path(args.good), minimum=MIN_IMAGES)
    out = Path(args.out)
    if args.quantize is not None:
        from lineinspect.offline.quantize import check_out_free, default_out

        check_out_free(default_out(out))  # before teaching, not after minutes of it
    method, why = choose_teach_method(args)
    args.method = method  # what the rest of teach, _teach_draem included, reads
    if why is not None:
        print(why, file=sys.stderr)  # stderr: scripts read the model line on stdout
    if args.threads is not None and args.threads < 1:
        raise LineinspectError(f"--threads {args.threads}: train on at least 1 CPU thread")
    if args.method == "draem":
        _teach_draem(args, good, out)
        return _quantize_taught(args, out)
    if args.defects is not None and args.method != "featnet":
        raise LineinspectError(
            f"--defects: the {args.method} method learns from good images only; add --method featnet"
        )
    if args.steps is not None and args.method != "featnet":
        raise LineinspectError(f"--steps: the {args.method} method does not train a network; add --method featnet")
    if args.threads is not None and args.method not in _TORCH_METHODS:
        raise LineinspectError(
            f"--threads: the {args.method} method trains no network and takes seconds; leave --threads out"
        )
    width, height = args.size
    options = TeachOptions(
        name=args.name or out.name,
        width=width,
        height=height,
        target_false_reject=args.target_false_reject,
        holdout_fraction=args.holdout,
        seed=args.seed,
    )
    if args.method == "patchknn":
        from lineinspect.teach.patchknn import PatchOptions, teach_patchknn

        patch = PatchOptions(
            teach=options, **_given(position_weight=args.position_weight, ignore_border_px=args.ignore_border)
        )
        card = teach_patchknn(good, out, patch)
    elif args.method == "featnet":
        from lineinspect.teach.featnet import FeatNetOptions, teach_featnet

        net = FeatNetOptions(teach=options, **_given(steps=args.steps, threads=args.threads))
        card = teach_featnet(good, Path(args.defects) if args.defects is not None else None, out, net)
    else:
        from lineinspect.teach.stats import teach_stats

        card = teach_stats(good, out, options)
    assert card.anomaly is not None
    print(
        f"model '{card.name}' written to {out} from {card.trained['images']} good images "
        f"in {card.trained['seconds']} s; image threshold {card.anomaly.image_threshold:g}, "
        f"pixel threshold {card.anomaly.pixel_threshold:g} (raw scores)"
    )
    _note_unresolved_target(args.target_false_reject, card.trained)
    return _quantize_taught(args, out)


def _quantize_taught(args: argparse.Namespace, out: Path) -> int:
    """teach --quantize int8: the int8 copy of the taught model in OUT-int8, calibrated on the same good images."""
    if args.quantize is None:
        return EXIT_OK
    from lineinspect.offline.quantize import QuantizeOptions, default_out, quantize_model

    quantized = quantize_model(out, Path(args.good), default_out(out), QuantizeOptions())
    print(quantized.summary())
    return EXIT_OK


def _note_unresolved_target(target_false_reject: float, trained: dict[str, object]) -> None:
    from lineinspect.offline.thresholds import unresolved_target_note

    held_back = trained.get("images_held_back")
    images = held_back if isinstance(held_back, int) else 0
    note = unresolved_target_note(target_false_reject, images, "held-back good images (--holdout)")
    if note is not None:
        print(note, file=sys.stderr)


def add_teach(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teach", help="build an anomaly model (ONNX + model card) from images of good parts")
    p.add_argument("--good", required=True, help="folder of images of good parts")
    p.add_argument("--out", required=True, help="model folder to write, e.g. models/bracket")
    p.add_argument("--name", help="model id recipes use (default: the --out folder's name)")
    p.add_argument("--size", type=_size, default=(320, 240), help="model input WxH in pixels (default 320x240)")
    p.add_argument(
        "--target-false-reject",
        type=float,
        default=0.005,
        help="share of good parts the thresholds may reject (default 0.005 = 0.5 %%)",
    )
    p.add_argument(
        "--holdout", type=float, default=0.2, help="share of good images held back to set thresholds (default 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random hold-back split")
    p.add_argument(
        "--method",
        choices=["stats", "patchknn", "featnet", "draem"],
        default=None,
        help="featnet: a small network on the filter bank, learnt from labelled defects (--defects) or painted "
        "ones (minutes, needs the 'train' extra: torch; the best results, use it where it is installed); stats: "
        "filter-bank statistics per location (seconds, no extra; parts in a fixture, or a first model fast); "
        "patchknn: nearest good patch in a memory bank (seconds, no extra; parts that move); draem: a U-Net on "
        "raw pixels trained on painted defects (slower, weaker; comparison only). Default: featnet where the "
        "'train' extra is installed, else stats; an option of one method (--defects, --steps: featnet; --epochs: "
        "draem; --position-weight, --ignore-border: patchknn) picks that one. README 'Teach methods' has the "
        "measured comparison",
    )
    p.add_argument(
        "--defects",
        help="featnet, draem: folder of defective images (masks beside them or in masks/) to learn from; featnet mixes "
        "them with its painted defects, so a handful already helps (on the magnetic tiles 5 per class: image AUROC "
        "0.908 -> 0.958, three seeds; README 'A few labelled defects')",
    )
    p.add_argument("--epochs", type=int, default=None, help="draem: training passes (default: the method's own)")
    p.add_argument("--steps", type=int, default=None, help="featnet: training batches of 16 images (default 1500)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="featnet, draem: CPU threads to train on (default 2; 1 leaves a core to a station running beside it)",
    )
    p.add_argument(
        "--position-weight",
        type=float,
        default=None,
        help="patchknn: how much a patch's place in the image counts (0: anywhere is fine; default 1)",
    )
    p.add_argument(
        "--ignore-border",
        type=int,
        default=None,
        help="patchknn: px band along the input's edges never flagged (default 0)",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write an int8 copy of the model to OUT-int8, calibrated on the good images (as lineinspect "
        "quantize does)",
    )
    p.set_defaults(func=cmd_teach)


def _teach_draem(args: argparse.Namespace, good: list[Path], out: Path) -> int:
    from lineinspect.teach.common import TeachOptions
    from lineinspect.teach.draem import DraemOptions, teach_draem

    width, height = args.size
    teach = TeachOptions(
        name=args.name or out.name,
        width=width,
        height=height,
        target_false_reject=args.target_false_reject,
        holdout_fraction=args.holdout,
        seed=args.seed,
    )
    options = DraemOptions(teach=teach, **_given(epochs=args.epochs, threads=args.threads))
    defects = Path(args.defects) if args.defects is not None else None
    card = teach_draem(good, defects, out, options)
    assert card.anomaly is not None
    print(
        f"model '{card.name}' written to {out} ({card.trained['method']}) in {card.trained['seconds']} s; "
        f"image threshold {card.anomaly.image_threshold:g} (raw score)"
    )
    _note_unresolved_target(args.target_false_reject, card.trained)
    return EXIT_OK


STATION_DIR_HELP = "folder holding station.yaml and models/ (default: $LINEINSPECT_STATION_DIR or .)"


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from lineinspect.assemble import build_archive, build_http_app, build_inspector
    from lineinspect.config import load_station, station_dir_from
    from lineinspect.http.server import bind_socket, make_server, serve, url_of
    from lineinspect.line.metrics import StationMetrics
    from lineinspect.line.results_store import IN_MEMORY, ResultStore
    from lineinspect.line.status import OfflineStatus

    station_dir = station_dir_from(args.station_dir)
    config = load_station(station_dir)
    http = config.http
    host = args.host or http.host
    port = http.port if args.port is None else args.port
    api_key = os.environ.get(http.api_key_env) or None
    inspector = build_inspector(station_dir, config)
    # Observability of uploads: recent results (in memory unless --results-db), metrics, status, dashboard.
    store_path = IN_MEMORY if args.results_db is None else station_dir / args.results_db
    store = ResultStore(store_path, retain_rows=args.results_retain)
    # Uploads' frames, by the rules of station.yaml `archive:` (none without it).
    archive = build_archive(station_dir, config.archive) if config.archive is not None else None
    status = OfflineStatus(
        station_id=config.station.id,
        station_path=config.station.path,
        archive=archive.status if archive is not None else None,
    )
    metrics = StationMetrics()
    app = build_http_app(
        inspector,
        config,
        api_key=api_key,
        store=store,
        metrics=metrics,
        status=status,
        result_sinks=[store.add, metrics.observe_result, status.observe_result],
        archive=archive,
    )
    try:
        sock = bind_socket(host, port)
    except BaseException:
        store.close()
        if archive is not None:
            archive.close()
        raise
    url = url_of(sock)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("lineinspect.serve").warning(
            "serving on %s without an API key: anyone on the network can upload; set %s", host, http.api_key_env
        )
    key_note = f"uploads need the {http.api_key_env} key" if api_key else "no API key required"
    print(f"lineinspect: station {config.station.path} serving on {url} (docs {url}/docs; {key_note})", flush=True)
    try:
        stopped_by = serve(make_server(app, log_level="debug" if args.verbose else "info"), sock)
    finally:
        sock.close()
        store.close()
        if archive is not None:
            archive.close()
    print(f"lineinspect: stopped{f' ({stopped_by.name})' if stopped_by else ''}", flush=True)
    return EXIT_OK


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API (uploads, results, status, metrics, dashboard) for a station")
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument("--host", help="address to listen on (default: station.yaml http.host)")
    p.add_argument("--port", type=int, help="TCP port, 0 for any free one (default: station.yaml http.port)")
    p.add_argument(
        "--results-db",
        help="SQLite file (relative to the station dir) keeping recent upload results for /v1/results and the "
        "dashboard across restarts (default: in memory)",
    )
    p.add_argument(
        "--results-retain",
        type=_at_least_one,
        default=10_000,
        help="recent results kept (oldest dropped; default 10000)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_run(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from lineinspect.assemble import build_http_app, build_inspector, build_plc_triggers, build_station
    from lineinspect.config import load_station, station_dir_from
    from lineinspect.http.server import bind_socket, make_server, serve, url_of
    from lineinspect.line.metrics import StationMetrics
    from lineinspect.line.results_store import ResultStore

    station_dir = station_dir_from(args.station_dir)
    config = load_station(station_dir)
    http = config.http
    host = args.host or http.host
    port = http.port if args.port is None else args.port
    if args.duration_s is not None and args.duration_s <= 0:
        raise LineinspectError(f"--duration-s {args.duration_s}: give a positive number of seconds")
    api_key = os.environ.get(http.api_key_env) or None
    sock = bind_socket(host, port)
    store = ResultStore(station_dir / "data" / "results.db", retain_rows=100_000, retain_days=30)
    metrics = StationMetrics()
    sinks = [store.add, metrics.observe_result]  # every final camera result and every upload
    try:
        inspector = build_inspector(station_dir, config)  # one Inspector for camera parts and uploads
        station = build_station(station_dir, config, inspector=inspector, result_sinks=sinks)
        try:
            # select_recipe None: PLC product codes are checked and logged, not yet switched (see the report).
            # select_recipe None: product codes switch recipes through the station's own changeover.
            plc_triggers = build_plc_triggers(config, station, None, station.events, station_dir=station_dir)
        except BaseException:
            station.stop()
            raise
        station.start()
        for plc_trigger in plc_triggers:  # after the station, so their first part finds it running
            plc_trigger.start()
    except BaseException:
        sock.close()
        store.close()
        raise
    stopped_by = None
    timer: threading.Timer | None = None
    try:
        app = build_http_app(
            inspector,
            config,
            api_key=api_key,
            store=store,
            metrics=metrics,
            status=station.status,
            result_sinks=sinks,
            station=station,
            archive=station.archive,
        )
        server = make_server(app, log_level="debug" if args.verbose else "warning", access_log=args.verbose)
        url = url_of(sock)
        mqtt_host, mqtt_port = station.mqtt_address
        broker = "embedded demo broker" if station.broker is not None else "broker"
        cameras = ", ".join(sorted(station.supervisors)) or "none (cameras/<id>.yaml)"
        print(f"lineinspect: station {config.station.path} running; cameras: {cameras}", flush=True)
        print(f"lineinspect: HTTP {url} (docs {url}/docs)", flush=True)
        print(f"lineinspect: MQTT {broker} {mqtt_host}:{mqtt_port}; watch results with", flush=True)
        enterprise = config.station.uns.enterprise
        print(f"  mosquitto_sub -h {mqtt_host} -p {mqtt_port} -t '{enterprise}/#' -v", flush=True)
        if args.duration_s is not None:

            def time_up() -> None:
                server.should_exit = True

            timer = threading.Timer(args.duration_s, time_up)
            timer.name = "run-duration"
            timer.start()
        # SIGHUP reloads station.yaml's recipes and the models (off the signal handler: loading takes seconds).
        signal.signal(
            signal.SIGHUP,
            lambda _sig, _frame: threading.Thread(
                target=station.book.reload, kwargs={"source": "sighup"}, name="reload", daemon=True
            ).start(),
        )
        stopped_by = serve(server, sock)
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        sock.close()
        for plc_trigger in plc_triggers:  # before the station: no PLC part reaches a stopping station
            plc_trigger.stop()
        station.stop()
        store.close()
    counts = station.counts.snapshot()
    print(f"lineinspect: stopped{f' ({stopped_by.name})' if stopped_by else ''}; parts {counts}", flush=True)
    return EXIT_OK


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the station: cameras, inspection, results to MQTT, reject station, and the HTTP API"
    )
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument("--host", help="HTTP address to listen on (default: station.yaml http.host)")
    p.add_argument("--port", type=int, help="HTTP port, 0 for any free one (default: station.yaml http.port)")
    p.add_argument("--duration-s", type=float, help="stop cleanly after this many seconds (default: run until stopped)")
    p.set_defaults(func=cmd_run)


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from lineinspect.assemble import load_models, model_option, runtime_options, single_model_inspector
    from lineinspect.config import STATION_FILE, HttpSection, RuntimeSection, load_station, station_dir_from
    from lineinspect.core.inspector import Inspector
    from lineinspect.offline.check import (
        CheckRow,
        CheckUsageError,
        check_images,
        check_report_path,
        collect_images,
        write_report,
    )

    report_path = Path(args.report) if args.report else None
    check_report_path(report_path)
    paths = collect_images(args.paths)
    station_dir = station_dir_from(args.station_dir)
    # --model alone needs no station.yaml; with --recipe the recipe's rules judge that model's output.
    config = load_station(station_dir) if args.model is None or args.recipe is not None else None
    recipe = None
    if config is not None:
        wanted = args.recipe or config.default_recipe_id
        recipe = next((r for r in config.recipes if r.id == wanted), None)
        if recipe is None:
            raise CheckUsageError(
                f"--recipe {wanted}: {station_dir / STATION_FILE} has no such recipe; "
                f"recipes: {[r.id for r in config.recipes]}"
            )
    options = runtime_options(config.runtime if config is not None else RuntimeSection())
    if args.model is not None:
        inspector = single_model_inspector(model_option(station_dir, args.model), options, recipe)
    else:
        assert recipe is not None
        inspector = Inspector(load_models(station_dir, [recipe], options), {recipe.id: recipe}, recipe.id)
    max_pixels = (config.http if config is not None else HttpSection()).max_pixels

    # tqdm starts a monitor thread per process even for a disabled bar, so only make one when it is shown.
    show_bar = not args.quiet and sys.stderr.isatty()
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True) if show_bar else None

    def on_row(row: CheckRow) -> None:
        if bar is not None:
            bar.update(1)
        if row.verdict.value != "pass":
            # An ImageError already names the file.
            what = row.error if row.error is not None else f"{row.path}: {row.reason}"
            tqdm.write(f"{row.verdict.value.upper():9} {what}", file=sys.stdout)

    try:
        report = check_images(inspector, paths, max_pixels=max_pixels, on_row=on_row)
    finally:
        if bar is not None:
            bar.close()
    print(report.summary.line())
    if report_path is not None:
        write_report(report, report_path)
        print(f"report: {report_path}")
    return EXIT_OK if report.exit_status == 0 else EXIT_FAILED


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="inspect image files offline: a verdict per image, a summary, an optional JSON/CSV report",
        description="Exit status: 0 all passed, 1 any failed or undecided, 2 usage error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--model", help="model folder, or a model name under the station's models/ (no station.yaml needed)")
    p.add_argument("--recipe", help="recipe id from station.yaml (default: the station's default recipe)")
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument("--report", metavar="FILE", help="write a report: FILE.json (rows + summary) or FILE.csv (rows)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydantic import ValidationError

    from lineinspect.config import station_dir_from
    from lineinspect.core.calibration import (
        BoardDescription,
        CalibrationError,
        calibration_path,
        load_calibration_file,
        save_calibration_file,
    )
    from lineinspect.errors import format_validation_error
    from lineinspect.offline.calibrate import calibrate_intrinsics, measure_plane, read_gray, with_plane

    station_dir = station_dir_from(args.station_dir)
    path = calibration_path(station_dir, args.camera)
    if args.board == "chessboard" and (args.marker_mm is not None or args.dictionary is not None):
        raise CalibrationError("--marker-mm and --dictionary are for --board charuco only")
    try:
        board = BoardDescription(
            kind=args.board,
            cols=args.cols,
            rows=args.rows,
            square_mm=args.square_mm,
            marker_mm=args.marker_mm,
            dictionary=(args.dictionary or "DICT_5X5_100") if args.board == "charuco" else None,
        )
    except ValidationError as exc:
        raise CalibrationError(f"board geometry:\n{format_validation_error(exc)}") from None
    if args.what == "intrinsics":
        run = calibrate_intrinsics([Path(p) for p in args.images], board, args.camera, force=args.force)
        intr = run.calibration.intrinsics
        assert intr is not None
        for entry in intr.images:
            print(f"  {entry.image}: {entry.rms_px:.3f} px ({entry.corners} corners)")
        for missing in run.not_found:
            print(f"  {missing}: board not found, not used")
        k = intr.camera_matrix
        print(
            f"RMS reprojection error {intr.rms_px:.3f} px over {len(intr.images)} image(s)"
            f"{' (above the limit, saved because of --force)' if intr.forced else ''}; "
            f"fx {k[0][0]:.1f} fy {k[1][1]:.1f} cx {k[0][2]:.1f} cy {k[1][2]:.1f} px"
        )
        data = run.calibration
        if path.is_file():
            print(f"note: replaces {path}; run `calibrate scale` again, the plane scale depends on the intrinsics")
    else:
        if len(args.images) != 1:
            raise CalibrationError(f"scale takes one image of the target on the working plane, got {len(args.images)}")
        (image,) = args.images
        existing = load_calibration_file(path) if path.is_file() else None
        if existing is None or existing.intrinsics is None:
            print(f"note: camera {args.camera} has no intrinsics; lens distortion is not corrected")
        gray = read_gray(Path(image))
        plane = measure_plane(Path(image), board, existing)
        data = with_plane(existing, args.camera, plane, (gray.shape[1], gray.shape[0]))
        s = plane.mm_per_px
        print(
            f"mm per px: {s.centre:.5f} at the centre, {s.min:.5f}–{s.max:.5f} over the field of view "
            f"(variation {s.variation_percent:.1f} %); target fit residual {plane.residual_mm:.3f} mm"
        )
    save_calibration_file(data, path)
    print(f"calibration {data.id} written to {path}")
    return EXIT_OK


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate a camera: lens intrinsics, working-plane scale in mm")
    p.add_argument(
        "what",
        choices=["intrinsics", "scale"],
        help="intrinsics: from board images; scale: from one image of a target on the working plane",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="board images (intrinsics) or one target image (scale)")
    p.add_argument("--camera", required=True, help="camera id; writes calibration/<camera>.yaml")
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument(
        "--board", choices=["chessboard", "charuco"], default="chessboard", help="board type (default chessboard)"
    )
    p.add_argument("--cols", type=int, required=True, help="squares across the board (not inner corners)")
    p.add_argument("--rows", type=int, required=True, help="squares down the board (not inner corners)")
    p.add_argument("--square-mm", type=float, required=True, help="side of one square in mm, measured on the print")
    p.add_argument("--marker-mm", type=float, help="ChArUco: side of one marker in mm")
    p.add_argument("--dictionary", help="ChArUco: ArUco dictionary (default DICT_5X5_100)")
    p.add_argument("--force", action="store_true", help="save intrinsics even above 0.5 px RMS reprojection error")
    p.set_defaults(func=cmd_calibrate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lineinspect.assemble import model_option
    from lineinspect.config import station_dir_from
    from lineinspect.core.model import Model, RuntimeOptions
    from lineinspect.offline.datasets import find_defects, find_good
    from lineinspect.offline.evaluate import evaluate, write_report
    from lineinspect.offline.evaluate_plots import write_plots

    folder = model_option(station_dir_from(args.station_dir), args.model)
    good = find_good(Path(args.good))
    defects = find_defects(Path(args.defects), exclude=Path(args.good))
    model = Model.load(folder, RuntimeOptions(intra_op_threads=args.threads))
    out = Path(args.out) if args.out else Path("evaluation") / model.id
    items = good + defects
    show_bar = not args.quiet and sys.stderr.isatty()
    if show_bar:
        from tqdm import tqdm

        with tqdm(total=len(items), unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            evaluation = evaluate(model, items, seed=args.seed, on_image=lambda _: bar.update(1))
    else:
        evaluation = evaluate(model, items, seed=args.seed)
    report = write_report(evaluation, out)
    plots, missing = write_plots(evaluation, model, out)
    print(evaluation.summary())
    print(f"report: {report}; plots: {', '.join(p.name for p in plots)}")
    if missing:
        print(f"note: {missing}", file=sys.stderr)
    return EXIT_OK


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a model on labelled images: AUROC, false rejects, escapes, per class; report + plots",
        description="Images under --defects (sub-folders are classes) count as defective; masks beside them "
        "(NAME_mask.png, masks/NAME.png, or NAME.png beside NAME.jpg) give the pixel figures. "
        "A part is called defective when its score >= the card's threshold (0.5 for anomaly models).",
    )
    p.add_argument("--model", required=True, help="model folder, or a model name under the station's models/")
    p.add_argument("--good", required=True, help="folder of images of good parts (searched recursively)")
    p.add_argument("--defects", required=True, help="folder of defective images, one sub-folder per class")
    p.add_argument("--out", help="folder for report.json and the PNG plots (default evaluation/<model>)")
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: its choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel subsample for pixel AUROC")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)


def cmd_retune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lineinspect.assemble import model_option
    from lineinspect.config import station_dir_from
    from lineinspect.core.model import Model, RuntimeOptions
    from lineinspect.offline.retune import retune, save
    from lineinspect.offline.thresholds import unresolved_target_note

    folder = model_option(station_dir_from(args.station_dir), args.model)
    model = Model.load(folder, RuntimeOptions(intra_op_threads=args.threads))
    retuned = retune(model, Path(args.good), args.target_false_reject)
    print(retuned.summary())
    note = unresolved_target_note(args.target_false_reject, len(retuned.good_scores))
    if note is not None:
        print(note, file=sys.stderr)
    if args.dry_run:
        print("dry run: the card was not changed")
    else:
        print(f"thresholds written to {save(retuned, folder)} (model.onnx unchanged)")
    return EXIT_OK


def add_retune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retune",
        help="set a model's thresholds from good parts at a target false-reject rate, in its card only",
        description="Runs the model on good parts it did not learn from and writes the threshold that at most "
        "--target-false-reject of them reach into model.yaml. model.onnx is not touched.",
    )
    p.add_argument("--model", required=True, help="model folder, or a model name under the station's models/")
    p.add_argument("--good", required=True, help="folder of images of good parts the model did not learn from")
    p.add_argument("--target-false-reject", type=float, default=0.005, help="share of good parts that may be rejected")
    p.add_argument("--dry-run", action="store_true", help="print the new thresholds, do not write the card")
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: its choice)")
    p.set_defaults(func=cmd_retune)


def cmd_quantize(args: argparse.Namespace) -> int:
    from lineinspect.assemble import model_option
    from lineinspect.config import station_dir_from
    from lineinspect.offline.quantize import QuantizeOptions, default_out, quantize_model

    folder = model_option(station_dir_from(args.station_dir), args.model)
    out = Path(args.out) if args.out else default_out(folder)
    if args.out and len(out.parts) == 1:
        out = folder.parent / out  # a model name: beside the float model, where recipes find models by name
    options = QuantizeOptions(
        images=args.images, layers=args.layers, per_channel=not args.per_tensor, headroom=args.headroom
    )
    print(quantize_model(folder, Path(args.calibration), out, options).summary())
    return EXIT_OK


def add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="write an int8 copy of a model (new folder, own card), calibrated on images of good parts",
        description="Static int8 quantization (QDQ) with onnxruntime's tools, calibrated on good images "
        "preprocessed as the station does. The float model stays; the new folder's card names it and keeps its "
        "thresholds. By default only dense layers become int8 (see lineinspect.offline.quantize).",
    )
    p.add_argument("--model", required=True, help="model folder, or a model name under the station's models/")
    p.add_argument("--calibration", required=True, help="folder of images of good parts (searched recursively)")
    p.add_argument(
        "--out",
        help="model name (written beside the model) or folder path to write; default NAME-int8; must not exist",
    )
    p.add_argument(
        "--images", type=int, default=100, help="calibration images used at most, spread over the folder (default 100)"
    )
    p.add_argument(
        "--layers",
        choices=["dense", "all"],
        default="dense",
        help="dense: convolutions and matrix products of 8+ channels (default); all: every node onnxruntime can "
        "quantize (slower on teach models' filter banks)",
    )
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per output channel")
    p.add_argument(
        "--headroom",
        type=float,
        default=1.0,
        help="widen each activation range by this many times its span on good parts, on either side, so that "
        "defects are not clipped (default 1)",
    )
    p.add_argument("--station-dir", help=STATION_DIR_HELP)
    p.set_defaults(func=cmd_quantize)


def cmd_archive(args: argparse.Namespace) -> int:
    from datetime import datetime

    from lineinspect.config import STATION_FILE, load_station, station_dir_from
    from lineinspect.line.archive.index import INDEX_FILE, ArchiveIndex
    from lineinspect.line.archive.reviews import dataset_parts
    from lineinspect.offline.archive_export import check_out_folder, write_export

    def when(option: str, text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise LineinspectError(f"{option} {text!r}: not an ISO 8601 time, e.g. 2024-05-01T06:00:00Z") from None
        if value.tzinfo is None:
            raise LineinspectError(f"{option} {text}: no time zone; add Z for UTC or an offset, e.g. {text}Z")
        return value

    since, until = when("--since", args.since), when("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise LineinspectError(f"--since {args.since} must be before --until {args.until}")
    out = Path(args.out)
    check_out_folder(out)
    station_dir = station_dir_from(args.station_dir)
    if args.folder is not None:
        folder = Path(args.folder)
    else:
        settings = load_station(station_dir).archive
        if settings is None:
            raise LineinspectError(
                f"{station_dir / STATION_FILE} has no archive: section, so this station keeps no frames; "
                "add one, or give --folder of an archive"
            )
        folder = settings.folder if settings.folder.is_absolute() else station_dir / settings.folder
    if not (folder / INDEX_FILE).is_file():
        raise LineinspectError(f"{folder}: no image archive here ({INDEX_FILE} not found); check archive.folder")
    index = ArchiveIndex(folder / INDEX_FILE)
    left_out: dict[str, int] = {}
    try:
        parts = dataset_parts(
            index,
            folder,
            since=since,
            until=until,
            camera=args.camera,
            recipe=args.recipe,
            reviewed_only=args.reviewed_only,
            unreviewed_fails=args.unreviewed_fails,
            left_out=left_out,
        )
        query = {
            "since": args.since,
            "until": args.until,
            "camera": args.camera,
            "recipe": args.recipe,
            "reviewed_only": args.reviewed_only,
            "unreviewed_fails": args.unreviewed_fails,
            "archive": str(folder),
        }
        summary = write_export(parts, out, query=query)
    finally:
        index.close()
    print(summary.line())
    if left_out:
        print("left out: " + ", ".join(f"{n} {why}" for why, n in sorted(left_out.items())))
    print(f"teach/retune: --good {out / 'good'}; evaluate: --good {out / 'good'} --defects {out / 'defects'}")
    return EXIT_OK


def add_archive(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="the image archive: export archived parts as a dataset")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = actions.add_parser(
        "export",
        help="write archived parts as the folders teach, retune and evaluate read, with a manifest",
        description="Reviewed defects (confirmed defects, escapes) go to defects/<class>/ with their masks; false "
        "rejects, confirmed passes and (unless --reviewed-only) unreviewed passes to good/. Unreviewed fails are "
        "left out unless --unreviewed-fails; undecided parts need a review.",
    )
    e.add_argument("--out", required=True, help="new folder to write good/, defects/ and manifest.json into")
    e.add_argument("--since", help="parts decided at or after this time (ISO 8601 with a zone)")
    e.add_argument("--until", help="parts decided before this time (ISO 8601 with a zone)")
    e.add_argument("--camera", help="one camera's parts only (its id; 'upload' is not a camera)")
    e.add_argument("--recipe", help="one recipe's parts only")
    e.add_argument("--reviewed-only", action="store_true", help="only parts an operator reviewed")
    e.add_argument(
        "--unreviewed-fails",
        action="store_true",
        help="also export unreviewed fails, as defects of their first counting class",
    )
    e.add_argument("--folder", help="the archive folder (default: archive.folder of the station)")
    e.add_argument("--station-dir", help=STATION_DIR_HELP)
    e.set_defaults(func=cmd_archive)


def cmd_shadow_report(args: argparse.Namespace) -> int:
    from datetime import datetime

    from lineinspect.config import station_dir_from
    from lineinspect.line.shadow import SHADOW_FILE, ShadowStore

    station_dir = station_dir_from(args.station_dir)
    path = station_dir / SHADOW_FILE
    if not path.is_file():
        raise LineinspectError(f"{path}: no shadow verdicts yet (name a `shadow:` model in a recipe and run the line)")
    since = None
    if args.since is not None:
        since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        if since.tzinfo is None:
            raise LineinspectError(f"--since {args.since}: give a time zone, e.g. {args.since}Z for UTC")
    store = ShadowStore(path)
    try:
        report = store.report(recipe=args.recipe, since=since, disagreements_max=args.disagreements)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    agreement = "n/a" if report["agreement"] is None else f"{report['agreement'] * 100:.1f} %"
    print(f"{report['parts']} parts compared; shadow agrees with production on {agreement}")
    for m in report["models"]:
        print(f"  recipe {m['recipe']}: production {m['production']['id']} vs shadow {m['shadow']['id']}")
    print(
        "  production verdict → shadow verdict: "
        + "; ".join(f"{p}→{s} {n}" for p, row in report["confusion"].items() for s, n in row.items() if n)
    )
    for name, c in sorted(report["classes"].items()):
        print(f"  {name}: both {c['both']}, production only {c['production_only']}, shadow only {c['shadow_only']}")
    for d in report["disagreements"][:20]:
        image = f" image {d['image_ref']}" if d["image_ref"] else ""
        print(
            f"  {d['decided_at']} {d['camera_id']} {d['part_id'] or d['result_id']}: production "
            f"{d['production_verdict']}, shadow {d['shadow_verdict']} ({d['shadow_reason']}){image}"
        )
    return EXIT_OK


def add_shadow(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shadow", help="compare a recipe's shadow model with production on the line's parts")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = actions.add_parser("report", help="agreement, verdict confusion, per class, the disagreeing parts")
    report.add_argument("--station-dir", help=STATION_DIR_HELP)
    report.add_argument("--recipe", help="only this recipe's parts")
    report.add_argument("--since", help="only parts decided since (ISO 8601 with a zone, e.g. 2026-05-01T06:00:00Z)")
    report.add_argument("--disagreements", type=int, default=100, help="disagreeing parts listed (default 100)")
    report.add_argument("--json", action="store_true", help="the whole report as JSON")
    report.set_defaults(func=cmd_shadow_report)


def cmd_model_promote(args: argparse.Namespace) -> int:
    from lineinspect.config import station_dir_from
    from lineinspect.offline.promotion import promote, rollback

    station_dir = station_dir_from(args.station_dir)
    if args.action == "promote":
        done = promote(station_dir, args.name, args.recipe)
        print(f"recipe '{done.recipe}' now runs '{done.model}' (was '{done.previous_model}', kept for rollback)")
    else:
        done = rollback(station_dir, args.recipe)
        print(f"recipe '{done.recipe}' runs '{done.model}' again; '{done.previous_model}' is its shadow")
    print(
        "station.yaml updated; a running station switches at its next reload: POST /v1/reload, the MQTT command "
        "reload, or SIGHUP"
    )
    return EXIT_OK


def _names(text: str) -> list[str]:
    """`a,b,c` → ["a", "b", "c"], for argparse."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}': give names separated by commas, e.g. good,scratch,dent")
    return names


def cmd_model_add(args: argparse.Namespace) -> int:
    from lineinspect.assemble import MODELS_DIR
    from lineinspect.config import station_dir_from
    from lineinspect.offline.model_add import AddRequest, AnomalyThresholds, add_model

    models_dir = Path(args.models_dir) if args.models_dir else station_dir_from(args.station_dir) / MODELS_DIR
    request = AddRequest(
        source=Path(args.file),
        name=args.name,
        models_dir=models_dir,
        adapter=args.adapter,
        labels=args.labels,
        size=args.size,
        color=args.color,
        good_class=args.good_class,
        defect_classes=args.defect_classes,
        anomaly=AnomalyThresholds(args.image_threshold, args.pixel_threshold, args.score_min, args.score_max),
        image=Path(args.image) if args.image else None,
        dry_run=args.dry_run,
    )
    for line in add_model(request).lines():
        print(line)
    return EXIT_OK


def add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model", help="add an exported ONNX model (writes its card), promote a shadow model, or roll back"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="copy an ONNX export into models/NAME with a model card read from the file, load it, run it once",
        description="Recognises Ultralytics (detect, segment, classify, OBB, pose), anomalib v2 (Padim, Patchcore, "
        "...) and lineinspect teach exports from their graph and metadata, proposes the card (adapter, input "
        "size, colour order, resize, scaling, labels, thresholds), computes the sha256, writes models/NAME/, loads "
        "it as the station does and runs it on a sample image. What the file cannot say is asked for by its flag.",
    )
    add.add_argument("file", metavar="FILE.onnx", help="the exported ONNX file")
    add.add_argument("--name", required=True, help="model id and folder name under models/ (recipes name it)")
    add.add_argument(
        "--adapter",
        choices=["anomaly", "segmentation", "yolo", "classification"],
        help="how to read the outputs, for an export lineinspect does not recognise",
    )
    add.add_argument("--labels", type=_names, help="class names by output index, comma-separated")
    add.add_argument("--size", type=_size, help="input WxH in pixels where the model's input size is not fixed")
    add.add_argument("--color", choices=["RGB", "BGR"], help="channel order the model was trained on (default RGB)")
    add.add_argument("--good-class", help="classification/segmentation: the class of good parts")
    add.add_argument("--defect-classes", type=_names, help="classification: the classes that fail a part")
    add.add_argument("--image-threshold", type=float, help="anomaly, raw scores: image score at which a part fails")
    add.add_argument("--pixel-threshold", type=float, help="anomaly, raw scores: map value of a defective pixel")
    add.add_argument("--score-min", type=float, help="anomaly, raw scores: score of a typical good part (default 0)")
    add.add_argument("--score-max", type=float, help="anomaly, raw scores: score of a clear defect")
    add.add_argument("--image", help="image to run the model on once (default: the first under sample_images/)")
    add.add_argument("--dry-run", action="store_true", help="print the card and the sample's result; write nothing")
    add.add_argument("--models-dir", help="models folder to add to (default: the station's models/)")
    add.add_argument("--station-dir", help=STATION_DIR_HELP)
    add.set_defaults(func=cmd_model_add)
    promote = actions.add_parser("promote", help="the recipe's shadow model NAME becomes its production model")
    promote.add_argument("name", metavar="NAME", help="the shadow model's folder name under models/")
    promote.add_argument("--recipe", required=True, help="recipe id in station.yaml")
    promote.add_argument("--station-dir", help=STATION_DIR_HELP)
    promote.set_defaults(func=cmd_model_promote)
    back = actions.add_parser("rollback", help="undo the recipe's latest promotion")
    back.add_argument("--recipe", required=True, help="recipe id in station.yaml")
    back.add_argument("--station-dir", help=STATION_DIR_HELP)
    back.set_defaults(func=cmd_model_promote)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_schema,
    add_serve,
    add_run,
    add_check,
    add_samples,
    add_teach,
    add_calibrate,
    add_evaluate,
    add_retune,
    add_quantize,
    add_archive,
    add_shadow,
    add_model,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineinspect", description="Line-side visual quality inspection.")
    parser.add_argument("--version", action="version", version=f"lineinspect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except LineinspectError as exc:
        print(f"lineinspect {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
