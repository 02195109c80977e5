"""CameraSupervisor rules with a scripted camera: the protocol is small enough that a fake is a few lines."""

from __future__ import annotations

from lineinspect.core.result import UndecidedKind
from lineinspect.line.capture.base import GrabFailed, TriggerMode
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_recorder import Recorder
from tests.helpers.scripted_cameras import ScriptedCamera
from tests.helpers.waiting import take, wait_for


def test_hardware_trigger_frame_id_gap_becomes_skipped_parts() -> None:
    rec = Recorder()
    camera = ScriptedCamera([10, 11, 14, 15])
    with CameraSupervisor(camera, on_part=rec.on_part, on_skipped=rec.on_skipped, queue_size=8) as sup:
        caps = take(sup, 4)
        counters = sup.status().counters
    # Frames 12 and 13 were exposed (the camera counted them) but never arrived: two parts, two undecided.
    assert [p.reason for p in rec.skipped] == [
        "camera numbered frame 12 but never delivered it",
        "camera numbered frame 13 but never delivered it",
    ]
    assert [c.frame.trigger_id for c in caps] == [1, 2, 5, 6]
    assert [p.part.trigger_id for p in rec.skipped if p.part is not None] == [3, 4]
    assert [p.kind for p in rec.skipped] == [UndecidedKind.NO_IMAGE, UndecidedKind.NO_IMAGE]
    assert counters["missed_frames"] == 2 and counters["skipped_parts"] == 2
    # Every hardware-triggered part, delivered or not, was announced once, in trigger order.
    assert [p.trigger_id for p in rec.parts] == [1, 2, 3, 4, 5, 6]


def test_broken_image_of_a_triggered_part_becomes_a_skipped_part() -> None:
    rec = Recorder()
    broken = GrabFailed("fake", "image 2 incomplete")
    with CameraSupervisor(ScriptedCamera([1, broken, 3]), on_skipped=rec.on_skipped) as sup:
        caps = take(sup, 2)
        wait_for(lambda: sup.status().counters["grab_failures"] == 1)
    assert [p.reason for p in rec.skipped] == ["image broken: image 2 incomplete"]
    assert [p.kind for p in rec.skipped] == [UndecidedKind.IMAGE_BROKEN]
    assert [c.frame.frame_id for c in caps] == [1, 3]


def test_free_run_broken_image_is_counted_not_a_part() -> None:
    rec = Recorder()
    camera = ScriptedCamera([1, GrabFailed("fake", "bad"), 2], TriggerMode.FREE_RUN)
    with CameraSupervisor(camera, on_skipped=rec.on_skipped) as sup:
        take(sup, 2)
        status = sup.status()
    assert rec.skipped == [] and status.counters["grab_failures"] == 1
    assert status.state is CameraState.CONNECTED and status.last_error == "camera 'fake': bad"


def test_hooks_that_raise_do_not_stop_the_camera_thread() -> None:
    def broken_hook(_: object) -> None:
        raise RuntimeError("hook bug")

    with CameraSupervisor(ScriptedCamera([1, 3, 4]), on_skipped=broken_hook, on_status=broken_hook) as sup:
        caps = take(sup, 3)
    assert [c.frame.frame_id for c in caps] == [1, 3, 4]
    assert sup.status().counters["skipped_parts"] == 1
