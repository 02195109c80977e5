"""The pylon backend against Basler's camera emulation (bundled with the pypylon wheel).

PYLON_CAMEMU is read when pylon's transport layer is first used in the process,
so the fixture sets it before any test here opens a camera.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineinspect.line.capture.base import CameraError, CameraNotFound
from lineinspect.line.capture.config import CameraConfig, parse_camera
from lineinspect.line.capture.pylon import PylonCamera
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_images import image_index, write_numbered_images
from tests.helpers.camera_recorder import Recorder
from tests.helpers.waiting import take, wait_for

pytest.importorskip("pypylon", reason="pypylon is not installed (pip install -e '.[dev]' installs it)")

EMULATED_CAMERAS = "2"


@pytest.fixture(autouse=True)
def pylon_emulation() -> Iterator[None]:
    before = os.environ.get("PYLON_CAMEMU")
    os.environ["PYLON_CAMEMU"] = before or EMULATED_CAMERAS
    yield
    # Left set: pylon read it once already; removing it would only mislead later readers.


def emulated(tmp_path: Path, trigger: dict[str, object], **source: object) -> CameraConfig:
    images = tmp_path / "images"
    if not images.exists():
        write_numbered_images(images, 3)
    return parse_camera(
        {
            "source": {"backend": "pylon", "emulation": True, "image_path": str(images), **source},
            "acquisition": {"trigger": trigger},
            "grab_timeout_ms": 1000,
            "reconnect": {"min_ms": 50, "max_ms": 400},
        },
        "cameras/emu.yaml",
        "emu",
    )


def test_pylon_software_triggers_give_one_frame_each_in_order(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "software"}, serial="0815-0000")
    rec = Recorder()
    with CameraSupervisor.from_config(config, on_skipped=rec.on_skipped) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED, 10, "connected")
        ids = [sup.trigger(part_id=f"P{i}") for i in range(4)]
        caps = take(sup, 4)
        assert sup.get(0.3) is None  # exactly one image per trigger
        wait_for(lambda: sup.status().stream.get("total_buffers") == 4, 3, "pylon statistics")
        status = sup.status()
    frames = [c.frame for c in caps]
    assert [f.trigger_id for f in frames] == ids
    assert [f.part_id for f in frames] == ["P0", "P1", "P2", "P3"]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]  # the camera's own block ids, none missing
    assert [image_index(f.image) for f in frames] == [0, 1, 2, 0]  # our images, served in name order
    assert frames[0].image.shape == (48, 64)
    assert all(f.simulated and f.camera_id == "emu" for f in frames)
    assert [f.captured_at for f in frames] == sorted(f.captured_at for f in frames)
    assert rec.skipped == []
    assert status.stream["failed_buffers"] == 0 and status.counters["frames"] == 4


def test_pylon_free_run_delivers_frames_with_increasing_ids(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "free_run", "frame_rate_hz": 50})
    with CameraSupervisor.from_config(config) as sup:
        caps = take(sup, 5, timeout_s=10)
    ids = [c.frame.frame_id for c in caps]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(c.frame.trigger_id is None for c in caps)


def test_pylon_incomplete_image_becomes_a_skipped_part(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "software"})
    rec = Recorder()
    camera = PylonCamera("emu", config.source, config.acquisition)  # type: ignore[arg-type]
    with CameraSupervisor(camera, on_skipped=rec.on_skipped) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED, 10, "connected")
        # The emulation's own switch for a broken transfer: the next buffer arrives incomplete.
        camera.instant_camera.ForceFailedBufferCount.Value = 1
        camera.instant_camera.ForceFailedBuffer.Execute()
        sup.trigger(part_id="broken")
        sup.trigger(part_id="fine")
        good = take(sup, 1)[0]
        wait_for(lambda: sup.status().stream.get("failed_buffers") == 1, 3, "pylon statistics")
        counters = sup.status().counters
    assert [p.part.part_id for p in rec.skipped if p.part is not None] == ["broken"]
    assert rec.skipped[0].reason.startswith("image broken: image 0 incomplete: The buffer was incompletely grabbed")
    assert good.frame.part_id == "fine" and good.frame.frame_id == 1
    assert counters["grab_failures"] == 1 and sup.status().state is CameraState.STOPPED


def test_pylon_camera_removed_is_reported_lost_then_reconnected(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "software"})
    rec = Recorder()
    camera = PylonCamera("emu", config.source, config.acquisition)  # type: ignore[arg-type]
    with CameraSupervisor(
        camera, reconnect_min_ms=50, reconnect_max_ms=400, on_status=rec.on_status, on_skipped=rec.on_skipped
    ) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED, 10, "connected")
        sup.trigger(part_id="before")
        assert take(sup, 1)[0].frame.part_id == "before"
        # The emulation's plug-and-play switch: pylon now reports the device removed, as when a cable is pulled.
        camera.instant_camera.FirePnPCallback.Execute()
        wait_for(lambda: CameraState.LOST in rec.states, 5, "lost reported")
        wait_for(lambda: sup.status().state is CameraState.CONNECTED, 10, "reconnected")
        sup.trigger(part_id="after")
        after = take(sup, 1)[0]
        status = sup.status()
    assert rec.states[:3] == [CameraState.CONNECTED, CameraState.LOST, CameraState.CONNECTED]
    assert status.counters["reconnects"] == 1
    assert "removed" in (status.last_error or "")
    assert after.frame.part_id == "after" and after.frame.frame_id == 0  # a new session starts counting again
    assert rec.skipped == []


def test_pylon_unknown_serial_lists_the_cameras_found(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "software"}, serial="99999999")
    camera = PylonCamera("top", config.source, config.acquisition)  # type: ignore[arg-type]
    with pytest.raises(CameraNotFound) as err:
        camera.open()
    assert str(err.value) == (
        "camera 'top': pylon camera with serial 99999999 not found "
        "(devices found: 0815-0000 (Emulation), 0815-0001 (Emulation)); "
        "check the cable, power and the serial/device id in cameras/top.yaml"
    )


def test_pylon_bad_pixel_format_names_the_feature_and_allowed_values(tmp_path: Path) -> None:
    config = emulated(tmp_path, {"mode": "software"})
    acquisition = config.acquisition.model_copy(update={"pixel_format": "Mono99"})
    camera = PylonCamera("emu", config.source, acquisition)  # type: ignore[arg-type]
    with pytest.raises(CameraError) as err:
        camera.open()
    camera.close()
    assert "camera 'emu': cannot set PixelFormat to 'Mono99' (allowed: Mono8, Mono10" in str(err.value)
    assert str(err.value).endswith("fix the camera definition")
