"""Frame: one image of one part, with where and when it was taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Frame:
    """image: (H, W) gray or (H, W, 3) BGR uint8.

    captured_at is the host's UTC time of capture; device_timestamp_ns is the
    camera's own clock where the backend reports it. `source` names where the
    image came from (file path, upload name, camera URL).
    """

    image: np.ndarray
    captured_at: datetime = field(default_factory=utc_now)
    camera_id: str | None = None
    frame_id: int | None = None
    trigger_id: int | None = None
    part_id: str | None = None
    encoder_count: int | None = None
    device_timestamp_ns: int | None = None
    source: str | None = None
    simulated: bool = False

    def __post_init__(self) -> None:
        if self.captured_at.tzinfo is None:
            raise ValueError("Frame.captured_at must be timezone-aware (UTC)")
        if self.image.dtype != np.uint8 or self.image.ndim not in (2, 3):
            raise ValueError(
                f"Frame.image must be (H, W) or (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}"
            )
