"""The replay camera under the supervisor: decoded once at open, the same read-only frames per loop, its checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lineinspect.errors import ConfigError
from lineinspect.line.capture.base import CameraError, TriggerMode
from lineinspect.line.capture.config import ReplaySource, load_cameras, parse_camera
from lineinspect.line.capture.replay import ReplayCamera
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_images import image_index, write_numbered_images
from tests.helpers.waiting import take, wait_for


def test_replay_software_trigger_hands_out_the_decoded_images_in_order_and_again_per_loop(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 3)
    cam = ReplayCamera("rp", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE)
    with CameraSupervisor(cam, queue_size=8) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        ids = [sup.trigger(part_id=f"P{i}") for i in range(5)]
        caps = take(sup, 5)
    frames = [c.frame for c in caps]
    assert [f.trigger_id for f in frames] == ids
    assert [f.part_id for f in frames] == [f"P{i}" for i in range(5)]
    assert [image_index(f.image) for f in frames] == [0, 1, 2, 0, 1]
    assert all(f.simulated and f.camera_id == "rp" for f in frames)
    assert frames[0].source is not None and frames[0].source.endswith("part000.png")
    # Decoded once: the second loop hands out the very same arrays, which nobody may write into.
    assert frames[3].image is frames[0].image
    assert not frames[0].image.flags.writeable
    with pytest.raises(ValueError):
        frames[0].image[0, 0] = 0


def test_replay_keeps_serving_from_memory_when_the_folder_goes_away_after_open(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 2)
    cam = ReplayCamera("rp", tmp_path / "imgs", trigger_mode=TriggerMode.FREE_RUN, rate_hz=100)
    with CameraSupervisor(cam, liveness_check_ms=20) as sup:
        take(sup, 1)
        shutil.rmtree(tmp_path / "imgs")
        caps = take(sup, 4)
        state = sup.status().state
    assert state is CameraState.CONNECTED
    assert {image_index(c.frame.image) for c in caps} == {0, 1}


def test_replay_without_loop_finishes_after_the_last_image(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 2)
    cam = ReplayCamera("once", tmp_path / "imgs", trigger_mode=TriggerMode.FREE_RUN, rate_hz=100, loop=False)
    with CameraSupervisor(cam) as sup:
        caps = take(sup, 2)
        wait_for(lambda: sup.status().state is CameraState.FINISHED)
    assert [image_index(c.frame.image) for c in caps] == [0, 1]


def test_replay_refuses_to_open_a_folder_that_does_not_fit_its_memory_bound(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 3, width=640, height=480)  # 0.29 MiB each, gray
    cam = ReplayCamera("big", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE, max_memory_mib=0.5)
    with pytest.raises(CameraError, match=r"need more than source.max_memory_mib \(0.5 MiB\).*raise source"):
        cam.open()


def test_replay_refuses_to_open_a_broken_image_and_names_it(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 1)
    (tmp_path / "imgs" / "part001.png").write_bytes(b"not a png")
    cam = ReplayCamera("bad", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE)
    with pytest.raises(CameraError, match=r"part001\.png"):
        cam.open()


def test_replay_camera_definition_is_validated_and_builds_the_backend(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "st" / "imgs", 2)
    (tmp_path / "st" / "cameras").mkdir()
    (tmp_path / "st" / "cameras" / "cam.yaml").write_text(
        "source: {backend: replay, path: imgs, patterns: ['*.png'], max_memory_mib: 64}\n"
    )
    [config] = load_cameras(tmp_path / "st")
    assert isinstance(config.source, ReplaySource)
    assert config.source.path == (tmp_path / "st" / "imgs").resolve()  # relative to the station directory
    with CameraSupervisor.from_config(config) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        sup.trigger()
        cap = take(sup, 1)[0]
    assert cap.frame.camera_id == "cam" and image_index(cap.frame.image) == 0


@pytest.mark.parametrize(
    ("source", "acquisition", "expected"),
    [
        ({"backend": "replay", "path": "x", "max_memory_mib": 0}, {}, "max_memory_mib"),
        ({"backend": "replay", "path": "x", "speed": 2}, {}, "speed"),
        ({"backend": "replay", "path": "x"}, {"trigger": {"mode": "hardware"}}, "backend replay has no input lines"),
    ],
)
def test_replay_camera_definition_refuses_bad_fields(
    source: dict[str, object], acquisition: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_camera({"source": source, "acquisition": acquisition}, "cameras/cam.yaml", "cam")
