"""Making calibrations: lens intrinsics from board images, working-plane scale from a target.

Board geometry comes from the command line (`BoardDescription`). `cols` and `rows`
count squares for both kinds of board, as one counts them on the printed board.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.calibration import (
    BoardDescription,
    Calibration,
    CalibrationError,
    CalibrationFile,
    ImageReprojection,
    Intrinsics,
    MmPerPx,
    PlaneScale,
    homography_scale,
    new_calibration_id,
    now_utc,
    to_plane,
)

MIN_IMAGES = 6  # fewer board views do not pin down five distortion terms and a principal point
MAX_RMS_PX = 0.5
MIN_CHARUCO_CORNERS = 6
SIZE_HINT = "--cols and --rows count squares on the board (a board of 9x7 squares has 8x6 inner corners)"


@dataclass(frozen=True, slots=True)
class BoardView:
    """Board corners found in one image: (N, 2) float32 pixels and the matching (N, 3) float32 board mm."""

    image_points: np.ndarray
    object_points: np.ndarray


@dataclass(frozen=True, slots=True)
class IntrinsicsRun:
    calibration: CalibrationFile
    not_found: list[Path]  # images in which the board was not found (not used)


def read_gray(path: Path) -> np.ndarray:
    """(H, W) uint8; an unreadable file raises CalibrationError naming it."""
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file")
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise CalibrationError(f"{path}: not a readable image (PNG, JPEG, BMP or TIFF expected)")
    return image


def read_same_size(paths: list[Path]) -> tuple[list[np.ndarray], tuple[int, int]]:
    """All images, which must share one size (a camera calibration is for one resolution)."""
    images = [read_gray(p) for p in paths]
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path, image in zip(paths, images, strict=True):
        sizes.setdefault((image.shape[1], image.shape[0]), []).append(path)
    if len(sizes) > 1:
        listed = "; ".join(
            f"{w}x{h}: {', '.join(p.name for p in ps[:3])}{' …' if len(ps) > 3 else ''}" for (w, h), ps in sizes.items()
        )
        raise CalibrationError(
            f"the images have different sizes ({listed}); calibrate with images of one resolution, "
            "the one the camera delivers in production"
        )
    (size,) = sizes
    return images, size


def aruco_dictionary(name: str | None) -> cv2.aruco.Dictionary:
    if not name or not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
        known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
        raise CalibrationError(f"--dictionary {name!r}: not an ArUco dictionary; one of {', '.join(known)}")
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


class BoardFinder:
    """Finds one kind of board in grayscale images."""

    def __init__(self, board: BoardDescription) -> None:
        self.board = board
        if board.kind == "charuco":
            if board.marker_mm is None:
                raise CalibrationError("a ChArUco board needs --marker-mm (side of one marker in mm)")
            if board.marker_mm >= board.square_mm:
                raise CalibrationError(
                    f"--marker-mm {board.marker_mm:g} must be smaller than --square-mm {board.square_mm:g}"
                )
            dictionary = aruco_dictionary(board.dictionary)
            self.charuco = cv2.aruco.CharucoBoard(
                (board.cols, board.rows), board.square_mm, board.marker_mm, dictionary
            )
            self.detector = cv2.aruco.CharucoDetector(self.charuco)
            self.corners_mm = np.asarray(self.charuco.getChessboardCorners(), np.float32)
            self.marker_count = len(self.charuco.getIds())
        else:
            self.pattern = (board.cols - 1, board.rows - 1)
            s = board.square_mm
            self.corners_mm = np.array(
                [[c * s, r * s, 0.0] for r in range(self.pattern[1]) for c in range(self.pattern[0])], np.float32
            )

    def find(self, gray: np.ndarray) -> BoardView | None:
        if self.board.kind == "charuco":
            return self._find_charuco(gray)
        return self._find_chessboard(gray)

    def _find_chessboard(self, gray: np.ndarray) -> BoardView | None:
        flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_ACCURACY
        found, corners = cv2.findChessboardCornersSB(gray, self.pattern, flags=flags)
        if not found:
            # The classic detector copes with some boards SB misses (e.g. strong blur); refine to sub-pixel.
            found, corners = cv2.findChessboardCorners(
                gray, self.pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            )
            if not found:
                return None
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 0.001)
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
        return BoardView(corners.reshape(-1, 2).astype(np.float32), self.corners_mm)

    def _find_charuco(self, gray: np.ndarray) -> BoardView | None:
        corners, ids, _, marker_ids = self.detector.detectBoard(gray)
        if marker_ids is not None and len(marker_ids) and int(marker_ids.max()) >= self.marker_count:
            raise CalibrationError(
                f"markers with ids up to {int(marker_ids.max())} seen, but a {self.board.cols}x{self.board.rows} "
                f"ChArUco board has only {self.marker_count} markers: the board is larger than given; {SIZE_HINT}"
            )
        if ids is None or len(ids) < MIN_CHARUCO_CORNERS:
            return None
        return BoardView(corners.reshape(-1, 2).astype(np.float32), self.corners_mm[ids.ravel()])


def reprojection_rms(view: BoardView, rvec: np.ndarray, tvec: np.ndarray, k: np.ndarray, dist: np.ndarray) -> float:
    projected = cv2.projectPoints(view.object_points, rvec, tvec, k, dist)[0].reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum((projected - view.image_points) ** 2, axis=1))))


def calibrate_intrinsics(
    paths: list[Path],
    board: BoardDescription,
    camera: str,
    *,
    max_rms_px: float = MAX_RMS_PX,
    force: bool = False,
    min_images: int = MIN_IMAGES,
) -> IntrinsicsRun:
    """Camera matrix and distortion from board images. Refuses (CalibrationError) above max_rms_px unless force."""
    if len(paths) < min_images:
        raise CalibrationError(
            f"{len(paths)} image(s) given; calibration needs at least {min_images} views of the board "
            "(10–20 recommended), tilted and spread over the whole field of view"
        )
    finder = BoardFinder(board)
    images, (width, height) = read_same_size(paths)
    views: list[tuple[Path, BoardView]] = []
    not_found: list[Path] = []
    for path, gray in zip(paths, images, strict=True):
        view = finder.find(gray)
        if view is None:
            not_found.append(path)
        else:
            views.append((path, view))
    if len(views) < min_images:
        missing = "\n".join(f"  {p}: board not found" for p in not_found)
        hint = f"; {SIZE_HINT}" if not views else ""
        raise CalibrationError(
            f"the {board.text()} was found in {len(views)} of {len(paths)} image(s), at least {min_images} "
            f"needed{hint}\n{missing}"
        )
    object_points = [v.object_points for _, v in views]
    image_points = [v.image_points for _, v in views]
    rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(object_points, image_points, (width, height), None, None)
    per_image = [
        ImageReprojection(image=str(path), rms_px=reprojection_rms(view, r, t, k, dist), corners=len(view.image_points))
        for (path, view), r, t in zip(views, rvecs, tvecs, strict=True)
    ]
    if rms > max_rms_px and not force:
        worst = sorted(per_image, key=lambda e: -e.rms_px)[:3]
        listed = ", ".join(f"{Path(e.image).name} {e.rms_px:.2f} px" for e in worst)
        raise CalibrationError(
            f"RMS reprojection error {rms:.3f} px is above {max_rms_px:g} px (worst images: {listed}); "
            "check the board geometry (--square-mm, flatness), drop blurred images, or save anyway with --force"
        )
    created_at = now_utc()
    data = CalibrationFile(
        id=new_calibration_id(camera, created_at),
        camera=camera,
        created_at=created_at,
        image_width=width,
        image_height=height,
        intrinsics=Intrinsics(
            camera_matrix=k.tolist(),
            distortion=dist.ravel().tolist(),
            rms_px=float(rms),
            forced=bool(rms > max_rms_px),
            images=per_image,
            board=board,
        ),
    )
    return IntrinsicsRun(data, not_found)


FOV_GRID = 21  # points per side where the scale is sampled over the field of view


def measure_plane(path: Path, board: BoardDescription, existing: CalibrationFile | None) -> PlaneScale:
    """Working-plane homography (undistorted px → mm) from one image of a target lying on the plane."""
    gray = read_gray(path)
    height, width = gray.shape
    if existing is not None and existing.intrinsics is not None:
        if (width, height) != (existing.image_width, existing.image_height):
            raise CalibrationError(
                f"{path}: image is {width}x{height} but camera {existing.camera} was calibrated at "
                f"{existing.image_width}x{existing.image_height}; use an image from the same camera mode"
            )
        gray = Calibration(existing).undistort(gray)
    view = BoardFinder(board).find(gray)
    if view is None:
        raise CalibrationError(f"{path}: {board.text()} not found; {SIZE_HINT}")
    h, _ = cv2.findHomography(view.image_points, view.object_points[:, :2], 0)
    if h is None:
        raise CalibrationError(f"{path}: the target's corners do not determine a plane; use a flat, unfolded target")
    residual = to_plane(h, view.image_points) - view.object_points[:, :2]
    xs, ys = np.meshgrid(np.linspace(0, width - 1, FOV_GRID), np.linspace(0, height - 1, FOV_GRID))
    w = h[2, 0] * xs + h[2, 1] * ys + h[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        raise CalibrationError(
            f"{path}: the working plane's horizon is in view; the camera must look at the plane, not along it"
        )
    scale = homography_scale(h, xs, ys)
    centre = float(homography_scale(h, np.array((width - 1) / 2), np.array((height - 1) / 2)))
    return PlaneScale(
        homography_px_to_mm=h.tolist(),
        mm_per_px=MmPerPx(centre=centre, min=float(scale.min()), max=float(scale.max())),
        residual_mm=float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))),
        image=str(path),
        target=board,
    )


def with_plane(
    existing: CalibrationFile | None, camera: str, plane: PlaneScale, size: tuple[int, int]
) -> CalibrationFile:
    """The camera's calibration with a new plane scale; a new id, since results measured with it differ."""
    created_at = now_utc()
    return CalibrationFile(
        id=new_calibration_id(camera, created_at),
        camera=camera,
        created_at=created_at,
        image_width=size[0],
        image_height=size[1],
        intrinsics=existing.intrinsics if existing is not None else None,
        plane=plane,
    )
