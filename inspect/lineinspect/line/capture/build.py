"""Make the backend a camera definition names. SDK modules are imported only when used."""

from __future__ import annotations

from lineinspect.line.capture.base import Camera
from lineinspect.line.capture.config import (
    AravisSource,
    CameraConfig,
    FolderSource,
    OpenCVSource,
    PylonSource,
    ReplaySource,
)


def build_camera(config: CameraConfig) -> Camera:
    """A backend for `config`, not yet opened (CameraSupervisor opens it, and reopens it after a loss)."""
    src = config.source
    mode = config.trigger_mode
    if isinstance(src, FolderSource):
        from lineinspect.line.capture.folder import FolderCamera

        return FolderCamera(
            config.id, src.path, trigger_mode=mode, rate_hz=src.rate_hz, loop=src.loop, patterns=tuple(src.patterns)
        )
    if isinstance(src, ReplaySource):
        from lineinspect.line.capture.replay import ReplayCamera

        return ReplayCamera(
            config.id,
            src.path,
            trigger_mode=mode,
            rate_hz=src.rate_hz,
            loop=src.loop,
            patterns=tuple(src.patterns),
            max_memory_mib=src.max_memory_mib,
        )
    if isinstance(src, OpenCVSource):
        from lineinspect.line.capture.opencv import OpenCVCamera

        return OpenCVCamera(config.id, src, trigger_mode=mode)
    if isinstance(src, PylonSource):
        from lineinspect.line.capture.pylon import PylonCamera

        return PylonCamera(config.id, src, config.acquisition)
    if isinstance(src, AravisSource):
        from lineinspect.line.capture.aravis import AravisCamera

        return AravisCamera(config.id, src, config.acquisition)
    raise AssertionError(f"unhandled camera source {type(src).__name__}")
