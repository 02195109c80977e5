"""Implausible camera frames on a running station: undecided, rejected, a camera alarm after N in a row and
cleared by the next plausible frame; the camera's health in /v1/status and /metrics; a drift warning."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.plausibility import measure_frame
from lineinspect.core.result import Result, UndecidedKind, Verdict
from lineinspect.line.metrics import StationMetrics
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_runtime import running_station, write_line_station
from tests.helpers.waiting import wait_for
from tests.integration.test_station_runtime import Collected

W, H = 96, 64


def textured_part(seed: int = 0) -> np.ndarray:
    """A dark part with a fine texture (the `bright` model passes it), (64, 96, 3) BGR uint8."""
    rng = np.random.default_rng(seed)
    gray = (30 + rng.integers(0, 25, (H, W))).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def frames() -> dict[str, np.ndarray]:
    good = textured_part()
    return {
        "good": good,
        "black": np.zeros_like(good),
        "saturated": np.full_like(good, 255),
        "blurred": cv2.GaussianBlur(good, (0, 0), 2.5),
        "tiny": good[:6, :6],
        "wrong_size": cv2.resize(good, (W - 16, H)),
    }


def write_parts(station_dir: Path, names: list[str]) -> None:
    """The folder camera's parts, replayed in this order."""
    folder = station_dir / "parts"
    shutil.rmtree(folder)
    folder.mkdir()
    made = frames()
    for i, name in enumerate(names):
        assert cv2.imwrite(str(folder / f"part{i:03d}_{name}.png"), made[name])


def camera_frame_limits() -> dict[str, float | int]:
    """The camera's own limits: its configured size, and a focus limit (the `bright` card has no baseline)."""
    good = measure_frame(textured_part(), width_px=64, height_px=64, frame_shape=(H, W, 3))
    return {"width_px": W, "height_px": H, "min_focus": round(good.focus / 3, 1)}


def test_implausible_camera_frames_are_undecided_raise_the_camera_alarm_and_clear_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    bad = ["black", "saturated", "blurred", "tiny", "wrong_size"]
    order = ["good", *bad, "good"]
    write_line_station(
        tmp_path,
        mosquitto.port,
        camera={"frame": camera_frame_limits(), "health": {"implausible_alarm_after": 3}},
    )
    write_parts(tmp_path, order)
    sink = Collected()
    alarms_seen: list[set[str]] = []
    with running_station(tmp_path, result_sinks=(sink,)) as station:
        wait_for(lambda: station.status().cameras[0].state.value == "connected", 5, "camera connected")
        health = next(s for s in station.fanout.sinks if type(s).__name__ == "CameraHealth")
        for i in range(len(order)):
            station.trigger("cam1", part_id=f"P{i}")
            wait_for(lambda n=i + 1: len(sink) >= n, 10, f"result {i + 1}")
            alarms_seen.append({a.kind for a in station.events.active_alarms})
        metrics = StationMetrics()
        for result in sink.results:
            metrics.observe_result(result)
        camera_health = health.status()
    results: list[Result] = sink.results
    assert [r.verdict for r in results] == [Verdict.PASS, *[Verdict.UNDECIDED] * len(bad), Verdict.PASS]
    for name, result in zip(bad, results[1:-1], strict=True):
        assert result.undecided_kind is UndecidedKind.PLAUSIBILITY, (name, result.reason)
        assert result.reason.startswith("implausible frame: "), name
    assert "(width_px, camera 'cam1')" in results[5].reason
    assert "focus (Laplacian variance)" in results[3].reason and "(min_focus, camera 'cam1')" in results[3].reason
    # The alarm: raised at the third implausible frame in a row, cleared by the next plausible one.
    kind = "implausible_frames.cam1"
    assert [kind in seen for seen in alarms_seen] == [False, False, False, True, True, True, False]
    (cam,) = camera_health
    assert cam.implausible_total == len(bad) and cam.implausible_in_row == 0 and cam.frames == len(order)
    assert cam.averages["focus"] > 0 and len(cam.history) == len(order)
