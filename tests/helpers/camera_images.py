"""Small numbered test images, so a test can tell which image a frame came from."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def numbered_image(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """(height, width) uint8 whose every pixel is 20 + 30*i: the mean identifies the image."""
    return np.full((height, width), 20 + 30 * i, np.uint8)


def image_index(image: np.ndarray) -> int:
    return round((float(image.mean()) - 20) / 30)


def write_numbered_images(folder: Path, n: int, width: int = 64, height: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"part{i:03d}.png"
        assert cv2.imwrite(str(path), numbered_image(i, width, height))
        paths.append(path)
    return paths
