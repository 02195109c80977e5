"""The camera protocol every backend implements, and the errors it raises.

Shaped like OpenCV's capture (open / grab / release), so a test fake is a few lines:

    cam.open()                       # raises CameraError (CameraNotFound) with what to do
    frame = cam.grab(timeout_ms=500) # a Frame, or None when nothing arrived in time
    cam.trigger()                    # software trigger (only when the trigger mode is software)
    cam.close()                      # idempotent, never raises

`grab` raises `CameraLost` when the device is gone (the supervisor reconnects),
`GrabFailed` for one bad image (an incomplete buffer: that part gets an
`undecided` result) and `EndOfStream` when a replayed file or folder is finished.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from lineinspect.core.frame import Frame
from lineinspect.errors import LineinspectError


class TriggerMode(StrEnum):
    """What starts an exposure."""

    HARDWARE = "hardware"  # a sensor or PLC output wired to a camera input line
    SOFTWARE = "software"  # the station sends a trigger command (e.g. on a PLC signal)
    FREE_RUN = "free_run"  # the camera runs on its own clock; frames are not parts


class CameraError(LineinspectError):
    """A camera cannot be used; the message says which camera, what happened and what to do."""

    def __init__(self, camera_id: str, problem: str, action: str = "") -> None:
        self.camera_id = camera_id
        self.problem = problem
        self.action = action
        text = f"camera '{camera_id}': {problem}"
        super().__init__(f"{text}; {action}" if action else text)


class CameraNotFound(CameraError):
    """The configured device is not among those found; `found` lists what was."""

    def __init__(self, camera_id: str, wanted: str, found: list[str], action: str = "") -> None:
        self.found = found
        listing = ", ".join(found) if found else "none"
        super().__init__(
            camera_id,
            f"{wanted} not found (devices found: {listing})",
            action or "check the cable, power and the serial/device id in cameras/" + camera_id + ".yaml",
        )


class CameraLost(CameraError):
    """The device was removed or stopped answering; reconnecting may bring it back."""


class GrabFailed(CameraError):
    """One image arrived broken (incomplete buffer, lost packets); the camera itself is still there."""


class EndOfStream(CameraError):
    """A replayed file or folder has no more images (and `loop` is off)."""


@runtime_checkable
class Camera(Protocol):
    """One camera. `grab` runs in the supervisor's thread; `trigger` may be called from another thread."""

    camera_id: str
    trigger_mode: TriggerMode

    def open(self) -> None:
        """Connect, apply the acquisition settings and start acquiring. Raises CameraError."""
        ...

    def grab(self, timeout_ms: int) -> Frame | None:
        """The next image in arrival order (never "latest only"), or None after timeout_ms without one."""
        ...

    def trigger(self) -> None:
        """Start one exposure (software trigger mode only). Raises CameraError or CameraLost."""
        ...

    def check_alive(self) -> None:
        """Raise CameraLost if the device no longer answers (called while no images arrive)."""
        ...

    def stream_stats(self) -> dict[str, int]:
        """The SDK's own stream counters since open (names as the SDK reports them); {} if none."""
        ...

    def close(self) -> None:
        """Stop acquiring and release the device. Idempotent; never raises."""
        ...
