"""Replay a folder of images as a camera: at a rate (free run) or one image per software trigger.

Each image is read and decoded when its frame is due, so a changed folder is seen at once; `replay.py`
decodes the folder once at open instead and hands out the decoded frames, as a camera delivers raw images.

Frames are marked `simulated=True` so their results never pass for real parts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Generic, TypeVar

from lineinspect.core.decode import decode_image
from lineinspect.core.frame import Frame
from lineinspect.errors import ImageError
from lineinspect.line.capture.base import CameraError, CameraLost, EndOfStream, GrabFailed, TriggerMode
from lineinspect.line.capture.pacing import FramePacer, SoftwareTriggerLatch

Item = TypeVar("Item")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(camera_id: str, path: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The image files `patterns` find under `path`, sorted by file name; CameraError when there are none."""
    if not path.is_dir():
        raise CameraError(camera_id, f"image folder {path} does not exist", "fix source.path in the camera definition")
    found = {p for pattern in patterns for p in path.glob(pattern)}
    files = sorted((p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=lambda p: (p.name, p))
    if not files:
        where = path if patterns == ("*",) else f"{path} (patterns {list(patterns)})"
        raise CameraError(
            camera_id,
            f"image folder {where} holds no images ({', '.join(IMAGE_SUFFIXES)})",
            "put sample images there or fix source.path",
        )
    return files


class ImageSequenceCamera(Generic[Item]):
    """A camera that hands out a sequence of stored images in file-name order, looping or not: at a rate (free
    run) or one per software trigger. Subclasses say how the sequence is loaded at open and how one of its items
    becomes a frame (`FolderCamera`: a file decoded when due; `ReplayCamera`: an image decoded at open)."""

    def __init__(
        self,
        camera_id: str,
        path: Path,
        *,
        trigger_mode: TriggerMode,
        rate_hz: float = 2.0,
        loop: bool = True,
        patterns: tuple[str, ...] = ("*",),
    ) -> None:
        """`patterns`: globs under `path` (e.g. `good/*.png`); images are replayed sorted by file name."""
        if trigger_mode is TriggerMode.HARDWARE:
            raise CameraError(camera_id, "stored images have no input lines", "use trigger mode software or free_run")
        self.camera_id = camera_id
        self.trigger_mode: TriggerMode = trigger_mode
        self.path = path
        self.loop = loop
        self.patterns = patterns
        self._pacer = FramePacer(rate_hz)
        self._latch = SoftwareTriggerLatch()
        self._items: list[Item] = []
        self._next = 0
        self._frame_id = 0
        self._lock = threading.Lock()

    def _load(self) -> list[Item]:
        raise NotImplementedError

    def _frame(self, item: Item, frame_id: int) -> Frame:
        raise NotImplementedError

    def open(self) -> None:
        items = self._load()
        with self._lock:
            self._items = items
            self._next = 0
        self._pacer.reset()
        self._latch.clear()

    def grab(self, timeout_ms: int) -> Frame | None:
        with self._lock:
            if not self._items:
                raise CameraError(self.camera_id, "grab before open", "open the camera first")
            if self._next >= len(self._items) and not self.loop:
                raise EndOfStream(self.camera_id, f"all {len(self._items)} images of {self.path} replayed")
        due = (
            self._latch.wait(timeout_ms) if self.trigger_mode is TriggerMode.SOFTWARE else self._pacer.wait(timeout_ms)
        )
        if not due:
            return None
        with self._lock:
            item = self._items[self._next % len(self._items)]
            self._next += 1
            if self.loop and self._next >= len(self._items):
                self._next = 0
            self._frame_id += 1
            frame_id = self._frame_id
        return self._frame(item, frame_id)

    def trigger(self) -> None:
        if self.trigger_mode is not TriggerMode.SOFTWARE:
            raise CameraError(self.camera_id, f"trigger() in {self.trigger_mode} mode", "set trigger mode software")
        self._latch.fire()

    def stream_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        with self._lock:
            self._items = []
        self._latch.clear()


class FolderCamera(ImageSequenceCamera[Path]):
    """Each image file read and decoded when its frame is due."""

    def _load(self) -> list[Path]:
        return list_images(self.camera_id, self.path, self.patterns)

    def _frame(self, item: Path, frame_id: int) -> Frame:
        try:
            image = decode_image(item.read_bytes(), name=str(item))
        except (OSError, ImageError) as exc:
            # The folder was changed under us: this one image is bad, the "camera" is fine.
            raise GrabFailed(self.camera_id, f"cannot read {item}: {exc}", "replace or remove the file") from exc
        return Frame(image=image, camera_id=self.camera_id, frame_id=frame_id, source=str(item), simulated=True)

    def check_alive(self) -> None:
        if not self.path.is_dir():
            raise CameraLost(self.camera_id, f"image folder {self.path} disappeared", "restore the folder")
