"""calibration/<camera>.yaml, working-plane scale, mm in results, and start-up warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import yaml

from lineinspect.assemble import build_inspector
from lineinspect.config import load_station
from lineinspect.core.calibration import (
    BoardDescription,
    Calibration,
    CalibrationFile,
    Intrinsics,
    calibration_path,
    load_calibration_file,
    now_utc,
    save_calibration_file,
)
from lineinspect.core.defects import Box, Defect
from lineinspect.core.frame import Frame
from lineinspect.core.result import result_schema
from lineinspect.errors import ConfigError
from lineinspect.offline.calibrate import measure_plane, with_plane
from tests.helpers.boards import VirtualCamera, chessboard_texture, overhead_pose, rectangle_texture
from tests.helpers.station_dir import write_station

TARGET = BoardDescription(kind="chessboard", cols=9, rows=7, square_mm=20.0)


def camera() -> VirtualCamera:
    return VirtualCamera(800, 600, 760.0, 757.0, 410.0, 296.0, (-0.21, 0.09, 0.0008, -0.0006, 0.0))


def known_intrinsics(cam: VirtualCamera) -> CalibrationFile:
    """A calibration holding the camera's true intrinsics (what `calibrate intrinsics` would recover)."""
    return CalibrationFile(
        id="cam1-known",
        camera="cam1",
        created_at=now_utc(),
        image_width=cam.width,
        image_height=cam.height,
        intrinsics=Intrinsics(
            camera_matrix=cam.camera_matrix.tolist(),
            distortion=list(cam.distortion),
            rms_px=0.0,
            images=[],
            board=TARGET,
        ),
    )


POSE = overhead_pose(300.0, tilt_deg=15.0, offset_mm=(70.0, 50.0))


@pytest.fixture(scope="module")
def plane_calibration(tmp_path_factory: pytest.TempPathFactory) -> CalibrationFile:
    cam = camera()
    target = tmp_path_factory.mktemp("scale") / "target.png"
    cv2.imwrite(str(target), cam.photograph(chessboard_texture(9, 7, 20.0), *POSE, noise_sigma=1.0))
    existing = known_intrinsics(cam)
    return with_plane(existing, "cam1", measure_plane(target, TARGET, existing), (cam.width, cam.height))


def test_scale_varies_across_the_field_of_a_tilted_camera(plane_calibration: CalibrationFile) -> None:
    plane = plane_calibration.plane
    assert plane is not None and plane.residual_mm < 0.05
    scale = plane.mm_per_px
    # 300 mm away with fx 760: about 0.4 mm/px; tilted 15°, the far side is coarser than the near side.
    assert 0.37 < scale.centre < 0.45
    assert scale.min < scale.centre < scale.max
    assert scale.variation_percent > 10
    assert plane_calibration.id != "cam1-known" and plane_calibration.intrinsics is not None


def test_yaml_round_trip(plane_calibration: CalibrationFile, tmp_path: Path) -> None:
    path = calibration_path(tmp_path, "cam1")
    save_calibration_file(plane_calibration, path)
    assert load_calibration_file(path) == plane_calibration
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"id", "camera", "created_at", "image_width", "image_height", "intrinsics", "plane"}


def test_yaml_with_unknown_field_is_refused(plane_calibration: CalibrationFile, tmp_path: Path) -> None:
    path = calibration_path(tmp_path, "cam1")
    save_calibration_file(plane_calibration, path)
    raw = yaml.safe_load(path.read_text())
    raw["plane"]["mm_per_pixel"] = 0.1
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"cam1.yaml: invalid calibration:\n  plane.mm_per_pixel: Extra inputs"):
        load_calibration_file(path)


def test_yaml_for_another_camera_is_refused(plane_calibration: CalibrationFile, tmp_path: Path) -> None:
    path = calibration_path(tmp_path, "cam2")
    save_calibration_file(plane_calibration, path)
    with pytest.raises(ConfigError, match=r"cam2.yaml: camera 'cam1' does not match the file name"):
        load_calibration_file(path)


def plate_defect(calibration: Calibration, length_mm: float, width_mm: float) -> Defect:
    from lineinspect.core.defects import defects_from_mask

    plate = camera().photograph(rectangle_texture(length_mm, width_mm), *POSE, background=0)
    undistorted = calibration.undistort(plate)
    (defect,) = defects_from_mask(undistorted > 127, undistorted / 255.0, "plate", min_area_px=50)
    return defect


def test_measure_is_true_on_the_plane_despite_tilt(plane_calibration: CalibrationFile) -> None:
    calibration = Calibration(plane_calibration)
    measured = calibration.measure(plate_defect(calibration, 80.0, 60.0))
    assert measured.length_mm == pytest.approx(80.0, rel=0.01)
    assert measured.width_mm == pytest.approx(60.0, rel=0.01)
    assert measured.area_mm2 == pytest.approx(4800.0, rel=0.01)
    assert measured.box_mm is not None


def test_measure_box_only_defect(plane_calibration: CalibrationFile) -> None:
    calibration = Calibration(plane_calibration)
    from_mask = plate_defect(calibration, 80.0, 60.0)
    measured = calibration.measure(Defect.from_box("plate", 0.9, from_mask.box))
    # The axis-aligned box holds the slightly rotated plate, so it is a little larger.
    assert measured.area_mm2 is not None and 4800.0 <= measured.area_mm2 < 4800.0 * 1.15


def test_intrinsics_only_leaves_mm_empty() -> None:
    calibration = Calibration(known_intrinsics(camera()))
    defect = Defect.from_box("scratch", 0.9, Box(10, 10, 50, 20))
    assert calibration.measure(defect) == defect


def test_undistort_region_equals_undistort_then_crop(plane_calibration: CalibrationFile) -> None:
    calibration = Calibration(plane_calibration)
    image = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    whole = calibration.undistort(image)
    assert not np.array_equal(whole, image)
    assert np.array_equal(calibration.undistort_region(image, 100, 50, 320, 240), whole[50:290, 100:420])


def station_with_camera(tmp_path: Path, rules: dict, calibration: CalibrationFile | None) -> Path:
    station = write_station(tmp_path, recipes=[{"id": "part", "model": "bright", "classes": {"*": rules}}])
    (station / "cameras").mkdir()
    (station / "cameras" / "cam1.yaml").write_text("source: {backend: folder, path: images}\n")
    if calibration is not None:
        save_calibration_file(calibration, calibration_path(station, "cam1"))
    return station


def test_inspector_reports_mm_and_calibration_id(plane_calibration: CalibrationFile, tmp_path: Path) -> None:
    station = station_with_camera(tmp_path, {"min_area_mm2": 100.0}, plane_calibration)
    inspector = build_inspector(station, load_station(station))
    plate = camera().photograph(rectangle_texture(80.0, 60.0), *POSE, background=0)
    result = inspector.inspect(Frame(cv2.cvtColor(plate, cv2.COLOR_GRAY2BGR), camera_id="cam1"))
    payload = result.to_payload()
    jsonschema.validate(payload, result_schema())
    assert payload["calibration_id"] == plane_calibration.id
    assert plane_calibration.plane is not None
    assert payload["measurements"]["mm_per_px"] == pytest.approx(plane_calibration.plane.mm_per_px.centre, abs=1e-6)
    assert "px only" not in payload["reason"]
    (finding,) = payload["defects"]
    # The 64×64 test model sees the plate coarsely: its mask is only roughly the plate.
    assert finding["area_mm2"] == pytest.approx(4800.0, rel=0.15)
    assert result.verdict.value == "fail"


def test_warns_when_a_limit_is_under_3_px(
    plane_calibration: CalibrationFile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = station_with_camera(tmp_path, {"min_length_mm": 0.5, "min_area_mm2": 100.0}, plane_calibration)
    with caplog.at_level(logging.WARNING, logger="lineinspect.core.calibration"):
        build_inspector(station, load_station(station))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "recipe 'part' class '*': min_length_mm 0.5 mm is 0.9 px" in warnings[0]
    assert "on camera cam1" in warnings[0] and "under 3 px" in warnings[0]


def test_uncalibrated_camera_reports_px_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    station = station_with_camera(tmp_path, {"min_area_mm2": 1.0}, None)
    with caplog.at_level(logging.WARNING, logger="lineinspect.core.calibration"):
        inspector = build_inspector(station, load_station(station))
    assert any(
        "camera cam1 has no calibration" in r.getMessage() and "px only" in r.getMessage() for r in caplog.records
    )
    image = np.full((120, 160, 3), 40, np.uint8)  # a dark part (a black frame is implausible)
    image[40:80, 60:100] = 255
    result = inspector.inspect(Frame(image, camera_id="cam1"))
    payload = result.to_payload()
    assert payload["calibration_id"] is None
    (finding,) = payload["defects"]
    assert finding["area_mm2"] is None and finding["area_px"] > 0
    assert payload["measurements"]["mm_per_px"] is None
    assert payload["reason"].endswith("; sizes in px only: camera 'cam1' is not calibrated")
    assert finding["why"] == "mm limit not checkable (camera not calibrated)"
    assert result.verdict.value == "fail"  # unmeasurable against an mm limit: counted, never passed


def test_frame_of_another_size_than_calibrated_is_measured_in_px(
    plane_calibration: CalibrationFile, tmp_path: Path
) -> None:
    """A binned or cropped frame would be measured wrongly through the homography: px only, and said so."""
    station = station_with_camera(tmp_path, {"min_area_mm2": 1.0}, plane_calibration)
    inspector = build_inspector(station, load_station(station))
    image = np.full((300, 400, 3), 40, np.uint8)  # a dark part (a black frame is implausible)
    image[100:160, 150:250] = 255
    payload = inspector.inspect(Frame(image, camera_id="cam1")).to_payload()
    jsonschema.validate(payload, result_schema())
    assert payload["calibration_id"] == plane_calibration.id
    assert payload["defects"] and all(d["area_mm2"] is None for d in payload["defects"])
    assert payload["measurements"]["mm_per_px"] is None
    cause = f"camera 'cam1': frame 400x300 differs from calibration {plane_calibration.id}'s 800x600"
    assert f"sizes in px only: {cause}" in payload["reason"]
    assert payload["verdict"] == "fail"


def test_intrinsics_without_plane_say_px_only(tmp_path: Path) -> None:
    station = station_with_camera(tmp_path, {"min_area_mm2": 1.0}, known_intrinsics(camera()))
    inspector = build_inspector(station, load_station(station))
    image = np.full((600, 800, 3), 40, np.uint8)  # a dark part (a black frame is implausible)
    image[250:350, 350:450] = 255
    payload = inspector.inspect(Frame(image, camera_id="cam1")).to_payload()
    assert payload["calibration_id"] == "cam1-known" and payload["measurements"]["mm_per_px"] is None
    assert "sizes in px only: camera 'cam1': calibration cam1-known has no working-plane scale" in payload["reason"]
