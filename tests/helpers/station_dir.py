"""A station directory for tests: station.yaml + real ONNX models, and images to inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from tests.helpers.graphs import brightness_anomaly

BRIGHT_MODEL = "bright"


def write_station(station_dir: Path, *, recipes: list[dict[str, Any]] | None = None, **sections: Any) -> Path:
    """station.yaml with a `bright` model (bright pixels are defects) and recipe `part`."""
    station_dir.mkdir(parents=True, exist_ok=True)
    if not (station_dir / "models" / BRIGHT_MODEL).is_dir():
        brightness_anomaly(station_dir / "models" / BRIGHT_MODEL)
    config = {
        "station": {"id": "teststation", "uns": {"enterprise": "acme", "site": "s1", "area": "a1", "line": "l1"}},
        "runtime": {"intra_op_threads": 1},
        "recipes": recipes or [{"id": "part", "model": BRIGHT_MODEL}],
        **sections,
    }
    (station_dir / "station.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return station_dir


def good_part(width: int = 96, height: int = 64) -> np.ndarray:
    """A dark, even part: passes the bright model. (H, W, 3) BGR uint8."""
    return np.full((height, width, 3), 40, dtype=np.uint8)


def bad_part(width: int = 96, height: int = 64) -> np.ndarray:
    """The good part with a bright 16×16 spot at x 40–56, y 20–36: fails the bright model."""
    image = good_part(width, height)
    image[20:36, 40:56] = 255
    return image


def encode(image: np.ndarray, extension: str = ".png") -> bytes:
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()
