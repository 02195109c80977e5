"""POST /v1/inspections naming the camera that took the image: its calibration measures the defects in mm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from lineinspect.assemble import build_inspector
from lineinspect.config import HttpSection, load_station
from lineinspect.core.calibration import (
    BoardDescription,
    CalibrationFile,
    MmPerPx,
    PlaneScale,
    calibration_path,
    now_utc,
    save_calibration_file,
)
from lineinspect.core.result import result_schema
from lineinspect.http.app import create_app
from tests.helpers.station_dir import bad_part, encode, write_station

MM_PER_PX = 0.5


def plane_only_calibration(width: int, height: int) -> CalibrationFile:
    """A camera looking straight down at 0.5 mm/px, lens distortion negligible (no intrinsics)."""
    return CalibrationFile(
        id="top-20260101T000000Z-abc123",
        camera="top",
        created_at=now_utc(),
        image_width=width,
        image_height=height,
        plane=PlaneScale(
            homography_px_to_mm=[[MM_PER_PX, 0, 0], [0, MM_PER_PX, 0], [0, 0, 1]],
            mm_per_px=MmPerPx(centre=MM_PER_PX, min=MM_PER_PX, max=MM_PER_PX),
            residual_mm=0.0,
            image="target.png",
            target=BoardDescription(kind="chessboard", cols=9, rows=7, square_mm=20.0),
        ),
    )


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    station_dir = write_station(tmp_path_factory.mktemp("station"))
    (station_dir / "cameras").mkdir()
    (station_dir / "cameras" / "top.yaml").write_text("source: {backend: folder, path: images}\n")
    height, width = bad_part().shape[:2]
    save_calibration_file(plane_only_calibration(width, height), calibration_path(station_dir, "top"))
    return station_dir


@pytest.fixture
def client(station: Path) -> Iterator[TestClient]:
    inspector = build_inspector(station, load_station(station))
    with TestClient(create_app(inspector, HttpSection(), station_path="a/b/c/d/e/lineinspect/s")) as c:
        yield c


def post(client: TestClient, *, params: Any = None, data: Any = None) -> Any:
    files = {"file": ("bad.png", encode(bad_part()), "image/png")}
    return client.post("/v1/inspections", files=files, params=params, data=data)


def assert_valid(payload: dict[str, Any]) -> None:
    validator = Draft202012Validator(result_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert not [e.message for e in validator.iter_errors(payload)]


@pytest.mark.parametrize("where", ["query", "form"])
def test_upload_naming_a_calibrated_camera_is_measured_in_mm(client: TestClient, where: str) -> None:
    response = post(client, params={"camera": "top"}) if where == "query" else post(client, data={"camera": "top"})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert_valid(payload)
    assert payload["camera_id"] == "top"
    assert payload["calibration_id"] == "top-20260101T000000Z-abc123"
    assert payload["measurements"]["mm_per_px"] == MM_PER_PX
    (defect,) = payload["defects"]
    # The 64×64 test model sees the 16×16 px spot only roughly; at 0.5 mm/px it is about 8 × 8 mm.
    assert defect["length_mm"] == pytest.approx(8.0, rel=0.2)
    assert defect["area_mm2"] == pytest.approx(64.0, rel=0.35)
    assert "px only" not in payload["reason"]


def test_upload_without_camera_says_sizes_are_px_only(client: TestClient) -> None:
    payload = post(client).json()
    assert_valid(payload)
    assert payload["calibration_id"] is None and payload["measurements"]["mm_per_px"] is None
    assert payload["defects"][0]["length_mm"] is None
    assert payload["reason"].endswith(
        "; sizes in px only: no camera named (upload with camera=ID of a calibrated camera to measure in mm)"
    )


@pytest.mark.parametrize("where", ["query", "form"])
def test_upload_naming_an_uncalibrated_camera_is_404(client: TestClient, where: str) -> None:
    response = post(client, params={"camera": "side"}) if where == "query" else post(client, data={"camera": "side"})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown_camera"
    assert "camera 'side' has no calibration on this station (calibrated cameras: ['top'])" in body["detail"]
