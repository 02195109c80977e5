"""Frame: one image of one part, with where and when it was taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from lineinspect.core.clock import utc_now
from lineinspect.core.part import PartRef


@dataclass(frozen=True, slots=True)
class Frame:
    """image: (H, W) gray or (H, W, 3) BGR uint8.

    captured_at is the host's UTC time of capture; device_timestamp_ns is the
    camera's own clock where the backend reports it. `source` names where the
    image came from (file path, upload name, camera URL). `part` is the
    triggered part the image belongs to (None for uploads and free-running
    cameras); the camera supervisor attaches it.
    """

    image: np.ndarray
    captured_at: datetime = field(default_factory=utc_now)
    camera_id: str | None = None
    frame_id: int | None = None
    part: PartRef | None = None
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

    @property
    def trigger_id(self) -> int | None:
        return self.part.trigger_id if self.part is not None else None

    @property
    def part_id(self) -> str | None:
        return self.part.part_id if self.part is not None else None

    @property
    def encoder_count(self) -> int | None:
        return self.part.encoder_count if self.part is not None else None
