"""The OpenCV backend: a video file written here, and a stream URL that nobody serves."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest

from lineinspect.line.capture.base import CameraError, TriggerMode
from lineinspect.line.capture.config import parse_camera
from lineinspect.line.capture.opencv import OpenCVCamera
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_images import numbered_image
from tests.helpers.camera_recorder import Recorder
from tests.helpers.mosquitto import free_port
from tests.helpers.waiting import take, wait_for


def write_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(n):
        writer.write(cv2.cvtColor(numbered_image(i), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_opencv_video_file_replays_every_frame_then_finishes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "line.avi", 4)
    config = parse_camera(
        {
            "source": {"backend": "opencv", "file": str(video), "rate_hz": 100},
            "acquisition": {"trigger": {"mode": "free_run"}},
        },
        "cameras/vid.yaml",
        "vid",
    )
    rec = Recorder()
    with CameraSupervisor.from_config(config, on_status=rec.on_status) as sup:
        caps = take(sup, 4)
        wait_for(lambda: sup.status().state is CameraState.FINISHED, 5, "finished")
    frames = [c.frame for c in caps]
    assert [f.frame_id for f in frames] == [1, 2, 3, 4]
    assert all(f.image.shape == (48, 64, 3) and f.simulated for f in frames)
    # MJPG is lossy: the grey levels come back within a few counts.
    assert [round((float(f.image.mean()) - 20) / 30) for f in frames] == [0, 1, 2, 3]
    assert rec.states[-1] is CameraState.FINISHED


def test_opencv_video_file_per_software_trigger_and_loop(tmp_path: Path) -> None:
    video = write_video(tmp_path / "line.avi", 2)
    config = parse_camera(
        {
            "source": {"backend": "opencv", "file": str(video), "loop": True},
            "acquisition": {"trigger": {"mode": "software"}},
        },
        "cameras/vid.yaml",
        "vid",
    )
    with CameraSupervisor.from_config(config) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        for i in range(3):
            sup.trigger(part_id=f"P{i}")
        caps = take(sup, 3)
        assert sup.get(0.2) is None
    assert [c.frame.part_id for c in caps] == ["P0", "P1", "P2"]
    assert [c.frame.frame_id for c in caps] == [1, 2, 3]


def test_opencv_url_to_a_closed_port_fails_quickly_with_a_clear_error() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/line1"
    config = parse_camera(
        {"source": {"backend": "opencv", "url": url, "open_timeout_ms": 1000, "read_timeout_ms": 1000}},
        "cameras/ip.yaml",
        "ip",
    )
    camera = OpenCVCamera("ip", config.source, trigger_mode=TriggerMode.SOFTWARE)  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(CameraError) as err:
        camera.open()
    assert time.monotonic() - t0 < 3.0
    message = str(err.value)
    assert message.startswith(f"camera 'ip': cannot open {url} (gave up after ")
    assert message.endswith("check the URL, that the camera/stream is up and reachable, or the device index")


def test_opencv_missing_video_file_is_reported_while_reconnecting(tmp_path: Path) -> None:
    config = parse_camera({"source": {"backend": "opencv", "file": str(tmp_path / "none.avi")}}, "c.yaml", "vid")
    rec = Recorder()
    with CameraSupervisor.from_config(config, on_skipped=rec.on_skipped) as sup:
        wait_for(lambda: sup.status().reconnect_attempts >= 1)
        sup.trigger(part_id="Z")
        status = sup.status()
    assert status.last_error == f"camera 'vid': video file {tmp_path / 'none.avi'} does not exist; fix source.file"
    assert [p.part.part_id for p in rec.skipped if p.part is not None] == ["Z"]
