"""Intrinsics from boards rendered through a known camera: what calibration recovers, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.core.calibration import BoardDescription, CalibrationError, load_calibration_file
from lineinspect.offline.calibrate import calibrate_intrinsics
from tests.helpers.boards import (
    VirtualCamera,
    charuco_texture,
    chessboard_texture,
    overhead_pose,
    rectangle_texture,
    write_views,
)

VIEWS = 10
CHESSBOARD = BoardDescription(kind="chessboard", cols=9, rows=7, square_mm=20.0)
CHARUCO = BoardDescription(kind="charuco", cols=7, rows=5, square_mm=25.0, marker_mm=18.0, dictionary="DICT_5X5_100")


def camera() -> VirtualCamera:
    """800×600 with visible barrel distortion and an off-centre principal point."""
    return VirtualCamera(800, 600, 760.0, 757.0, 410.0, 296.0, (-0.21, 0.09, 0.0008, -0.0006, 0.0))


@pytest.fixture(scope="module")
def chessboard_views(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("chessboard")
    return write_views(folder, camera(), chessboard_texture(9, 7, 20.0), VIEWS, seed=1)


@pytest.fixture(scope="module")
def charuco_views(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("charuco")
    texture = charuco_texture(7, 5, 25.0, 18.0, cv2.aruco.DICT_5X5_100)
    return write_views(folder, camera(), texture, VIEWS, seed=2)


def assert_recovers_camera(k: list[list[float]], rms_px: float) -> None:
    truth = camera()
    for got, want in ((k[0][0], truth.fx), (k[1][1], truth.fy), (k[0][2], truth.cx), (k[1][2], truth.cy)):
        assert got == pytest.approx(want, rel=0.01)
    assert rms_px < 0.3


def test_chessboard_recovers_focal_length_and_principal_point(chessboard_views: list[Path]) -> None:
    run = calibrate_intrinsics(chessboard_views, CHESSBOARD, "cam1")
    intr = run.calibration.intrinsics
    assert intr is not None
    assert_recovers_camera(intr.camera_matrix, intr.rms_px)
    assert len(intr.images) == VIEWS and all(e.rms_px < 0.5 for e in intr.images)
    assert (run.calibration.image_width, run.calibration.image_height) == (800, 600)
    assert run.not_found == []


def test_charuco_recovers_focal_length_and_principal_point(charuco_views: list[Path]) -> None:
    run = calibrate_intrinsics(charuco_views, CHARUCO, "cam1")
    intr = run.calibration.intrinsics
    assert intr is not None
    assert_recovers_camera(intr.camera_matrix, intr.rms_px)


def test_cli_lists_images_without_board_and_writes_yaml(
    chessboard_views: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((600, 800), 128, np.uint8))
    args = ["calibrate", "intrinsics", "--station-dir", str(tmp_path), "--camera", "cam1"]
    args += ["--cols", "9", "--rows", "7", "--square-mm", "20", *map(str, chessboard_views), str(blank)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{blank}: board not found, not used" in out
    assert f"{chessboard_views[0]}: " in out and "RMS reprojection error" in out
    saved = load_calibration_file(tmp_path / "calibration" / "cam1.yaml")
    assert saved.id.startswith("cam1-") and saved.created_at.tzinfo is not None
    assert saved.intrinsics is not None and len(saved.intrinsics.images) == VIEWS
    assert f"calibration {saved.id} written to" in out


def test_refuses_when_rms_above_limit_unless_forced(chessboard_views: list[Path]) -> None:
    views = chessboard_views[:6]  # the fewest accepted: this test is about the limit, not accuracy
    with pytest.raises(CalibrationError, match=r"RMS reprojection error .* px is above 0.01 px .*--force"):
        calibrate_intrinsics(views, CHESSBOARD, "cam1", max_rms_px=0.01)
    run = calibrate_intrinsics(views, CHESSBOARD, "cam1", max_rms_px=0.01, force=True)
    assert run.calibration.intrinsics is not None and run.calibration.intrinsics.forced


def test_wrong_chessboard_size_names_every_image(chessboard_views: list[Path]) -> None:
    wrong = CHESSBOARD.model_copy(update={"cols": 10, "rows": 8})
    views = chessboard_views[:6]  # searching for a board that is not there is the slow case
    with pytest.raises(CalibrationError) as caught:
        calibrate_intrinsics(views, wrong, "cam1")
    message = str(caught.value)
    assert "found in 0 of 6 image(s)" in message and "count squares" in message
    assert all(f"{p}: board not found" in message for p in views)


def test_wrong_charuco_size_says_board_is_larger(charuco_views: list[Path]) -> None:
    wrong = CHARUCO.model_copy(update={"cols": 5, "rows": 4})
    with pytest.raises(CalibrationError, match=r"board is larger than given"):
        calibrate_intrinsics(charuco_views, wrong, "cam1")


def test_too_few_images(chessboard_views: list[Path]) -> None:
    with pytest.raises(CalibrationError, match=r"3 image\(s\) given; calibration needs at least 6 views"):
        calibrate_intrinsics(chessboard_views[:3], CHESSBOARD, "cam1")


def test_mixed_image_sizes(chessboard_views: list[Path], tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((480, 640), np.uint8))
    with pytest.raises(CalibrationError, match=r"different sizes \(800x600: .*; 640x480: small.png\)"):
        calibrate_intrinsics([*chessboard_views, small], CHESSBOARD, "cam1")


def test_unreadable_file_is_named(chessboard_views: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(CalibrationError, match=rf"{broken}: not a readable image"):
        calibrate_intrinsics([*chessboard_views, broken], CHESSBOARD, "cam1")


def test_cli_shows_error_for_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["calibrate", "scale", "--station-dir", str(tmp_path), "--camera", "cam1"]
    args += ["--cols", "9", "--rows", "7", "--square-mm", "20", str(tmp_path / "nope.png")]
    assert main(args) == 2
    assert f"lineinspect calibrate: {tmp_path / 'nope.png'}: no such file" in capsys.readouterr().err


def test_calibrated_camera_measures_object_of_known_size(
    chessboard_views: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: intrinsics from the views, scale from a target on the plane, then an 80 × 60 mm plate.

    The plate spans 150+ px so that the mask's pixel quantisation (lengths are taken from the outline of
    the mask's pixels, which never makes a defect smaller) stays under 1 %.
    """
    from lineinspect.core.calibration import Calibration
    from lineinspect.core.defects import defects_from_mask

    cam = camera()
    rvec, tvec = overhead_pose(300.0, tilt_deg=15.0, offset_mm=(70.0, 50.0))
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), cam.photograph(chessboard_texture(9, 7, 20.0), rvec, tvec, noise_sigma=1.0))
    common = ["--station-dir", str(tmp_path), "--camera", "cam1", "--cols", "9", "--rows", "7", "--square-mm", "20"]
    assert main(["calibrate", "intrinsics", *common, *map(str, chessboard_views)]) == 0
    assert main(["calibrate", "scale", *common, str(target)]) == 0
    assert "mm per px:" in capsys.readouterr().out
    calibration = Calibration.load(tmp_path / "calibration" / "cam1.yaml")
    assert calibration.data.intrinsics is not None and calibration.data.plane is not None

    plate = cam.photograph(rectangle_texture(80.0, 60.0), rvec, tvec, background=0)
    undistorted = calibration.undistort(plate)
    (defect,) = defects_from_mask(undistorted > 127, undistorted / 255.0, "plate", min_area_px=100)
    measured = calibration.measure(defect)
    assert measured.length_mm == pytest.approx(80.0, rel=0.01)
    assert measured.width_mm == pytest.approx(60.0, rel=0.01)
    assert measured.area_mm2 == pytest.approx(4800.0, rel=0.01)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--cols", "1", "--rows", "7", "--square-mm", "20"],
            "board geometry:\n  cols: Input should be greater than or equal to 2",
        ),
        (["--cols", "9", "--rows", "7", "--square-mm", "0"], "square_mm: Input should be greater than 0"),
        (
            ["--cols", "9", "--rows", "7", "--square-mm", "20", "--marker-mm", "15"],
            "--marker-mm and --dictionary are for --board charuco only",
        ),
        (
            ["--board", "charuco", "--cols", "7", "--rows", "5", "--square-mm", "25"],
            "a ChArUco board needs --marker-mm",
        ),
        (
            [
                "--board",
                "charuco",
                "--cols",
                "7",
                "--rows",
                "5",
                "--square-mm",
                "25",
                "--marker-mm",
                "18",
                "--dictionary",
                "DICT_9X9",
            ],
            "--dictionary 'DICT_9X9': not an ArUco dictionary",
        ),
        (
            ["--camera", "../x", "--cols", "9", "--rows", "7", "--square-mm", "20"],
            "--camera '../x': a camera id is letters",
        ),
    ],
)
def test_cli_refuses_bad_board_geometry(
    extra: list[str], message: str, chessboard_views: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    camera_args = [] if "--camera" in extra else ["--camera", "cam1"]
    args = [
        "calibrate",
        "intrinsics",
        "--station-dir",
        str(tmp_path),
        *camera_args,
        *extra,
        *map(str, chessboard_views),
    ]
    assert main(args) == 2
    assert message in capsys.readouterr().err
