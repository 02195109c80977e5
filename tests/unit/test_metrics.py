"""StationMetrics: the Prometheus exposition after results, and the gauges read from the station status."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lineinspect.core.recipe import Verdict
from lineinspect.line.metrics import StationMetrics, UndecidedKind, undecided_kind
from tests.helpers.line_results import finding, line_result


def samples(metrics: StationMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition (parsed as Prometheus would), by name and labels."""
    text = metrics.exposition().decode("utf-8")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: StationMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def names(metrics: StationMetrics) -> set[str]:
    return {name for name, _labels in samples(metrics)}


STATUS: dict[str, Any] = {
    "station": {
        "id": "teststation",
        "path": "acme/s1/a1/l1/cell1/lineinspect/teststation",
        "state": "running",
        "started_at": "2024-05-01T06:00:00Z",
    },
    "cameras": [
        {
            "camera_id": "cam1",
            "state": "connected",
            "queue": {"depth": 1, "size": 4},
            "reconnect_attempts": 0,
            "counters": {"frames": 120, "skipped_parts": 2, "missed_frames": 1},
            "stream": {"n_completed_buffers": 120, "n_missing_packets": 3},
        },
        {
            "camera_id": "cam2",
            "state": "lost",
            "queue": {"depth": 0, "size": 4},
            "reconnect_attempts": 3,
            "last_error": "device removed",
            "counters": {"frames": 80, "skipped_parts": 5, "missed_frames": 0},
            "stream": {"failed_buffers": 4},
        },
    ],
    "broker": {
        "connected": False,
        "published": 195,
        "acked": 190,
        "resent": 2,
        "in_flight": 0,
        "outbox_depth": 12,
        "outbox_alarm": True,
        "last_error": "connection refused",
    },
    "outbox": {"depth": 12, "alarm": True},
    "reject": {
        "counters": {"fired": 9, "missed": 1, "late": 2, "errors": 0, "undecided_rejected": 7},
        "alarms": [{"kind": "bin_full", "active": True}, {"kind": "air_low", "active": False}],
    },
    "counts": {"pass": 180, "fail": 8, "undecided": 7, "skipped": 7, "late": 2, "outbox_refused": 0},
}


def test_parts_are_counted_by_verdict_camera_recipe_and_source() -> None:
    metrics = StationMetrics()
    for _ in range(3):
        metrics.observe_result(line_result(camera="cam1"))
    metrics.observe_result(line_result(camera="cam1", verdict=Verdict.FAIL, defects=(finding("scratch"),)))
    metrics.observe_result(line_result(camera=None, verdict=Verdict.FAIL, recipe="housing"))
    labels = {"source": "camera", "camera": "cam1", "recipe": "bracket"}
    assert value(metrics, "lineinspect_parts_total", **labels, verdict="pass") == 3
    assert value(metrics, "lineinspect_parts_total", **labels, verdict="fail") == 1
    upload = {"source": "upload", "camera": "", "recipe": "housing", "verdict": "fail"}
    assert value(metrics, "lineinspect_parts_total", **upload) == 1


def test_undecided_parts_are_counted_by_kind() -> None:
    metrics = StationMetrics()
    reasons = [
        "skipped: camera lost: device removed",
        "no image within 1000 ms of the software trigger",
        "timed out: not inspected within 500 ms",
        "late: decided 40 ms after the part's deadline",
        "inspection error: RuntimeError: boom",
    ]
    for reason in reasons:
        metrics.observe_result(line_result(verdict=Verdict.UNDECIDED, reason=reason, score=None))
    by_kind = {
        kind: value(metrics, "lineinspect_undecided_parts_total", source="camera", camera="cam1", kind=kind)
        for kind in ("skipped", "timeout", "late", "error")
    }
    assert by_kind == {"skipped": 2, "timeout": 1, "late": 1, "error": 1}
    assert (
        value(metrics, "lineinspect_parts_total", source="camera", camera="cam1", recipe="bracket", verdict="undecided")
        == 5
    )


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("skipped: inspection queue full (4 parts waiting)", UndecidedKind.SKIPPED),
        ("camera lost: device removed", UndecidedKind.SKIPPED),
        ("image broken: incomplete buffer", UndecidedKind.SKIPPED),
        ("inspection queue full (4 parts waiting); oldest part given up", UndecidedKind.SKIPPED),
        ("timed out: not inspected within 500 ms (http.inference_timeout_ms)", UndecidedKind.TIMEOUT),
        ("late: result 12 ms past the deadline", UndecidedKind.LATE),
        ("not inspected: no image within 1000 ms of the software trigger", UndecidedKind.SKIPPED),
        ("late: decided after 90 ms, budget 50 ms (the inspection said undecided: timed out)", UndecidedKind.LATE),
        ("not stored for the MES: outbox full", UndecidedKind.ERROR),
        ("decided after the part's deadline", UndecidedKind.LATE),
        ("inspection error: ValueError: bad shape", UndecidedKind.ERROR),
        ("operator override", UndecidedKind.OTHER),
    ],
)
def test_undecided_kind_reads_the_reason(reason: str, kind: UndecidedKind) -> None:
    assert undecided_kind(reason) is kind


def test_stage_times_land_in_second_buckets() -> None:
    metrics = StationMetrics()
    metrics.observe_result(line_result(timings_ms={"infer": 12.0, "decide": 0.4}))
    base = {"source": "camera", "camera": "cam1", "stage": "infer"}
    assert value(metrics, "lineinspect_stage_duration_seconds_bucket", **base, le="0.01") == 0
    assert value(metrics, "lineinspect_stage_duration_seconds_bucket", **base, le="0.02") == 1
    assert value(metrics, "lineinspect_stage_duration_seconds_sum", **base) == pytest.approx(0.012)
    decide = {**base, "stage": "decide"}
    assert value(metrics, "lineinspect_stage_duration_seconds_bucket", **decide, le="0.001") == 1


def test_image_scores_and_defects_by_class_are_counted() -> None:
    metrics = StationMetrics()
    metrics.observe_result(
        line_result(
            verdict=Verdict.FAIL,
            score=0.83,
            defects=(finding("scratch"), finding("scratch"), finding("dent", counts=False)),
        )
    )
    metrics.observe_result(line_result(verdict=Verdict.UNDECIDED, score=None))  # no score: not observed
    base = {"source": "camera", "camera": "cam1"}
    assert value(metrics, "lineinspect_defects_total", **base, **{"class": "scratch"}, counted="true") == 2
    assert value(metrics, "lineinspect_defects_total", **base, **{"class": "dent"}, counted="false") == 1
    score = {**base, "recipe": "bracket"}
    assert value(metrics, "lineinspect_image_score_count", **score) == 1
    assert value(metrics, "lineinspect_image_score_bucket", **score, le="0.8") == 0
    assert value(metrics, "lineinspect_image_score_bucket", **score, le="0.9") == 1


def test_status_gauges_are_read_at_scrape_time() -> None:
    status = {**STATUS, "outbox": {"depth": 12, "alarm": True}}
    metrics = StationMetrics(status_provider=lambda: status)
    assert value(metrics, "lineinspect_status_up") == 1
    assert value(metrics, "lineinspect_outbox_depth_results") == 12
    assert value(metrics, "lineinspect_outbox_alarm") == 1
    status["outbox"] = {"depth": 0, "alarm": False}
    assert value(metrics, "lineinspect_outbox_depth_results") == 0
    assert value(metrics, "lineinspect_outbox_alarm") == 0


def test_broker_station_and_reject_numbers_are_exported() -> None:
    metrics = StationMetrics(status_provider=lambda: STATUS)
    assert value(metrics, "lineinspect_broker_connected") == 0
    assert value(metrics, "lineinspect_broker_acked_results_total") == 190
    assert value(metrics, "lineinspect_broker_resent_results_total") == 2
    assert value(metrics, "lineinspect_station_state", state="running") == 1
    assert value(metrics, "lineinspect_station_start_time_seconds") == 1714543200
    assert value(metrics, "lineinspect_reject_fired_total") == 9
    assert value(metrics, "lineinspect_reject_missed_total") == 1
    assert value(metrics, "lineinspect_reject_undecided_rejected_total") == 7
    assert value(metrics, "lineinspect_reject_alarm_active", kind="bin_full") == 1
    assert value(metrics, "lineinspect_reject_alarm_active", kind="air_low") == 0
    assert value(metrics, "lineinspect_skipped_parts_total") == 7
    assert value(metrics, "lineinspect_late_parts_total") == 2
    assert value(metrics, "lineinspect_outbox_refused_parts_total") == 0


def test_reject_counters_are_read_from_a_flat_snapshot_too() -> None:
    status = {"reject": {"fired": 4, "late": 1, "alarms": []}}
    metrics = StationMetrics(status_provider=lambda: status)
    assert value(metrics, "lineinspect_reject_fired_total") == 4
    assert value(metrics, "lineinspect_reject_late_total") == 1


def test_camera_state_and_stream_statistics_are_labelled_per_camera() -> None:
    metrics = StationMetrics(status_provider=lambda: STATUS)
    assert value(metrics, "lineinspect_camera_connected", camera="cam1") == 1
    assert value(metrics, "lineinspect_camera_connected", camera="cam2") == 0
    assert value(metrics, "lineinspect_camera_state", camera="cam2", state="lost") == 1
    assert value(metrics, "lineinspect_camera_reconnect_attempts", camera="cam2") == 3
    assert value(metrics, "lineinspect_camera_queue_depth_frames", camera="cam1") == 1
    assert value(metrics, "lineinspect_camera_frames_total", camera="cam2") == 80
    assert value(metrics, "lineinspect_camera_skipped_parts_total", camera="cam2") == 5
    assert value(metrics, "lineinspect_camera_stream_total", camera="cam1", statistic="n_missing_packets") == 3
    assert value(metrics, "lineinspect_camera_stream_total", camera="cam2", statistic="failed_buffers") == 4


def test_a_broken_status_provider_leaves_the_result_counters_served(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("station is stopping")

    metrics = StationMetrics(status_provider=broken)
    metrics.observe_result(line_result())
    assert value(metrics, "lineinspect_status_up") == 0
    assert (
        value(metrics, "lineinspect_parts_total", source="camera", camera="cam1", recipe="bracket", verdict="pass") == 1
    )
    assert "reading the station status for /metrics failed" in caplog.text


def test_a_station_without_broker_cameras_or_rejects_exports_no_such_gauges() -> None:
    metrics = StationMetrics(status_provider=lambda: {"cameras": [], "broker": None, "outbox": None, "reject": None})
    exported = names(metrics)
    assert "lineinspect_status_up" in exported
    assert not {
        n
        for n in exported
        if n.startswith(("lineinspect_broker", "lineinspect_camera", "lineinspect_reject", "lineinspect_outbox"))
    }


def test_each_station_metrics_counts_on_its_own() -> None:
    first, second = StationMetrics(), StationMetrics()
    first.observe_result(line_result())
    labels = {"source": "camera", "camera": "cam1", "recipe": "bracket", "verdict": "pass"}
    assert value(first, "lineinspect_parts_total", **labels) == 1
    assert value(second, "lineinspect_parts_total", **labels) is None


def test_status_provider_can_be_given_after_the_metrics_exist() -> None:
    metrics = StationMetrics()
    assert "lineinspect_status_up" not in names(metrics)
    metrics.use_status(lambda: STATUS)
    assert value(metrics, "lineinspect_outbox_depth_results") == 12
