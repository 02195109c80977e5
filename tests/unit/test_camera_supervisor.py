"""CameraSupervisor rules with a scripted camera: the protocol is small enough that a fake is a few lines."""

from __future__ import annotations

import numpy as np

from lineinspect.core.frame import Frame
from lineinspect.line.capture.base import GrabFailed, TriggerMode
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_recorder import Recorder
from tests.helpers.waiting import take, wait_for


class ScriptedCamera:
    """Hands out a fixed list of grab outcomes (a device frame id, or an exception), then nothing."""

    def __init__(self, script: list[int | Exception], trigger_mode: TriggerMode = TriggerMode.HARDWARE) -> None:
        self.camera_id = "fake"
        self.trigger_mode = trigger_mode
        self.script = list(script)

    def open(self) -> None:
        pass

    def grab(self, timeout_ms: int) -> Frame | None:
        if not self.script:
            return None
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Frame(image=np.zeros((4, 4), np.uint8), camera_id="fake", frame_id=step)

    def trigger(self) -> None:
        pass

    def check_alive(self) -> None:
        pass

    def stream_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def test_hardware_trigger_frame_id_gap_becomes_skipped_parts() -> None:
    rec = Recorder()
    with CameraSupervisor(ScriptedCamera([10, 11, 14, 15]), on_skipped=rec.on_skipped, queue_size=8) as sup:
        caps = take(sup, 4)
        counters = sup.status().counters
    # Frames 12 and 13 were exposed (the camera counted them) but never arrived: two parts, two undecided.
    assert [p.reason for p in rec.skipped] == [
        "camera numbered frame 12 but never delivered it",
        "camera numbered frame 13 but never delivered it",
    ]
    assert [c.frame.trigger_id for c in caps] == [1, 2, 5, 6]
    assert [p.trigger_id for p in rec.skipped] == [3, 4]
    assert counters["missed_frames"] == 2 and counters["skipped_parts"] == 2


def test_broken_image_of_a_triggered_part_becomes_a_skipped_part() -> None:
    rec = Recorder()
    broken = GrabFailed("fake", "image 2 incomplete")
    with CameraSupervisor(ScriptedCamera([1, broken, 3]), on_skipped=rec.on_skipped) as sup:
        caps = take(sup, 2)
        wait_for(lambda: sup.status().counters["grab_failures"] == 1)
    assert [p.reason for p in rec.skipped] == ["image broken: image 2 incomplete"]
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
