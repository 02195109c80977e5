"""PartRef: one triggered part as it is known at its trigger, made once and never changed.

Pure data: frames, captures, skipped parts and results carry it; the camera supervisor makes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Selection:
    """What a part is inspected with, fixed at its trigger: the camera's active recipe and the station's
    loaded setup (recipes and models) at that moment. A changeover or a model reload after the trigger
    does not change it, so every part is inspected with exactly one recipe version and one model."""

    recipe_id: str | None
    setup: int  # the generation of loaded recipes and models (`line/changeover.py`)


@dataclass(frozen=True, slots=True)
class PartRef:
    """A part that passed a camera's trigger.

    Made by the camera supervisor at the trigger (a software trigger sent, or a hardware-triggered
    image grabbed), announced once to whoever tracks parts (the reject station) before any image or
    result of it exists, and carried by its capture, its skipped-part notice and its result.

    trigger_id: the camera's trigger counter (1, 2, …), the reject tracker's part number.
    trigger_ns: `time.monotonic_ns()` at the trigger; the part's deadline and a timed reject count from it.
    part_id: the part's own id where the line gives one (PLC, HTTP trigger).
    encoder_count: the conveyor encoder at the trigger, for encoder-based rejects.
    selection: the recipe and setup active at the trigger (None: the camera's default at inspection).
    """

    camera_id: str
    trigger_id: int
    trigger_ns: int
    part_id: str | None = None
    encoder_count: int | None = None
    selection: Selection | None = None

    def deadline_ns(self, budget_ms: float) -> int:
        """When the part's result is due: trigger + budget (ms)."""
        return self.trigger_ns + int(budget_ms * 1_000_000)
