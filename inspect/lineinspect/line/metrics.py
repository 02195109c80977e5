"""Prometheus metrics of one station, served on `/metrics`.

Two kinds of numbers:

- counted as results arrive (`StationMetrics.observe_result`, a result sink):
  parts by verdict, undecided parts by `undecided_kind`, defects by class,
  per-stage processing time and image score histograms;
- read at scrape time from the station's typed status (`StationStatus`, the
  same snapshot `/v1/status` serves): outbox depth and alarm, broker connection
  and counters, camera state, queue and stream statistics, reject counters and
  the active alarms. Reading them at scrape time keeps one source of truth (the
  object that owns the number) and costs nothing between scrapes.

Every StationMetrics has its own CollectorRegistry (never the process-wide
default), so tests and several apps in one process do not share counters.

Labels: `source` is `camera` for parts seen by a station camera and `upload`
for offline HTTP uploads (their `camera` label is empty).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lineinspect.core.result import Result, Verdict
from lineinspect.line.archive.archive import ArchiveStatus
from lineinspect.line.capture.supervisor import CameraStatus
from lineinspect.line.results_store import source_of
from lineinspect.line.status import BrokerStatus, CameraHealthStatus, RejectStatus, StationStatus, StatusProvider

log = logging.getLogger(__name__)

PREFIX = "lineinspect"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Stage times on a line run from about a millisecond (decide) to a few hundred (inference on a CPU).
STAGE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def metric_name_part(name: str) -> str:
    """A status key as a metric name part: `n_missing-packets` → `n_missing_packets`."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name).strip("_").lower()
    return cleaned or "unnamed"


class StationMetrics:
    """The station's metrics in their own registry: result counters now, status at every scrape."""

    def __init__(self) -> None:
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
            "Undecided parts by kind (the result's undecided_kind: late, queue_full, no_image, camera_lost, ...).",
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
        self._lock = threading.Lock()
        self._last_decided_s: dict[tuple[str, str], float] = {}

    def observe_result(self, result: Result) -> None:
        """Count one final result (a result sink: inspected, undecided and skipped parts, uploads)."""
        source = source_of(result)
        camera = result.camera_id or ""
        recipe = result.recipe_id or ""
        self.parts.labels(source, camera, recipe, result.verdict.value).inc()
        if result.undecided_kind is not None:
            self.undecided.labels(source, camera, result.undecided_kind.value).inc()
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

    def exposition(self, status: StatusProvider | None = None) -> bytes:
        """The Prometheus text format of every metric; with `status`, also the numbers read from it now."""
        text = generate_latest(self.registry)
        if status is None:
            return text
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_StatusCollector(status))
        return text + generate_latest(scrape)


class _StatusCollector(Collector):
    """Gauges and counters read from the station's status for one scrape."""

    def __init__(self, provider: StatusProvider) -> None:
        self.provider = provider

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on what the status holds; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_status_up", "1 when the station's status could be read for this scrape.")
        try:
            status = self.provider()
        except Exception:
            # A broken status must not take the result counters down with it: report it and go on.
            log.exception("reading the station status for /metrics failed")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [
            up,
            *_station_families(status),
            *_broker_families(status.broker),
            *_camera_families(status.cameras),
            *_reject_families(status.reject),
            *_alarm_families(status),
            *_count_families(status.counts),
            *_archive_families(status.archive),
            *_camera_health_families(status.camera_health),
        ]


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc)
    family.add_metric([], value)
    return family


def _station_families(status: StationStatus) -> list[Metric]:
    info = status.station
    families: list[Metric] = [
        _gauge("station_info", "The station's id and UNS path.", 1, {"station": info.id, "path": info.path}),
        _gauge("station_state", "1 for the station's current state.", 1, {"state": info.state}),
    ]
    if info.started_at is not None:
        families.append(
            _gauge("station_start_time_seconds", "When the station started (Unix time).", info.started_at.timestamp())
        )
    if status.outbox is not None:
        families.append(_gauge("outbox_depth_results", "Results stored and not yet acknowledged.", status.outbox.depth))
        families.append(_gauge("outbox_alarm", "1 while the outbox is over its alarm depth.", status.outbox.alarm))
    return families


def _broker_families(broker: BrokerStatus | None) -> list[Metric]:
    if broker is None:
        return []
    stats = broker.stats
    return [
        _gauge("broker_connected", "1 while connected to the MQTT broker.", stats.connected),
        _counter("broker_published_results", "Results handed to the MQTT client (first sends).", stats.published),
        _counter(
            "broker_acked_results",
            "Results the broker acknowledged (PUBACK); their outbox rows are deleted.",
            stats.acked,
        ),
        _counter("broker_resent_results", "Results sent again after a reconnect.", stats.resent),
        _gauge("broker_in_flight_results", "Results sent and not yet acknowledged.", stats.in_flight),
    ]


def _camera_families(cameras: tuple[CameraStatus, ...]) -> list[Metric]:
    if not cameras:
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
        cam = camera.camera_id
        connected.add_metric([cam], 1.0 if camera.state.value == "connected" else 0.0)
        state.add_metric([cam, camera.state.value], 1)
        queue_depth.add_metric([cam], camera.queue_depth)
        queue_size.add_metric([cam], camera.queue_size)
        attempts.add_metric([cam], camera.reconnect_attempts)
        for name, value in camera.counters.items():
            part = metric_name_part(name)
            family = counters.get(part)
            if family is None:
                family = CounterMetricFamily(
                    f"{PREFIX}_camera_{part}", f"Camera supervisor counter '{name}'.", labels=["camera"]
                )
                counters[part] = family
            family.add_metric([cam], value)
        for name, value in camera.stream.items():
            stream.add_metric([cam, name], value)
    return [connected, state, queue_depth, queue_size, attempts, *counters.values(), stream]


def _reject_families(reject: RejectStatus | None) -> list[Metric]:
    """Reject counters (RejectCounters.snapshot()) and the reject station's active alarms by kind."""
    if reject is None:
        return []
    families: list[Metric] = [
        _counter(f"reject_{metric_name_part(name)}", f"Reject actuation counter '{name}'.", value)
        for name, value in reject.counters.items()
    ]
    active = GaugeMetricFamily(
        f"{PREFIX}_reject_alarm_active", "1 while an alarm of this kind is active.", labels=["kind"]
    )
    for kind in sorted({a.kind.value for a in reject.alarms if a.active}):
        active.add_metric([kind], 1.0)
    families.append(active)
    return families


def _alarm_families(status: StationStatus) -> list[Metric]:
    """Every active alarm of the station (reject station and the station itself), by source and kind."""
    active = GaugeMetricFamily(
        f"{PREFIX}_alarm_active",
        "1 while this alarm is active (source: reject, station, camera, ...; severity: alarm, warning).",
        labels=["source", "kind", "severity"],
    )
    for alarm in status.alarms:
        active.add_metric([alarm.source, alarm.kind, alarm.severity], 1.0)
    return [active]


def _count_families(counts: dict[str, int]) -> list[Metric]:
    """The station's part counts that are not verdicts (skipped, late, outbox_refused).

    Parts by verdict are `lineinspect_parts_total` (counted from the results themselves).
    """
    verdicts = {v.value for v in Verdict}
    return [
        _counter(
            f"{metric_name_part(name)}_parts",
            f"Parts the station counted as '{name}' since start (each also has an undecided result).",
            value,
        )
        for name, value in counts.items()
        if name not in verdicts
    ]


_ARCHIVE_COUNTERS = {
    "kept": "Frames written to the image archive.",
    "sampled_out": "Passed parts whose frame the sampling rule left out (archive.pass_sample_every).",
    "skipped_busy": "Frames not kept because the archive's writer was behind (its queue was full).",
    "skipped_failing": "Frames not kept while the archive was failing (disk full, unwritable, index).",
    "write_errors": "Frames whose write failed (disk full, unwritable folder, index error).",
    "evicted": "Frames removed for the disk budget or the age limit.",
    "reviews": "Reviews recorded (confirmed defect, false reject, escape, confirmed good).",
}


def _archive_families(archive: ArchiveStatus | None) -> list[Metric]:
    """The image archive: its state, disk use against its budget, its queue, and what it kept or skipped."""
    if archive is None:
        return []
    families: list[Metric] = [
        _gauge("archive_state", "1 for the image archive's state (ok, failing, off).", 1, {"state": archive.state}),
        _gauge("archive_used_bytes", "Bytes the image archive uses (frames and index).", archive.used_bytes),
        _gauge("archive_budget_bytes", "The image archive's disk budget (archive.budget_bytes).", archive.budget_bytes),
        _gauge("archive_frames", "Frames the image archive holds.", archive.frames),
        _gauge("archive_queue_depth_frames", "Frames waiting for the archive's writer.", archive.queue_depth),
        _gauge(
            "archive_queue_size_frames", "Capacity of the archive's queue (archive.queue_frames).", archive.queue_size
        ),
    ]
    for name, doc in _ARCHIVE_COUNTERS.items():
        families.append(
            _counter(
                f"archive_{name}_frames" if name != "reviews" else "archive_reviews", doc, archive.counters.get(name, 0)
            )
        )
    return families


# measure → (metric name part, what it is): the frame measures of line/camera_health's averages.
_HEALTH_MEASURES = {
    "focus": ("focus", "Focus: variance of the Laplacian at the model's input size (falls as the image blurs)"),
    "mean_level": ("brightness_level", "Brightness: mean grey level 0-255 (falls as the light ages)"),
    "contrast": ("contrast_level", "Contrast: standard deviation of the grey levels"),
    "noise": ("noise_level", "Noise: estimated sensor noise sigma in grey levels (rises with gain, failing light)"),
}


def _camera_health_families(health: tuple[CameraHealthStatus, ...]) -> list[Metric]:
    """Per camera: the frame measures averaged over recent plausible frames, the taught baseline, the drift
    from it (share), and implausible frames (in a row, total)."""
    if not health:
        return []
    families: list[Metric] = []
    for measure, (part, doc) in _HEALTH_MEASURES.items():
        current = GaugeMetricFamily(f"{PREFIX}_camera_{part}", f"{doc}; average over recent frames.", labels=["camera"])
        baseline = GaugeMetricFamily(
            f"{PREFIX}_camera_{part}_baseline", f"{doc}; the taught baseline's median.", labels=["camera"]
        )
        for cam in health:
            if measure in cam.averages:
                current.add_metric([cam.camera_id], cam.averages[measure])
            if cam.baseline is not None and measure in cam.baseline:
                baseline.add_metric([cam.camera_id], cam.baseline[measure])
        families += [current, baseline]
    drift = GaugeMetricFamily(
        f"{PREFIX}_camera_drift_share",
        "How far the camera's average is from its taught baseline ((average - baseline) / baseline).",
        labels=["camera", "measure"],
    )
    in_row = GaugeMetricFamily(
        f"{PREFIX}_camera_implausible_frames_in_row", "Implausible frames in a row now.", labels=["camera"]
    )
    total = CounterMetricFamily(
        f"{PREFIX}_camera_implausible_frames",
        "Implausible frames since start (undecided 'plausibility').",
        labels=["camera"],
    )
    for cam in health:
        for measure, share in cam.drift_shares.items():
            drift.add_metric([cam.camera_id, measure], share)
        in_row.add_metric([cam.camera_id], cam.implausible_in_row)
        total.add_metric([cam.camera_id], cam.implausible_total)
    return [*families, drift, in_row, total]


__all__ = ["CONTENT_TYPE", "StationMetrics"]
