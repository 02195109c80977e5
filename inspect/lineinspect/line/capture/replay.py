"""Replay decoded images from memory as a camera: the folder is read and decoded once, at open.

A real camera hands the station raw pixels; it never decodes a PNG per part. This backend does the
same with a folder of images (commissioning a line before the camera is wired, benchmarks that
measure the station rather than an image codec): `open` decodes every image the patterns find,
`grab` hands out the next decoded frame, at a rate (free run) or one per software trigger.

The same arrays are handed out again on every loop, marked read-only: nothing on the part path may
write into a frame (it never does; a write would raise instead of changing the next part's image).
The decoded images must fit `max_memory_mib`; a folder that does not is refused at open, naming
the size, rather than filling the station's memory. Changes to the folder after open are not seen
(reopen the camera, e.g. restart, to load them). Frames are marked `simulated=True`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineinspect.core.decode import decode_image
from lineinspect.core.frame import Frame
from lineinspect.errors import ImageError
from lineinspect.line.capture.base import CameraError, EndOfStream, TriggerMode
from lineinspect.line.capture.folder import list_images
from lineinspect.line.capture.pacing import FramePacer, SoftwareTriggerLatch

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReplayImage:
    """One decoded image: (H, W) gray or (H, W, 3) BGR uint8, read-only; `source` is its file."""

    image: np.ndarray
    source: str


def decode_folder(camera_id: str, path: Path, patterns: tuple[str, ...], *, max_memory_mib: float) -> list[ReplayImage]:
    """Every image `patterns` find under `path`, decoded, sorted by file name. Raises CameraError for a missing or
    empty folder, an image that cannot be read or decoded, or images that need more than `max_memory_mib`."""
    images: list[ReplayImage] = []
    total_bytes = 0
    for file in list_images(camera_id, path, patterns):
        try:
            image = decode_image(file.read_bytes(), name=str(file))
        except (OSError, ImageError) as exc:
            raise CameraError(camera_id, f"cannot read {file}: {exc}", "replace or remove the file") from exc
        total_bytes += image.nbytes
        if total_bytes > max_memory_mib * _MIB:
            raise CameraError(
                camera_id,
                f"the images of {path} need more than source.max_memory_mib ({max_memory_mib:g} MiB) decoded "
                f"({len(images) + 1} images so far)",
                "raise source.max_memory_mib, replay fewer images (source.patterns), or use backend folder",
            )
        image.flags.writeable = False
        images.append(ReplayImage(image, str(file)))
    return images


class ReplayCamera:
    def __init__(
        self,
        camera_id: str,
        path: Path,
        *,
        trigger_mode: TriggerMode,
        rate_hz: float = 2.0,
        loop: bool = True,
        patterns: tuple[str, ...] = ("*",),
        max_memory_mib: float = 512.0,
    ) -> None:
        """`patterns`: globs under `path` (e.g. `good/*.png`); images are replayed sorted by file name.
        `rate_hz`: free run only, frames per second. `max_memory_mib`: the most the decoded images may take."""
        if trigger_mode is TriggerMode.HARDWARE:
            raise CameraError(camera_id, "a replay has no input lines", "use trigger mode software or free_run")
        self.camera_id = camera_id
        self.trigger_mode: TriggerMode = trigger_mode
        self.path = path
        self.loop = loop
        self.patterns = patterns
        self.max_memory_mib = max_memory_mib
        self._pacer = FramePacer(rate_hz)
        self._latch = SoftwareTriggerLatch()
        self._images: list[ReplayImage] = []
        self._next = 0
        self._frame_id = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        images = decode_folder(self.camera_id, self.path, self.patterns, max_memory_mib=self.max_memory_mib)
        with self._lock:
            self._images = images
            self._next = 0
        self._pacer.reset()
        self._latch.clear()

    def grab(self, timeout_ms: int) -> Frame | None:
        with self._lock:
            if not self._images:
                raise CameraError(self.camera_id, "grab before open", "open the camera first")
            if self._next >= len(self._images) and not self.loop:
                raise EndOfStream(self.camera_id, f"all {len(self._images)} images of {self.path} replayed")
        due = (
            self._latch.wait(timeout_ms) if self.trigger_mode is TriggerMode.SOFTWARE else self._pacer.wait(timeout_ms)
        )
        if not due:
            return None
        with self._lock:
            replayed = self._images[self._next % len(self._images)]
            self._next += 1
            if self.loop and self._next >= len(self._images):
                self._next = 0
            self._frame_id += 1
            frame_id = self._frame_id
        return Frame(
            image=replayed.image, camera_id=self.camera_id, frame_id=frame_id, source=replayed.source, simulated=True
        )

    def trigger(self) -> None:
        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(self.camera_id, f"trigger() in {self.trigger_mode} mode", "set trigger mode software")
        self._latch.fire()

    def check_alive(self) -> None:
        """The images are in memory: the replay cannot be lost once open."""

    def stream_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        with self._lock:
            self._images = []
        self._latch.clear()
