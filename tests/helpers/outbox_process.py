"""An Outbox + ResultPublisher process for crash tests (no camera, no inspection).

Run as `python -m tests.helpers.outbox_process …`.

Feeds `--count` results at `--rate-hz` through a real Outbox + ResultPublisher,
printing `stored <sequence> <result_id>` once each is committed, then `fed`,
then `drained` when the outbox is empty, lingers `--linger-s`, then stops cleanly.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from lineinspect.line.mqtt import MqttSettings, ResultPublisher, StationTopics
from lineinspect.line.outbox import Outbox
from tests.helpers.results import make_result


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--outbox", type=Path, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--rate-hz", type=float, default=20.0)
    p.add_argument("--drain-timeout-s", type=float, default=20.0)
    p.add_argument("--linger-s", type=float, default=0.0, help="stay connected this long before stopping")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    settings = MqttSettings(port=args.port, reconnect_max_delay_s=1)
    outbox = Outbox(args.outbox)
    publisher = ResultPublisher(settings, outbox, StationTopics(args.prefix), client_id="lineinspect-crash-test")
    publisher.start()
    print("started", flush=True)
    try:
        for i in range(args.count):
            stamped = publisher.publish_result(make_result(i, station=args.prefix))
            print(f"stored {stamped.sequence} {stamped.result_id}", flush=True)
            time.sleep(1.0 / args.rate_hz)
        print("fed", flush=True)
        deadline = time.monotonic() + args.drain_timeout_s
        while outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        print("drained" if outbox.depth() == 0 else f"not drained {outbox.depth()}", flush=True)
        time.sleep(args.linger_s)
    finally:
        publisher.close()
        outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
