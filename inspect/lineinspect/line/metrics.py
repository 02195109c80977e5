"""Prometheus metrics of one station, served on `/metrics`.

Two kinds of numbers:

- counted as results arrive (`StationMetrics.observe_result`, a result sink):
  parts by verdict, undecided parts by kind, defects by class, per-stage
  processing time and image score histograms;
- read at scrape time from the station's `status()` dict (the same one
  `/v1/status` serves): outbox depth and alarm, broker connection and
  counters, camera state, queue and stream statistics, reject counters and
  alarms. Reading them at scrape time keeps one source of truth (the object
  that owns the number) and costs nothing between scrapes.

Every StationMetrics has its own CollectorRegistry (never the process-wide
default), so tests and several apps in one process do not share counters.

Labels: `source` is `camera` for parts seen by a station camera and `upload`
for offline HTTP uploads (their `camera` label is empty).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lineinspect.core.recipe import Verdict
from lineinspect.core.result import Result
from lineinspect.line.results_store import source_of

log = logging.getLogger(__name__)

PREFIX = "lineinspect"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Stage times on a line run from about a millisecond (decide) to a few hundred (inference on a CPU).
STAGE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

StatusProvider = Callable[[], Mapping[str, Any]]


class UndecidedKind(StrEnum):
    """Why a part got no pass/fail, from its `reason` (see `undecided_kind`)."""

    SKIPPED = "skipped"  # never inspected: no image, broken image, camera lost, queue full
    TIMEOUT = "timeout"  # the inspection did not finish within its time limit
    LATE = "late"  # inspected, but past the part's deadline
    ERROR = "error"  # the inspection failed (model, preprocessing, a bug)
    OTHER = "other"


# Reason openings the camera supervisor (capture/supervisor.py) uses for parts it gives up.
_SKIPPED_OPENINGS = (
    "skipped",
    "not inspected",
    "camera ",
    "no image",
    "image broken",
    "inspection queue full",
    "software trigger failed",
)


def undecided_kind(reason: str) -> UndecidedKind:
    """Classify an undecided result by its reason text.

    The runtime opens reasons with the kind: `not inspected: <the camera's reason>` (or the
    supervisor's own SkippedPart reason), `timed out: ...`, `late: ...`, `inspection error: ...`,
    `not stored for the MES: ...` (an error). The opening decides; a reason such as `late: ... (the
    inspection said: timed out)` is late. Otherwise words anywhere decide: deadline, timed out, error.
    """
    text = reason.strip().lower()
    if text.startswith(_SKIPPED_OPENINGS):
        return UndecidedKind.SKIPPED
    if text.startswith(("timed out", "timeout")):
        return UndecidedKind.TIMEOUT
    if text.startswith("late"):
        return UndecidedKind.LATE
    if text.startswith(("inspection error", "not stored")):
        return UndecidedKind.ERROR
    if "deadline" in text:
        return UndecidedKind.LATE
    if "timed out" in text or "timeout" in text:
        return UndecidedKind.TIMEOUT
    if "error" in text:
        return UndecidedKind.ERROR
    return UndecidedKind.OTHER


def metric_name_part(name: str) -> str:
    """A status key as a metric name part: `n_missing-packets` → `n_missing_packets`."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name).strip("_").lower()
    return cleaned or "unnamed"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class StationMetrics:
    """The station's metrics in their own registry.

    status_provider: returns the station's status dict (keys `station`, `cameras`, `broker`,
    `outbox`, `reject`, `counts`; any may be missing or None); read on every scrape. It can be
    given later with `use_status`, e.g. once the station object exists.
    """

    def __init__(self, *, status_provider: StatusProvider | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.parts = Counter(
            f"{PREFIX}_parts",
            "Parts judged, by verdict (undecided parts are rejected by default).",
            ["source", "camera", "recipe", "verdict"],
            registry=r,
        )
        self.undecided = Counter(
            f"{PREFIX}_undecided_parts",
            "Undecided parts by kind: skipped (never inspected), timeout, late, error, other.",
            ["source", "camera", "kind"],
            registry=r,
        )
        self.defects = Counter(
            f"{PREFIX}_defects",
            "Defects reported, by class; counted=true when the defect counted against its part.",
            ["source", "camera", "class", "counted"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Processing time per stage (decode, preprocess, infer, postprocess, decide, total, ...).",
            ["source", "camera", "stage"],
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.image_score = Histogram(
            f"{PREFIX}_image_score",
            "Image-level defect score (0-1, higher = worse) of inspected parts.",
            ["source", "camera", "recipe"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.last_result = Gauge(
            f"{PREFIX}_last_result_timestamp_seconds",
            "When the latest result was decided (Unix time); a line that stopped shows here.",
            ["source", "camera"],
            registry=r,
        )
        self._status = _StatusCollector(status_provider)
        r.register(self._status)
        self._lock = threading.Lock()
        self._last_decided_s: dict[tuple[str, str], float] = {}

    def use_status(self, provider: StatusProvider | None) -> None:
        """Read the station's status from `provider` on every scrape from now on."""
        self._status.provider = provider

    def observe_result(self, result: Result) -> None:
        """Count one final result (a result sink: inspected, undecided and skipped parts, uploads)."""
        source = source_of(result)
        camera = result.camera_id or ""
        recipe = result.recipe_id or ""
        self.parts.labels(source, camera, recipe, result.verdict.value).inc()
        if result.verdict is Verdict.UNDECIDED:
            self.undecided.labels(source, camera, undecided_kind(result.reason).value).inc()
        for finding in result.findings:
            counted = "true" if finding.counts else "false"
            self.defects.labels(source, camera, finding.defect.class_name, counted).inc()
        for stage, ms in result.timings_ms.items():
            if ms >= 0:
                self.stage_seconds.labels(source, camera, stage).observe(ms / 1000.0)
        if result.score is not None:
            self.image_score.labels(source, camera, recipe).observe(result.score)
        decided_s = result.decided_at.timestamp()
        with self._lock:  # two results of one camera arriving together: keep the later time
            if decided_s > self._last_decided_s.get((source, camera), 0.0):
                self._last_decided_s[(source, camera)] = decided_s
                self.last_result.labels(source, camera).set(decided_s)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _StatusCollector(Collector):
    """Gauges and counters read from the status dict at scrape time."""

    def __init__(self, provider: StatusProvider | None) -> None:
        self.provider = provider

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on what the status holds; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        provider = self.provider
        if provider is None:
            return []
        up = GaugeMetricFamily(f"{PREFIX}_status_up", "1 when the station's status could be read for this scrape.")
        try:
            status = provider()
        except Exception:
            # A broken status must not take the result counters down with it: report it and go on.
            log.exception("reading the station status for /metrics failed")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        families: list[Metric] = [up]
        families.extend(_station_families(status.get("station")))
        families.extend(_broker_families(status.get("broker")))
        families.extend(_outbox_families(status.get("outbox"), status.get("broker")))
        families.extend(_camera_families(status.get("cameras")))
        families.extend(_reject_families(status.get("reject")))
        families.extend(_count_families(status.get("counts")))
        return families


def _station_families(station: Any) -> list[Metric]:
    if not isinstance(station, Mapping):
        return []
    info = GaugeMetricFamily(f"{PREFIX}_station_info", "The station's id and UNS path.", labels=["station", "path"])
    info.add_metric([str(station.get("id") or ""), str(station.get("path") or "")], 1)
    families: list[Metric] = [info]
    state = station.get("state")
    if state is not None:
        gauge = GaugeMetricFamily(f"{PREFIX}_station_state", "1 for the station's current state.", labels=["state"])
        gauge.add_metric([str(state)], 1)
        families.append(gauge)
    started = station.get("started_at")
    if isinstance(started, str):
        try:
            started_s = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
        except ValueError:
            started_s = None
        if started_s is not None:
            gauge = GaugeMetricFamily(f"{PREFIX}_station_start_time_seconds", "When the station started (Unix time).")
            gauge.add_metric([], started_s)
            families.append(gauge)
    return families


_BROKER_COUNTERS = {
    "published": "Results handed to the MQTT client (first sends).",
    "acked": "Results the broker acknowledged (PUBACK); their outbox rows are deleted.",
    "resent": "Results sent again after a reconnect.",
}


def _broker_families(broker: Any) -> list[Metric]:
    if not isinstance(broker, Mapping):
        return []
    families: list[Metric] = []
    connected = _number(broker.get("connected"))
    if connected is not None:
        gauge = GaugeMetricFamily(f"{PREFIX}_broker_connected", "1 while connected to the MQTT broker.")
        gauge.add_metric([], connected)
        families.append(gauge)
    for name, doc in _BROKER_COUNTERS.items():
        value = _number(broker.get(name))
        if value is not None:
            counter = CounterMetricFamily(f"{PREFIX}_broker_{name}_results", doc)
            counter.add_metric([], value)
            families.append(counter)
    in_flight = _number(broker.get("in_flight"))
    if in_flight is not None:
        gauge = GaugeMetricFamily(f"{PREFIX}_broker_in_flight_results", "Results sent and not yet acknowledged.")
        gauge.add_metric([], in_flight)
        families.append(gauge)
    return families


def _outbox_families(outbox: Any, broker: Any) -> list[Metric]:
    # The outbox numbers live in `outbox` ({depth, alarm}); the broker stats repeat them.
    source = outbox if isinstance(outbox, Mapping) else {}
    fallback = broker if isinstance(broker, Mapping) else {}
    depth = _number(source.get("depth", fallback.get("outbox_depth")))
    alarm = _number(source.get("alarm", fallback.get("outbox_alarm")))
    families: list[Metric] = []
    if depth is not None:
        gauge = GaugeMetricFamily(f"{PREFIX}_outbox_depth_results", "Results stored and not yet acknowledged.")
        gauge.add_metric([], depth)
        families.append(gauge)
    if alarm is not None:
        gauge = GaugeMetricFamily(f"{PREFIX}_outbox_alarm", "1 while the outbox is over its alarm depth.")
        gauge.add_metric([], alarm)
        families.append(gauge)
    return families


def _camera_families(cameras: Any) -> list[Metric]:
    if not isinstance(cameras, list) or not cameras:
        return []
    connected = GaugeMetricFamily(
        f"{PREFIX}_camera_connected", "1 while the camera is connected and delivering.", labels=["camera"]
    )
    state = GaugeMetricFamily(f"{PREFIX}_camera_state", "1 for the camera's current state.", labels=["camera", "state"])
    queue_depth = GaugeMetricFamily(
        f"{PREFIX}_camera_queue_depth_frames", "Frames waiting for inspection.", labels=["camera"]
    )
    queue_size = GaugeMetricFamily(
        f"{PREFIX}_camera_queue_size_frames", "Capacity of the camera's inspection queue.", labels=["camera"]
    )
    attempts = GaugeMetricFamily(
        f"{PREFIX}_camera_reconnect_attempts", "Reconnect attempts since the camera was lost.", labels=["camera"]
    )
    stream = CounterMetricFamily(
        f"{PREFIX}_camera_stream",
        "The camera SDK's stream statistics (pylon stream grabber, Aravis stream), by statistic.",
        labels=["camera", "statistic"],
    )
    counters: dict[str, CounterMetricFamily] = {}
    for camera in cameras:
        if not isinstance(camera, Mapping):
            continue
        cam = str(camera.get("camera_id") or "")
        cam_state = str(camera.get("state") or "unknown")
        connected.add_metric([cam], 1.0 if cam_state == "connected" else 0.0)
        state.add_metric([cam, cam_state], 1)
        queue = camera.get("queue")
        if isinstance(queue, Mapping):
            for gauge, key in ((queue_depth, "depth"), (queue_size, "size")):
                value = _number(queue.get(key))
                if value is not None:
                    gauge.add_metric([cam], value)
        value = _number(camera.get("reconnect_attempts"))
        if value is not None:
            attempts.add_metric([cam], value)
        for name, raw in (camera.get("counters") or {}).items():
            value = _number(raw)
            if value is None:
                continue
            part = metric_name_part(name)
            family = counters.get(part)
            if family is None:
                family = CounterMetricFamily(
                    f"{PREFIX}_camera_{part}", f"Camera supervisor counter '{name}'.", labels=["camera"]
                )
                counters[part] = family
            family.add_metric([cam], value)
        for name, raw in (camera.get("stream") or {}).items():
            value = _number(raw)
            if value is not None:
                stream.add_metric([cam, str(name)], value)
    return [connected, state, queue_depth, queue_size, attempts, *counters.values(), stream]


def _reject_families(reject: Any) -> list[Metric]:
    """Reject counters (RejectCounters.snapshot()) and active alarms.

    Takes `{"counters": {...}, "alarms": [...]}` or the snapshot's names at the top level.
    """
    if not isinstance(reject, Mapping):
        return []
    counters = reject.get("counters")
    if not isinstance(counters, Mapping):
        counters = {k: v for k, v in reject.items() if k != "alarms"}
    families: list[Metric] = []
    for name, raw in counters.items():
        value = _number(raw)
        if value is None:
            continue
        counter = CounterMetricFamily(
            f"{PREFIX}_reject_{metric_name_part(name)}", f"Reject actuation counter '{name}'."
        )
        counter.add_metric([], value)
        families.append(counter)
    alarms = reject.get("alarms")
    if isinstance(alarms, list):
        active = GaugeMetricFamily(
            f"{PREFIX}_reject_alarm_active", "1 while an alarm of this kind is active.", labels=["kind"]
        )
        kinds: dict[str, bool] = {}
        for alarm in alarms:
            if isinstance(alarm, Mapping) and alarm.get("kind"):
                kind = str(alarm["kind"])
                kinds[kind] = kinds.get(kind, False) or bool(alarm.get("active", True))
        for kind, is_active in sorted(kinds.items()):
            active.add_metric([kind], 1.0 if is_active else 0.0)
        families.append(active)
    return families


def _count_families(counts: Any) -> list[Metric]:
    """The station's part counts that are not verdicts (skipped, late, outbox_refused, ...).

    Parts by verdict are `lineinspect_parts_total` (counted from the results themselves).
    """
    if not isinstance(counts, Mapping):
        return []
    verdicts = {v.value for v in Verdict}
    families: list[Metric] = []
    for name, raw in counts.items():
        value = _number(raw)
        if name in verdicts or value is None:
            continue
        counter = CounterMetricFamily(
            f"{PREFIX}_{metric_name_part(name)}_parts",
            f"Parts the station counted as '{name}' since start (each also has an undecided result).",
        )
        counter.add_metric([], value)
        families.append(counter)
    return families


__all__ = ["CONTENT_TYPE", "StationMetrics", "StatusProvider", "UndecidedKind", "undecided_kind"]
