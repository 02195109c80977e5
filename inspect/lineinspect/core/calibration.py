"""A camera's calibration: `calibration/<camera>.yaml` and the runtime object the Inspector uses.

Two parts, each optional in the file:

- intrinsics (camera matrix, lens distortion) from `lineinspect calibrate intrinsics`:
  they remove lens distortion. The undistorted image keeps the same camera matrix,
  so a pixel near the centre keeps its size.
- the working plane (a homography from undistorted-image pixels to plane mm) from
  `lineinspect calibrate scale`: it turns defect sizes into mm. A homography, not one
  mm/px factor, because a tilted camera sees the far side of the plane smaller.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.core.clock import utc_now
from lineinspect.core.defects import Defect
from lineinspect.core.recipe import Recipe
from lineinspect.errors import ConfigError, LineinspectError
from lineinspect.yamlfile import read_yaml, validate_mapping

CALIBRATION_DIR = "calibration"
# Below this many pixels a limit is at the mercy of one pixel of segmentation noise.
MIN_LIMIT_PX = 3.0
CAMERA_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

log = logging.getLogger(__name__)


class CalibrationError(LineinspectError):
    """A calibration cannot be made or used."""


class BoardDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["chessboard", "charuco"] = Field(..., description="Target type.")
    cols: int = Field(..., ge=2, description="Squares across the board (not inner corners).")
    rows: int = Field(..., ge=2, description="Squares down the board (not inner corners).")
    square_mm: float = Field(..., gt=0, description="Side of one square in mm, as printed (measure it).")
    marker_mm: float | None = Field(None, gt=0, description="ChArUco only: side of one ArUco marker in mm.")
    dictionary: str | None = Field(None, description="ChArUco only: ArUco dictionary name, e.g. DICT_5X5_100.")

    def text(self) -> str:
        extra = f", marker {self.marker_mm:g} mm, {self.dictionary}" if self.kind == "charuco" else ""
        return f"{self.kind} {self.cols}x{self.rows} squares of {self.square_mm:g} mm{extra}"


class ImageReprojection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(..., description="Image file the board was found in.")
    rms_px: float = Field(..., ge=0, description="RMS reprojection error of this image's board corners in pixels.")
    corners: int = Field(..., ge=0, description="Board corners found in this image.")


class Intrinsics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_matrix: list[list[float]] = Field(..., description="3x3 camera matrix K (fx, 0, cx; 0, fy, cy; 0, 0, 1).")
    distortion: list[float] = Field(..., description="OpenCV distortion coefficients (k1, k2, p1, p2, k3[, ...]).")
    rms_px: float = Field(..., ge=0, description="RMS reprojection error over all images in pixels.")
    forced: bool = Field(False, description="True when saved with --force despite an RMS above the limit.")
    images: list[ImageReprojection] = Field(..., description="Reprojection error per image used.")
    board: BoardDescription = Field(..., description="The board the intrinsics were measured with.")


class MmPerPx(BaseModel):
    model_config = ConfigDict(extra="forbid")

    centre: float = Field(..., gt=0, description="mm per pixel at the image centre.")
    min: float = Field(..., gt=0, description="Smallest mm per pixel over the field of view.")
    max: float = Field(..., gt=0, description="Largest mm per pixel over the field of view.")

    @property
    def variation_percent(self) -> float:
        return 100.0 * (self.max - self.min) / self.centre


class PlaneScale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    homography_px_to_mm: list[list[float]] = Field(
        ..., description="3x3 homography: undistorted-image pixel (x, y, 1) → working-plane mm (x, y, 1)."
    )
    mm_per_px: MmPerPx = Field(..., description="Scale summary over the field of view (geometric mean of axes).")
    residual_mm: float = Field(..., ge=0, description="RMS of the target corners' plane positions after the fit, mm.")
    image: str = Field(..., description="Image of the target the scale was measured from.")
    target: BoardDescription = Field(..., description="The target that lay on the working plane.")


class CalibrationFile(BaseModel):
    """calibration/<camera>.yaml."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, description="Calibration id, recorded in every result of this camera.")
    camera: str = Field(..., min_length=1, description="Camera id (cameras/<id>.yaml).")
    created_at: datetime = Field(..., description="When this calibration was made (UTC).")
    image_width: int = Field(..., gt=0, description="Width of the calibration images in pixels.")
    image_height: int = Field(..., gt=0, description="Height of the calibration images in pixels.")
    intrinsics: Intrinsics | None = Field(None, description="Lens model; absent: images are used as they are.")
    plane: PlaneScale | None = Field(None, description="Working-plane scale; absent: sizes in px only.")


def new_calibration_id(camera: str, created_at: datetime) -> str:
    # The random tail keeps two calibrations made in the same second apart.
    return f"{camera}-{created_at.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_camera_id(camera: str) -> str:
    if not CAMERA_ID_PATTERN.match(camera):
        raise CalibrationError(
            f"--camera {camera!r}: a camera id is letters, digits, '.', '_' or '-' (the name of cameras/<id>.yaml)"
        )
    return camera


def calibration_path(station_dir: Path, camera: str) -> Path:
    return station_dir / CALIBRATION_DIR / f"{check_camera_id(camera)}.yaml"


def load_calibration_file(path: Path) -> CalibrationFile:
    data = validate_mapping(
        CalibrationFile,
        read_yaml(path, ConfigError),
        str(path),
        ConfigError,
        "calibration",
        expected="calibration fields",
        hint="\nre-run `lineinspect calibrate` for this camera",
    )
    if data.camera != path.stem:
        raise ConfigError(f"{path}: camera '{data.camera}' does not match the file name; name it {data.camera}.yaml")
    return data


def save_calibration_file(data: CalibrationFile, path: Path) -> None:
    """Write atomically (a half-written file would stop the station at start-up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(data.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def homography_scale(h: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Local mm per px (sqrt of the area scale) of homography h at pixel points x, y.

    For (u, v, w) = h·(x, y, 1) the Jacobian determinant of (u/w, v/w) is det(h)/w³.
    """
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return np.sqrt(np.abs(np.linalg.det(h) / w**3))


def to_plane(h: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """(N, 2) pixel points → (N, 2) plane mm."""
    return cv2.perspectiveTransform(points_px.reshape(-1, 1, 2).astype(np.float64), h).reshape(-1, 2)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


class Calibration:
    """One camera's calibration at run time (implements the Inspector's PlaneCalibration)."""

    def __init__(self, data: CalibrationFile) -> None:
        self.data = data
        self.calibration_id = data.id
        self.camera_id = data.camera
        self.calibrated_size = (data.image_width, data.image_height)
        intr = data.intrinsics
        self.camera_matrix = np.array(intr.camera_matrix, np.float64) if intr is not None else None
        self.distortion = np.array(intr.distortion, np.float64) if intr is not None else None
        self.homography = np.array(data.plane.homography_px_to_mm, np.float64) if data.plane is not None else None
        # (width, height) → fixed-point maps; one entry per image size the camera delivers.
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        if self.camera_matrix is not None:
            self.maps_for(self.calibrated_size)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        return cls(load_calibration_file(path))

    @property
    def mm_per_px(self) -> MmPerPx | None:
        return self.data.plane.mm_per_px if self.data.plane is not None else None

    def mm_per_px_for(self, width: int, height: int) -> float | None:
        """mm per px at the image centre if frames of this size can be measured in mm, else None.

        The homography holds for the calibrated image size only: a binned or
        cropped frame would be measured wrongly, so it is measured in px.
        """
        if self.data.plane is None or (width, height) != self.calibrated_size:
            return None
        return self.data.plane.mm_per_px.centre

    def why_px_only(self, width: int, height: int) -> str:
        """Why frames of this size get no mm sizes (when mm_per_px_for gives None), for the result's reason."""
        if self.data.plane is None:
            return f"calibration {self.calibration_id} has no working-plane scale"
        return (
            f"frame {width}x{height} differs from calibration {self.calibration_id}'s "
            f"{self.calibrated_size[0]}x{self.calibrated_size[1]}"
        )

    def maps_for(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point (CV_16SC2) undistortion maps for an image size, computed once."""
        maps = self._maps.get(size)
        if maps is None:
            assert self.camera_matrix is not None and self.distortion is not None
            k = self.camera_matrix.copy()
            if size != self.calibrated_size:
                # Same sensor binned or scaled: the camera matrix scales with the image.
                log.warning(
                    "camera %s: image %dx%d differs from the calibrated %dx%d; undistorting with a scaled "
                    "camera matrix, and sizes are reported in px only. Re-calibrate at this size.",
                    self.camera_id,
                    *size,
                    *self.calibrated_size,
                )
                k[0] *= size[0] / self.calibrated_size[0]
                k[1] *= size[1] / self.calibrated_size[1]
            maps = cv2.initUndistortRectifyMap(k, self.distortion, None, k, size, cv2.CV_16SC2)
            self._maps[size] = maps
        return maps

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, C]) uint8 → the same size with lens distortion removed (no-op without intrinsics)."""
        if self.camera_matrix is None:
            return image
        map1, map2 = self.maps_for((image.shape[1], image.shape[0]))
        return cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def undistort_region(self, image: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Undistort only the region (x, y, width, height) of the undistorted image: remap and ROI crop in one.

        Equal to `undistort(image)[y:y+height, x:x+width]`, at the cost of the region only.
        """
        if self.camera_matrix is None:
            return image[y : y + height, x : x + width]
        map1, map2 = self.maps_for((image.shape[1], image.shape[0]))
        return cv2.remap(
            image,
            map1[y : y + height, x : x + width],
            map2[y : y + height, x : x + width],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )

    def measure(self, defect: Defect) -> Defect:
        """Fill area_mm2, length_mm, width_mm, box_mm from the plane homography (unchanged without a plane).

        Box and mask are in undistorted-image pixels: pixel column c covers [c - 0.5, c + 0.5] in the
        coordinates the homography was fitted in (OpenCV's, pixel centres at integers).
        """
        h = self.homography
        if h is None:
            return defect
        box = defect.box
        if defect.mask is not None and defect.mask.any():
            mask = defect.mask
            rows, cols = np.nonzero(mask)
            area = float((homography_scale(h, cols + box.x0, rows + box.y0) ** 2).sum())
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            edge = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
            # Each boundary pixel's four corners: the outline of the pixels, not of their centres.
            offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
            outline_px = (edge[:, None, :] + offsets[None, :, :]).reshape(-1, 2) + np.array([box.x0, box.y0])
            outline = to_plane(h, outline_px)
        else:
            corners_px = (
                np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]], np.float64) - 0.5
            )
            outline = to_plane(h, corners_px)
            area = polygon_area(outline)
        (_, _), (rw, rh), _ = cv2.minAreaRect(outline.astype(np.float32))
        x_min, y_min = outline.min(axis=0)
        x_max, y_max = outline.max(axis=0)
        return replace(
            defect,
            area_mm2=area,
            length_mm=float(max(rw, rh)),
            width_mm=float(min(rw, rh)),
            box_mm=(float(x_min), float(y_min), float(x_max), float(y_max)),
        )


def load_calibrations(station_dir: Path, camera_ids: list[str]) -> dict[str, Calibration]:
    """calibration/<camera>.yaml for each camera that has one; a camera without one is logged (px only)."""
    calibrations: dict[str, Calibration] = {}
    for camera in camera_ids:
        path = calibration_path(station_dir, camera)
        if not path.is_file():
            log.warning(
                "camera %s has no calibration (%s): defect sizes are reported in px only, and a defect "
                "under a recipe's mm limit counts; run `lineinspect calibrate` for this camera",
                camera,
                path,
            )
            continue
        calibration = Calibration.load(path)
        if calibration.homography is None:
            log.warning(
                "camera %s: calibration %s has no working-plane scale: sizes in px only; "
                "run `lineinspect calibrate scale --camera %s IMAGE`",
                camera,
                calibration.calibration_id,
                camera,
            )
        calibrations[camera] = calibration
    return calibrations


def warn_small_limits(recipes: Iterable[Recipe], calibrations: Mapping[str, Calibration]) -> int:
    """Log a WARNING for each mm limit under MIN_LIMIT_PX pixels at a camera's coarsest calibrated scale.

    An area limit is compared as the side of a square of that area. Returns the number of warnings.
    """
    warned = 0
    for camera, calibration in sorted(calibrations.items()):
        scale = calibration.mm_per_px
        if scale is None:
            continue
        for recipe in recipes:
            for class_name, rule in recipe.classes.items():
                limits: list[tuple[str, float]] = []
                if rule.min_length_mm:
                    length_px = rule.min_length_mm / scale.max
                    limits.append((f"min_length_mm {rule.min_length_mm:g} mm is {length_px:.1f} px", length_px))
                if rule.min_area_mm2:
                    area_px = rule.min_area_mm2 / scale.max**2
                    side_px = float(np.sqrt(area_px))
                    limits.append(
                        (
                            f"min_area_mm2 {rule.min_area_mm2:g} mm² is {area_px:.1f} px² ({side_px:.1f} px side)",
                            side_px,
                        )
                    )
                for text, px in limits:
                    if px < MIN_LIMIT_PX:
                        log.warning(
                            "recipe '%s' class '%s': %s on camera %s (%.4f mm/px at its coarsest); under %g px "
                            "a limit cannot be measured reliably: raise the limit or use a closer camera or lens",
                            recipe.id,
                            class_name,
                            text,
                            camera,
                            scale.max,
                            MIN_LIMIT_PX,
                        )
                        warned += 1
    return warned


def now_utc() -> datetime:
    return utc_now().replace(microsecond=0)
