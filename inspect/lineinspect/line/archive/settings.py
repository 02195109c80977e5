"""station.yaml `archive:`: what the image archive keeps, where, and how much disk it may use."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ArchiveSettings(BaseModel):
    """The image archive. Absent from station.yaml: no frame is kept (image.ref is always null)."""

    model_config = ConfigDict(extra="forbid")

    folder: Path = Field(
        Path("data/archive"),
        description="Folder of the archived frames and their index (index.sqlite); relative to the station "
        "directory. Give it its own disk or partition where the line runs for months.",
    )
    budget_bytes: int = Field(
        2_000_000_000,
        ge=1_000_000,
        description="Most bytes the archive may use (frames + index). Beyond it the oldest frames go: passed "
        "parts first, then failed/undecided ones, reviewed parts last.",
    )
    max_age_days: float = Field(
        30.0, gt=0, le=3650, description="Frames older than this many days are removed (reviews are kept)."
    )
    pass_sample_every: int = Field(
        50,
        ge=0,
        description="Keep 1 in this many passed parts per camera (0: no passed part beyond the first ones). Every "
        "failed and undecided part is kept.",
    )
    pass_first_count: int = Field(
        10,
        ge=0,
        description="Keep the first this many passed parts of each camera after start-up and after each "
        "changeover (a new recipe), whatever pass_sample_every says.",
    )
    queue_frames: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Frames waiting for the writer thread; when it is full a frame is not kept (image.ref null, "
        "counted as skipped_busy) rather than delaying any verdict.",
    )
    min_free_bytes: int = Field(
        200_000_000,
        ge=0,
        description="Free space the archive leaves on its disk for the outbox, the logs and the OS; below it "
        "no frame is written (alarm disk_full).",
    )
    uploads: bool = Field(True, description="Keep the frames of HTTP uploads too, by the same rules (marked upload).")
