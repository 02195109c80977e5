"""StationMetrics: the Prometheus exposition after results, and the gauges read from the station status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lineinspect.core.result import UndecidedKind, Verdict
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.supervisor import CameraState, CameraStatus
from lineinspect.line.events import StationAlarm
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.mqtt import PublisherStats
from lineinspect.line.reject.alarms import Alarm, AlarmKind
from lineinspect.line.status import (
    MODE_LINE,
    BrokerStatus,
    OfflineStatus,
    OutboxStatus,
    RejectStatus,
    StationInfo,
    StationStatus,
    StatusProvider,
)
from tests.helpers.line_results import finding, line_result


def samples(
    metrics: StationMetrics, status: StatusProvider | None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition (parsed as Prometheus would), by name and labels."""
    text = metrics.exposition(status).decode("utf-8")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    metrics: StationMetrics, name: str, *, status: StatusProvider | None = lambda: STATUS, **labels: str
) -> float | None:
    return samples(metrics, status).get((name, frozenset(labels.items())))


def names(metrics: StationMetrics, *, status: StatusProvider | None) -> set[str]:
    return {name for name, _labels in samples(metrics, status)}


T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def camera(
    camera_id: str, state: CameraState, *, depth: int, attempts: int, counters: dict[str, int], stream: dict[str, int]
) -> CameraStatus:
    return CameraStatus(
        camera_id=camera_id,
        state=state,
        since=T0,
        trigger_mode=TriggerMode.SOFTWARE,
        last_error=None if state is CameraState.CONNECTED else "device removed",
        reconnect_attempts=attempts,
        next_attempt_in_ms=None,
        queue_depth=depth,
        queue_size=4,
        counters=counters,
        stream=stream,
    )


def station_status(*, outbox_depth: int = 12, outbox_alarm: bool = True) -> StationStatus:
    stats = PublisherStats(
        connected=False,
        published=195,
        acked=190,
        resent=2,
        in_flight=0,
        outbox_depth=outbox_depth,
        outbox_alarm=outbox_alarm,
        last_error="connection refused",
    )
    return StationStatus(
        station=StationInfo("teststation", "acme/s1/a1/l1/cell1/lineinspect/teststation", "running", MODE_LINE, T0),
        cameras=(
            camera(
                "cam1",
                CameraState.CONNECTED,
                depth=1,
                attempts=0,
                counters={"frames": 120, "skipped_parts": 2, "missed_frames": 1},
                stream={"n_completed_buffers": 120, "n_missing_packets": 3},
            ),
            camera(
                "cam2",
                CameraState.LOST,
                depth=0,
                attempts=3,
                counters={"frames": 80, "skipped_parts": 5, "missed_frames": 0},
                stream={"failed_buffers": 4},
            ),
        ),
        broker=BrokerStatus("127.0.0.1", 1883, False, stats),
        outbox=OutboxStatus(outbox_depth, outbox_alarm),
        reject=RejectStatus(
            {"fired": 9, "missed": 1, "late": 2, "errors": 0, "undecided_rejected": 7},
            (Alarm(AlarmKind.BIN_FULL, "bin full"),),
            backend="modbus",
            mode="timed",
        ),
        alarms=(
            StationAlarm("reject", "bin_full", "bin full"),
            StationAlarm("station", "outbox_refused", "database or disk is full"),
        ),
        counts={"pass": 180, "fail": 8, "undecided": 7, "skipped": 7, "late": 2, "outbox_refused": 0},
    )


STATUS = station_status()


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


def test_undecided_parts_are_counted_by_their_kind_field_not_their_reason() -> None:
    metrics = StationMetrics()
    kinds = [UndecidedKind.CAMERA_LOST, UndecidedKind.NO_IMAGE, UndecidedKind.NO_IMAGE, UndecidedKind.LATE]
    for kind in kinds:
        # The same wording for all of them: only the field decides how they are counted.
        metrics.observe_result(line_result(verdict=Verdict.UNDECIDED, reason="late: timed out", score=None, kind=kind))
    by_kind = {
        kind: value(metrics, "lineinspect_undecided_parts_total", source="camera", camera="cam1", kind=kind)
        for kind in ("camera_lost", "no_image", "late", "timeout")
    }
    assert by_kind == {"camera_lost": 1, "no_image": 2, "late": 1, "timeout": None}
    assert (
        value(metrics, "lineinspect_parts_total", source="camera", camera="cam1", recipe="bracket", verdict="undecided")
        == 4
    )


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
    now = {"status": station_status(outbox_depth=12, outbox_alarm=True)}
    metrics = StationMetrics()

    def provider() -> StationStatus:
        return now["status"]

    assert value(metrics, "lineinspect_status_up", status=provider) == 1
    assert value(metrics, "lineinspect_outbox_depth_results", status=provider) == 12
    assert value(metrics, "lineinspect_outbox_alarm", status=provider) == 1
    now["status"] = station_status(outbox_depth=0, outbox_alarm=False)
    assert value(metrics, "lineinspect_outbox_depth_results", status=provider) == 0
    assert value(metrics, "lineinspect_outbox_alarm", status=provider) == 0


def test_broker_station_and_reject_numbers_are_exported() -> None:
    metrics = StationMetrics()
    assert value(metrics, "lineinspect_broker_connected") == 0
    assert value(metrics, "lineinspect_broker_acked_results_total") == 190
    assert value(metrics, "lineinspect_broker_resent_results_total") == 2
    assert value(metrics, "lineinspect_station_state", state="running") == 1
    assert value(metrics, "lineinspect_station_start_time_seconds") == 1714543200
    assert value(metrics, "lineinspect_reject_fired_total") == 9
    assert value(metrics, "lineinspect_reject_missed_total") == 1
    assert value(metrics, "lineinspect_reject_undecided_rejected_total") == 7
    assert value(metrics, "lineinspect_reject_alarm_active", kind="bin_full") == 1
    assert value(metrics, "lineinspect_reject_alarm_active", kind="air_low") is None
    assert value(metrics, "lineinspect_alarm_active", source="reject", kind="bin_full", severity="alarm") == 1
    assert value(metrics, "lineinspect_alarm_active", source="station", kind="outbox_refused", severity="alarm") == 1
    assert value(metrics, "lineinspect_skipped_parts_total") == 7
    assert value(metrics, "lineinspect_late_parts_total") == 2
    assert value(metrics, "lineinspect_outbox_refused_parts_total") == 0


def test_camera_state_and_stream_statistics_are_labelled_per_camera() -> None:
    metrics = StationMetrics()
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
    def broken() -> StationStatus:
        raise RuntimeError("station is stopping")

    metrics = StationMetrics()
    metrics.observe_result(line_result())
    assert value(metrics, "lineinspect_status_up", status=broken) == 0
    labels = {"source": "camera", "camera": "cam1", "recipe": "bracket", "verdict": "pass"}
    assert value(metrics, "lineinspect_parts_total", status=broken, **labels) == 1
    assert "reading the station status for /metrics failed" in caplog.text


def test_a_station_without_broker_cameras_or_rejects_exports_no_such_gauges() -> None:
    metrics = StationMetrics()
    offline = OfflineStatus(station_id="s", station_path="a/b/c/d/e/lineinspect/s")
    exported = names(metrics, status=offline)
    assert "lineinspect_status_up" in exported
    assert not {
        n
        for n in exported
        if n.startswith(("lineinspect_broker", "lineinspect_camera", "lineinspect_reject", "lineinspect_outbox_d"))
    }


def test_each_station_metrics_counts_on_its_own() -> None:
    first, second = StationMetrics(), StationMetrics()
    first.observe_result(line_result())
    labels = {"source": "camera", "camera": "cam1", "recipe": "bracket", "verdict": "pass"}
    assert value(first, "lineinspect_parts_total", **labels) == 1
    assert value(second, "lineinspect_parts_total", **labels) is None


def test_without_a_status_only_the_result_counters_are_served() -> None:
    metrics = StationMetrics()
    metrics.observe_result(line_result())
    assert "lineinspect_status_up" not in names(metrics, status=None)
    assert "lineinspect_parts_total" in names(metrics, status=None)
