"""Camera health over time, from the frame measures every inspected camera result carries (DESIGN.md §12).

A result sink of the station's fanout. Per camera:

- implausible frames in a row (undecided `plausibility`): after `health.implausible_alarm_after` of
  them the camera alarm `implausible_frames.<camera>` (source `camera`) is raised; the next plausible
  frame clears it;
- focus, brightness, contrast and noise averaged over the last `health.drift_window_frames` plausible
  frames (exponentially); when one of them is more than `health.drift_warn_share` away from the taught
  baseline's median, the warning alarm `health_drift.<camera>` is raised: a slowly fouling lens or an
  ageing light, well before frames become implausible (the taught limits sit at about half the
  baseline). It clears once every measure is back within 80 % of that share (no flapping at the edge).

`status()` gives the typed `CameraHealthStatus` per camera (with a short history for the dashboard's
trend) that `/v1/status` and `/metrics` show.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lineinspect.core.plausibility import FrameBaseline
from lineinspect.core.result import Result, UndecidedKind
from lineinspect.line.capture.config import HealthSettings
from lineinspect.line.events import SEVERITY_WARNING, StationAlarm
from lineinspect.line.results_store import source_of
from lineinspect.line.status import CameraHealthStatus, HealthSample

ALARM_SOURCE = "camera"
IMPLAUSIBLE_KIND = "implausible_frames"
DRIFT_KIND = "health_drift"
# Measures whose drift warns (the result's `frame_<name>` measurement; the share of them that are clipped is
# not one: it is zero on a good camera, so a share of the baseline means nothing).
TRENDED = ("focus", "mean_level", "contrast", "noise")
HISTORY_SAMPLES = 120
CLEAR_SHARE = 0.8  # a drift warning clears at 80 % of the share that raised it
MIN_FRAMES_FOR_DRIFT = 10  # an average of fewer frames is noise, not a trend


class AlarmTable(Protocol):
    """What the watch needs of the event channel (`StationEvents`)."""

    def raise_alarm(self, alarm: StationAlarm) -> None: ...

    def clear_alarm(self, source: str, kind: str, message: str) -> None: ...


@dataclass
class _Camera:
    settings: HealthSettings
    baseline: FrameBaseline | None
    frames: int = 0
    implausible_total: int = 0
    implausible_in_row: int = 0
    implausible_alarm: bool = False
    drift_alarm: bool = False
    averages: dict[str, float] = field(default_factory=dict)
    averaged_frames: int = 0
    history: deque[HealthSample] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))

    def drift_shares(self) -> dict[str, float]:
        """measure → (average − baseline median) / baseline median, for the trended measures with a baseline."""
        if self.baseline is None or self.averaged_frames < MIN_FRAMES_FOR_DRIFT:
            return {}
        shares = {}
        for name in TRENDED:
            median = self.baseline.spread(name).median
            if name in self.averages and median > 0:
                shares[name] = (self.averages[name] - median) / median
        return shares


class CameraHealth:
    """The station's camera health watch: a result sink (thread-safe), alarms through `events`."""

    def __init__(
        self,
        events: AlarmTable,
        *,
        settings: Mapping[str, HealthSettings],
        baselines: Mapping[str, FrameBaseline | None],
    ) -> None:
        """settings: each camera's health settings; baselines: the taught frame baseline of each camera's model."""
        self.events = events
        self._lock = threading.Lock()
        self._cameras = {cam: _Camera(settings[cam], baselines.get(cam)) for cam in settings}

    def __call__(self, result: Result) -> None:
        """Take one final result (a result sink); uploads and parts without a frame are not the camera's health."""
        camera_id = result.camera_id
        if camera_id is None or source_of(result) != "camera" or camera_id not in self._cameras:
            return
        measures = {name: result.measurements.get(f"frame_{name}") for name in TRENDED}
        if any(value is None for value in measures.values()):
            return  # never inspected (no image, queue full, ...): nothing was measured
        implausible = result.undecided_kind is UndecidedKind.PLAUSIBILITY
        with self._lock:
            cam = self._cameras[camera_id]
            cam.frames += 1
            cam.history.append(HealthSample(result.decided_at, {k: float(v or 0.0) for k, v in measures.items()}))
            raise_implausible = clear_implausible = False
            if implausible:
                cam.implausible_total += 1
                cam.implausible_in_row += 1
                if cam.implausible_in_row >= cam.settings.implausible_alarm_after and not cam.implausible_alarm:
                    cam.implausible_alarm = raise_implausible = True
            else:
                cam.implausible_in_row = 0
                clear_implausible, cam.implausible_alarm = cam.implausible_alarm, False
                self._average(cam, measures)
            drift_change = self._drift_change(cam)
            in_row = cam.implausible_in_row
            shares = cam.drift_shares()
            warn_share = cam.settings.drift_warn_share
        if raise_implausible:
            self.events.raise_alarm(
                StationAlarm(
                    ALARM_SOURCE,
                    f"{IMPLAUSIBLE_KIND}.{camera_id}",
                    f"camera {camera_id}: {in_row} implausible frames in a row, parts are rejected unseen; "
                    f"last: {result.reason}. Check the lens, the light, the focus and the camera's ROI",
                    result_id=result.result_id,
                )
            )
        if clear_implausible:
            self.events.clear_alarm(
                ALARM_SOURCE, f"{IMPLAUSIBLE_KIND}.{camera_id}", f"camera {camera_id}: frames are plausible again"
            )
        if drift_change is True:
            drifted = ", ".join(f"{name} {share:+.0%}" for name, share in shares.items() if abs(share) > warn_share)
            self.events.raise_alarm(
                StationAlarm(
                    ALARM_SOURCE,
                    f"{DRIFT_KIND}.{camera_id}",
                    f"camera {camera_id} drifts from its taught baseline ({drifted}, warned beyond "
                    f"±{warn_share:.0%}); clean the lens, check the light and the focus before parts start failing",
                    severity=SEVERITY_WARNING,
                )
            )
        elif drift_change is False:
            self.events.clear_alarm(
                ALARM_SOURCE, f"{DRIFT_KIND}.{camera_id}", f"camera {camera_id} is back near its taught baseline"
            )

    @staticmethod
    def _average(cam: _Camera, measures: Mapping[str, float | None]) -> None:
        alpha = 2.0 / (cam.settings.drift_window_frames + 1)
        for name, value in measures.items():
            if value is None:
                continue
            previous = cam.averages.get(name)
            cam.averages[name] = value if previous is None else previous + alpha * (value - previous)
        cam.averaged_frames += 1

    @staticmethod
    def _drift_change(cam: _Camera) -> bool | None:
        """True: the drift warning is to be raised now; False: cleared now; None: no change."""
        shares = cam.drift_shares()
        if not shares:
            return None
        worst = max(abs(s) for s in shares.values())
        if not cam.drift_alarm and worst > cam.settings.drift_warn_share:
            cam.drift_alarm = True
            return True
        if cam.drift_alarm and worst <= cam.settings.drift_warn_share * CLEAR_SHARE:
            cam.drift_alarm = False
            return False
        return None

    def status(self) -> tuple[CameraHealthStatus, ...]:
        with self._lock:
            return tuple(
                CameraHealthStatus(
                    camera_id=camera_id,
                    frames=cam.frames,
                    implausible_total=cam.implausible_total,
                    implausible_in_row=cam.implausible_in_row,
                    implausible_alarm=cam.implausible_alarm,
                    drift_alarm=cam.drift_alarm,
                    drift_warn_share=cam.settings.drift_warn_share,
                    averages=dict(cam.averages),
                    baseline=None
                    if cam.baseline is None
                    else {name: cam.baseline.spread(name).median for name in TRENDED},
                    drift_shares=cam.drift_shares(),
                    history=tuple(cam.history),
                )
                for camera_id, cam in sorted(self._cameras.items())
            )
