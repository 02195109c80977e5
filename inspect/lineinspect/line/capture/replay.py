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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineinspect.core.decode import decode_image
from lineinspect.core.frame import Frame
from lineinspect.errors import ImageError
from lineinspect.line.capture.base import CameraError, TriggerMode
from lineinspect.line.capture.folder import ImageSequenceCamera, list_images

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


class ReplayCamera(ImageSequenceCamera[ReplayImage]):
    """The images decoded at open and handed out from memory (read-only)."""

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
        """`max_memory_mib`: the most the decoded images may take (the rest as `ImageSequenceCamera`)."""
        super().__init__(camera_id, path, trigger_mode=trigger_mode, rate_hz=rate_hz, loop=loop, patterns=patterns)
        self.max_memory_mib = max_memory_mib

    def _load(self) -> list[ReplayImage]:
        return decode_folder(self.camera_id, self.path, self.patterns, max_memory_mib=self.max_memory_mib)

    def _frame(self, item: ReplayImage, frame_id: int) -> Frame:
        return Frame(image=item.image, camera_id=self.camera_id, frame_id=frame_id, source=item.source, simulated=True)

    def check_alive(self) -> None:
        """The images are in memory: the replay cannot be lost once open."""
