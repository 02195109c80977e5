"""Camera health: implausible frames in a row → alarm, a drift from the taught baseline → a warning first,
and the measures as /metrics gauges."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from lineinspect.core.frame import Frame
from lineinspect.core.modelcard import load_card
from lineinspect.core.part import PartRef
from lineinspect.core.plausibility import FrameBaseline
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.camera_health import CameraHealth
from lineinspect.line.capture.config import HealthSettings
from lineinspect.line.events import StationAlarm
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.status import StationInfo, StationStatus

ROOT = Path(__file__).resolve().parents[2]


class AlarmTable:
    def __init__(self) -> None:
        self.active: dict[str, StationAlarm] = {}
        self.log: list[tuple[str, str]] = []

    def raise_alarm(self, alarm: StationAlarm) -> None:
        self.active[alarm.kind] = alarm
        self.log.append(("raise", alarm.kind))

    def clear_alarm(self, source: str, kind: str, message: str) -> None:
        self.active.pop(kind, None)
        self.log.append(("clear", kind))


def baseline() -> FrameBaseline:
    card_baseline = load_card(ROOT / "models" / "default").frame_baseline
    assert card_baseline is not None
    return card_baseline


def camera_result(focus: float, *, mean_level: float = 90.0, implausible: bool = False) -> Result:
    """A camera result carrying frame measures, as the Inspector makes them (plausible: a pass)."""
    frame = Frame(np.zeros((4, 4), np.uint8), camera_id="cam1", part=PartRef("cam1", 1, 0))
    measures: dict[str, float | None] = {
        "frame_focus": focus,
        "frame_mean_level": mean_level,
        "frame_contrast": 48.0,
        "frame_noise": 0.9,
    }
    result = Result.undecided(None, UndecidedKind.PLAUSIBILITY, "implausible frame: focus ...", frame=frame)
    if not implausible:
        result = replace(result, verdict=Verdict.PASS, undecided_kind=None, reason="no defect found")
    return replace(result, measurements=measures)


def watch(alarms: AlarmTable, **settings: float) -> CameraHealth:
    return CameraHealth(
        alarms, settings={"cam1": HealthSettings.model_validate(settings)}, baselines={"cam1": baseline()}
    )


def test_implausible_frames_in_a_row_raise_the_camera_alarm_and_a_plausible_one_clears_it() -> None:
    alarms = AlarmTable()
    health = watch(alarms, implausible_alarm_after=3)
    for _ in range(2):
        health(camera_result(0.0, implausible=True))
    assert alarms.active == {}
    health(camera_result(0.0, implausible=True))
    assert set(alarms.active) == {"implausible_frames.cam1"}
    assert alarms.active["implausible_frames.cam1"].source == "camera"
    assert "3 implausible frames in a row" in alarms.active["implausible_frames.cam1"].message
    health(camera_result(0.0, implausible=True))  # still on: raised once
    health(camera_result(4600.0))
    assert alarms.active == {}
    assert alarms.log == [("raise", "implausible_frames.cam1"), ("clear", "implausible_frames.cam1")]


def test_a_slowly_blurring_lens_warns_before_frames_become_implausible() -> None:
    alarms = AlarmTable()
    health = watch(alarms, drift_warn_share=0.25, drift_window_frames=10)
    median = baseline().focus.median
    min_focus = baseline().limits().min_focus
    assert min_focus is not None
    warned_at = None
    for step in range(200):
        focus = median * (1.0 - step * 0.004)  # 0.4 % sharper-lost per part
        health(camera_result(focus))
        if "health_drift.cam1" in alarms.active and warned_at is None:
            warned_at = focus
    assert warned_at is not None, "no drift warning"
    assert warned_at > min_focus * 1.5  # well before the part's frames fail the focus limit
    assert alarms.active["health_drift.cam1"].message.startswith("camera cam1 drifts")
    assert alarms.active["health_drift.cam1"].severity == "warning"  # parts are still judged
    assert "focus -" in alarms.active["health_drift.cam1"].message
    for _ in range(60):  # the lens is cleaned
        health(camera_result(median))
    assert "health_drift.cam1" not in alarms.active


def test_uploads_and_never_inspected_parts_are_not_the_cameras_health() -> None:
    alarms = AlarmTable()
    health = watch(alarms)
    upload = Result.undecided(None, UndecidedKind.PLAUSIBILITY, "x", frame=Frame(np.zeros((4, 4), np.uint8)))
    health(upload)
    skipped = Result.undecided(PartRef("cam1", 2, 0), UndecidedKind.NO_IMAGE, "no image")
    health(skipped)
    (status,) = health.status()
    assert status.frames == 0


def test_camera_health_is_in_metrics_and_status() -> None:
    health = watch(AlarmTable())
    for _ in range(12):
        health(camera_result(4000.0))
    status = StationStatus(station=StationInfo("s", "a/b", "running", "line", None), counts={},
                           camera_health=health.status())  # fmt: skip
    text = StationMetrics().exposition(lambda: status).decode()
    assert 'lineinspect_camera_focus{camera="cam1"} 4000.0' in text
    assert f'lineinspect_camera_focus_baseline{{camera="cam1"}} {baseline().focus.median}' in text
    assert 'lineinspect_camera_brightness_level{camera="cam1"}' in text
    assert 'lineinspect_camera_noise_level{camera="cam1"}' in text
    assert 'lineinspect_camera_drift_share{camera="cam1",measure="focus"}' in text
    payload = status.to_payload()["camera_health"][0]
    assert payload["camera_id"] == "cam1" and len(payload["history"]) == 12
    assert payload["baseline"]["focus"] == round(baseline().focus.median, 3)
