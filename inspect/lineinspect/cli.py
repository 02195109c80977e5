"""`lineinspect` command line. This is where objects are wired together."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from lineinspect import __version__
from lineinspect.errors import LineinspectError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def cmd_schema(args: argparse.Namespace) -> int:
    from lineinspect.config import station_json_schema
    from lineinspect.result import result_schema

    schema = result_schema() if args.what == "result" else station_json_schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of station.yaml or of a result")
    p.add_argument("what", nargs="?", choices=["station", "result"], default="station")
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

    from lineinspect.synthetic import write_sample_set

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


def cmd_teach(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lineinspect.teach.anomaly import MIN_IMAGES, TeachOptions, teach_anomaly
    from lineinspect.teach.good_folder import find_good_images

    good = find_good_images(Path(args.good), minimum=MIN_IMAGES)
    out = Path(args.out)
    width, height = args.size
    options = TeachOptions(
        name=args.name or out.name,
        width=width,
        height=height,
        target_false_reject=args.target_false_reject,
        holdout_fraction=args.holdout,
        seed=args.seed,
    )
    card = teach_anomaly(good, out, options)
    assert card.anomaly is not None
    print(
        f"model '{card.name}' written to {out} from {card.trained['images']} good images "
        f"in {card.trained['seconds']} s; image threshold {card.anomaly.image_threshold:g}, "
        f"pixel threshold {card.anomaly.pixel_threshold:g} (raw scores)"
    )
    return EXIT_OK


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
    p.set_defaults(func=cmd_teach)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_schema, add_samples, add_teach]


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
