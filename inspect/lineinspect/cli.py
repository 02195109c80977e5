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


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_schema]


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
