"""Calibration targets rendered through a known camera, so tests can check what calibration recovers.

A `VirtualCamera` is a pinhole camera with OpenCV's lens distortion model
(k1, k2, p1, p2, k3). It photographs a flat texture lying on the plane Z = 0
(texture pixels ↔ plane millimetres at `px_per_mm`) from a pose (rvec, tvec
in mm). Each output pixel looks up the plane point it sees: distorted pixel →
ideal normalised ray (inverse distortion, iterated to 1e-12) → plane via the
inverse of K·[r1 r2 t]. Pixels are supersampled 3×3 and averaged, so edges
are anti-aliased as a real sensor would integrate them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SUPERSAMPLE = 3
MARGIN_MM = 12.0


@dataclass(frozen=True, slots=True)
class BoardTexture:
    """image: (H, W) uint8, the board as printed; plane mm = texture px / px_per_mm - origin_mm."""

    image: np.ndarray
    px_per_mm: float
    origin_mm: tuple[float, float]  # plane coordinates of the texture's top-left corner (negative: margin)

    @property
    def size_mm(self) -> tuple[float, float]:
        return self.image.shape[1] / self.px_per_mm, self.image.shape[0] / self.px_per_mm


def chessboard_texture(cols: int, rows: int, square_mm: float, px_per_mm: float = 8.0) -> BoardTexture:
    """A chessboard of cols × rows squares (inner corners (cols-1) × (rows-1)) with a white margin.

    The plane origin is the board's first inner corner, as OpenCV reports them.
    """
    s = round(square_mm * px_per_mm)
    px_per_mm = s / square_mm
    m = round(MARGIN_MM * px_per_mm)
    image = np.full((rows * s + 2 * m, cols * s + 2 * m), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                image[m + r * s : m + (r + 1) * s, m + c * s : m + (c + 1) * s] = 0
    origin = -(m / px_per_mm + square_mm)
    return BoardTexture(image, px_per_mm, (origin, origin))


def charuco_texture(
    cols: int, rows: int, square_mm: float, marker_mm: float, dictionary: int, px_per_mm: float = 8.0
) -> BoardTexture:
    """OpenCV's ChArUco board of cols × rows squares; plane origin = the board's outer corner."""
    board = cv2.aruco.CharucoBoard((cols, rows), square_mm, marker_mm, cv2.aruco.getPredefinedDictionary(dictionary))
    m = round(MARGIN_MM * px_per_mm)
    w, h = round(cols * square_mm * px_per_mm), round(rows * square_mm * px_per_mm)
    image = board.generateImage((w + 2 * m, h + 2 * m), marginSize=m, borderBits=1)
    return BoardTexture(image, px_per_mm, (-m / px_per_mm, -m / px_per_mm))


def rectangle_texture(length_mm: float, width_mm: float, px_per_mm: float = 10.0) -> BoardTexture:
    """A black plate with one white rectangle of length × width mm whose top-left corner is the plane origin."""
    m = round(MARGIN_MM * px_per_mm)
    lw, lh = round(length_mm * px_per_mm), round(width_mm * px_per_mm)
    image = np.zeros((lh + 2 * m, lw + 2 * m), np.uint8)
    image[m : m + lh, m : m + lw] = 255
    return BoardTexture(image, px_per_mm, (-m / px_per_mm, -m / px_per_mm))


def rotation(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation vector (Rodrigues) for rotations about x, then y, then z, in degrees."""
    rx, ry, rz = np.radians([rx_deg, ry_deg, rz_deg])
    mx = cv2.Rodrigues(np.array([rx, 0.0, 0.0]))[0]
    my = cv2.Rodrigues(np.array([0.0, ry, 0.0]))[0]
    mz = cv2.Rodrigues(np.array([0.0, 0.0, rz]))[0]
    return cv2.Rodrigues(mz @ my @ mx)[0].ravel()


@dataclass
class VirtualCamera:
    """A known camera: (width, height) px, camera matrix K, distortion (k1, k2, p1, p2, k3)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, float, float, float, float]
    _rays: np.ndarray | None = field(default=None, repr=False)

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist(self) -> np.ndarray:
        return np.array(self.distortion, dtype=np.float64)

    def rays(self) -> np.ndarray:
        """(H*S, W*S, 3) homogeneous ideal normalised rays of the supersampled pixel grid, computed once."""
        if self._rays is None:
            s = SUPERSAMPLE
            offsets = (np.arange(s) + 0.5) / s - 0.5
            xs = (np.arange(self.width)[:, None] + offsets[None, :]).ravel()
            ys = (np.arange(self.height)[:, None] + offsets[None, :]).ravel()
            gx, gy = np.meshgrid(xs, ys)
            points = np.stack([gx, gy], axis=-1).reshape(-1, 1, 2)
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
            ideal = cv2.undistortPoints(points, self.camera_matrix, self.dist, criteria=criteria).reshape(
                (*gy.shape, 2)
            )
            self._rays = np.concatenate([ideal, np.ones((*gy.shape, 1))], axis=-1)
        return self._rays

    def project(self, plane_mm: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
        """(N, 2) plane points in mm → (N, 2) distorted image pixels."""
        obj = np.column_stack([plane_mm, np.zeros(len(plane_mm))]).astype(np.float64)
        return cv2.projectPoints(obj, rvec, tvec, self.camera_matrix, self.dist)[0].reshape(-1, 2)

    def photograph(
        self,
        texture: BoardTexture,
        rvec: np.ndarray,
        tvec: np.ndarray,
        *,
        background: int = 160,
        noise_sigma: float = 0.0,
        seed: int = 0,
    ) -> np.ndarray:
        """(height, width) uint8 image of the texture on the plane seen from pose (rvec, tvec mm)."""
        r = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
        plane_to_ray = np.column_stack([r[:, 0], r[:, 1], np.asarray(tvec, np.float64)])
        ray_to_plane = np.linalg.inv(plane_to_ray)
        p = self.rays() @ ray_to_plane.T
        with np.errstate(divide="ignore", invalid="ignore"):
            x_mm, y_mm = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
        behind = p[..., 2] <= 0
        map_x = ((x_mm - texture.origin_mm[0]) * texture.px_per_mm - 0.5).astype(np.float32)
        map_y = ((y_mm - texture.origin_mm[1]) * texture.px_per_mm - 0.5).astype(np.float32)
        map_x[behind] = -1e6
        fine = cv2.remap(
            texture.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=background
        )
        image = cv2.resize(fine, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if noise_sigma > 0:
            rng = np.random.default_rng(seed)
            image = np.clip(image + rng.normal(0, noise_sigma, image.shape), 0, 255).astype(np.uint8)
        return image

    def sees_whole(self, texture: BoardTexture, rvec: np.ndarray, tvec: np.ndarray, margin_px: float = 8) -> bool:
        w_mm, h_mm = texture.size_mm
        ox, oy = texture.origin_mm
        corners = np.array([[ox, oy], [ox + w_mm, oy], [ox + w_mm, oy + h_mm], [ox, oy + h_mm]])
        px = self.project(corners, rvec, tvec)
        return bool(
            (px[:, 0] >= margin_px).all()
            and (px[:, 0] <= self.width - margin_px).all()
            and (px[:, 1] >= margin_px).all()
            and (px[:, 1] <= self.height - margin_px).all()
        )


def sample_camera() -> VirtualCamera:
    """640×480 with visible barrel distortion, slightly off-centre principal point."""
    return VirtualCamera(640, 480, 620.0, 618.0, 331.0, 236.0, (-0.21, 0.09, 0.0008, -0.0006, 0.0))


def board_poses(camera: VirtualCamera, texture: BoardTexture, count: int, seed: int = 1) -> Iterator[tuple]:
    """`count` varied poses (tilted up to ±35°, spread over the image) that keep the whole board in view."""
    rng = np.random.default_rng(seed)
    w_mm, h_mm = texture.size_mm
    ox, oy = texture.origin_mm
    centre = np.array([ox + w_mm / 2, oy + h_mm / 2, 0.0])
    made = 0
    for _ in range(2000):
        if made == count:
            return
        rvec = rotation(rng.uniform(-35, 35), rng.uniform(-35, 35), rng.uniform(-20, 20))
        r = cv2.Rodrigues(rvec)[0]
        distance = rng.uniform(1.1, 1.7) * max(w_mm, h_mm) * camera.fx / camera.width
        look_x, look_y = rng.uniform(-0.25, 0.25, 2)
        target = np.array([look_x * distance, look_y * distance, distance])
        tvec = target - r @ centre
        if camera.sees_whole(texture, rvec, tvec):
            made += 1
            yield rvec, tvec
    raise RuntimeError("could not find enough poses that keep the board in view")


def write_views(
    folder: Path, camera: VirtualCamera, texture: BoardTexture, count: int, seed: int = 1, noise_sigma: float = 1.0
) -> list[Path]:
    """Photograph the board from `count` poses into folder/view_NN.png."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (rvec, tvec) in enumerate(board_poses(camera, texture, count, seed)):
        path = folder / f"view_{i:02d}.png"
        cv2.imwrite(str(path), camera.photograph(texture, rvec, tvec, noise_sigma=noise_sigma, seed=i))
        paths.append(path)
    return paths


def overhead_pose(distance_mm: float, tilt_deg: float = 8.0, offset_mm: tuple[float, float] = (0.0, 0.0)) -> tuple:
    """A camera looking down on the working plane from distance_mm, slightly tilted (as mounted on a line).

    The plane point `offset_mm` appears near the image centre.
    """
    rvec = rotation(tilt_deg, -tilt_deg / 2, 3.0)
    r = cv2.Rodrigues(rvec)[0]
    tvec = np.array([0.0, 0.0, distance_mm]) - r @ np.array([offset_mm[0], offset_mm[1], 0.0])
    return rvec, tvec
