"""The folder camera under the supervisor: rate and trigger replay, end of folder, loss, full queue."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lineinspect.core.result import UndecidedKind
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.config import QueueFullPolicy, parse_camera
from lineinspect.line.capture.folder import FolderCamera
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_images import image_index, write_numbered_images
from tests.helpers.camera_recorder import Recorder
from tests.helpers.waiting import take, wait_for


def test_folder_free_run_replays_images_in_order_at_the_rate(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 3)
    cam = FolderCamera("replay", tmp_path / "imgs", trigger_mode=TriggerMode.FREE_RUN, rate_hz=40, loop=True)
    with CameraSupervisor(cam) as sup:
        caps = take(sup, 5)
    frames = [c.frame for c in caps]
    assert [image_index(f.image) for f in frames] == [0, 1, 2, 0, 1]
    assert all(f.simulated and f.camera_id == "replay" and f.trigger_id is None for f in frames)
    assert frames[0].source is not None and frames[0].source.endswith("part000.png")
    # 40 Hz: 4 periods are 100 ms (loose bounds: a shared machine can delay single frames).
    span_ms = (caps[-1].grabbed_ns - caps[0].grabbed_ns) / 1e6
    assert 70 <= span_ms <= 1000, span_ms
    assert frames[0].captured_at.tzinfo is not None


def test_folder_software_trigger_gives_one_frame_per_trigger_with_part_ids(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 4)
    rec = Recorder()
    cam = FolderCamera("sw", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE)
    with CameraSupervisor(cam, on_skipped=rec.on_skipped, queue_size=8) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        assert sup.get(0.2) is None  # nothing without a trigger
        ids = [sup.trigger(part_id=f"P{i}", encoder_count=1000 * i) for i in range(3)]
        caps = take(sup, 3)
        assert sup.get(0.2) is None
        counters = sup.status().counters
    assert [c.frame.trigger_id for c in caps] == ids == [1, 2, 3]
    assert [c.frame.part_id for c in caps] == ["P0", "P1", "P2"]
    assert [c.frame.encoder_count for c in caps] == [0, 1000, 2000]
    assert [image_index(c.frame.image) for c in caps] == [0, 1, 2]
    assert all(c.frame.part is not None and c.frame.part.trigger_ns <= c.grabbed_ns for c in caps)
    assert rec.skipped == []
    assert counters["triggers"] == 3 and counters["frames"] == 3


def test_folder_without_loop_finishes_after_the_last_image(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 2)
    rec = Recorder()
    cam = FolderCamera("once", tmp_path / "imgs", trigger_mode=TriggerMode.FREE_RUN, rate_hz=100, loop=False)
    with CameraSupervisor(cam, on_status=rec.on_status) as sup:
        caps = take(sup, 2)
        wait_for(lambda: sup.status().state is CameraState.FINISHED)
        status = sup.status()
    assert [image_index(c.frame.image) for c in caps] == [0, 1]
    assert "all 2 images" in (status.last_error or "")
    assert rec.states[-1] is CameraState.FINISHED


def test_folder_when_path_is_missing_reports_reconnecting_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    rec = Recorder()
    cam = FolderCamera("cam7", missing, trigger_mode=TriggerMode.SOFTWARE)
    with CameraSupervisor(cam, on_skipped=rec.on_skipped, reconnect_min_ms=20, reconnect_max_ms=80) as sup:
        wait_for(lambda: sup.status().reconnect_attempts >= 3)
        status = sup.status()
        # A trigger while the camera is not there is not lost: it is reported at once.
        tid = sup.trigger(part_id="A1")
        payload = sup.status().to_payload()
    assert status.state is CameraState.RECONNECTING
    assert status.last_error == (
        f"camera 'cam7': image folder {missing} does not exist; fix source.path in the camera definition"
    )
    assert [(p.part.trigger_id, p.part.part_id) for p in rec.skipped if p.part is not None] == [(tid, "A1")]
    assert rec.skipped[0].reason.startswith("camera reconnecting: camera 'cam7': image folder")
    assert payload["state"] == "reconnecting" and payload["counters"]["skipped_parts"] == 1


def test_folder_lost_and_restored_reconnects_with_backoff(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_numbered_images(folder, 2)
    rec = Recorder()
    cam = FolderCamera("cam1", folder, trigger_mode=TriggerMode.SOFTWARE)
    sup = CameraSupervisor(
        cam, liveness_check_ms=50, reconnect_min_ms=20, reconnect_max_ms=160, on_status=rec.on_status
    )
    with sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        shutil.rmtree(folder)
        wait_for(lambda: sup.status().reconnect_attempts >= 4)
        status = sup.status()
        assert status.state is CameraState.RECONNECTING
        assert status.next_attempt_in_ms is not None and status.next_attempt_in_ms <= 160
        write_numbered_images(folder, 2)
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        sup.trigger()
        assert take(sup, 1)[0].frame.trigger_id == 1
        counters = sup.status().counters
    assert rec.states[:4] == [CameraState.CONNECTED, CameraState.LOST, CameraState.RECONNECTING, CameraState.CONNECTED]
    assert rec.states[-1] is CameraState.STOPPED
    assert counters["reconnects"] == 1


@pytest.mark.parametrize("policy", [QueueFullPolicy.UNDECIDED_NEW, QueueFullPolicy.UNDECIDED_OLDEST])
def test_triggered_parts_beyond_a_full_queue_become_skipped_parts(tmp_path: Path, policy: QueueFullPolicy) -> None:
    write_numbered_images(tmp_path / "imgs", 5)
    rec = Recorder()
    cam = FolderCamera("sw", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE)
    with CameraSupervisor(cam, queue_size=2, full_policy=policy, on_skipped=rec.on_skipped) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        for i in range(5):
            sup.trigger(part_id=f"P{i}")
        wait_for(lambda: len(rec.skipped) == 3)
        queued = [c.frame.part_id for c in take(sup, 2)]
    skipped = [p.part.part_id for p in rec.skipped if p.part is not None]
    if policy is QueueFullPolicy.UNDECIDED_NEW:
        assert queued == ["P0", "P1"] and skipped == ["P2", "P3", "P4"]
    else:
        assert queued == ["P3", "P4"] and skipped == ["P0", "P1", "P2"]
    assert all(p.frame is not None and "inspection queue full" in p.reason for p in rec.skipped)
    assert {p.kind for p in rec.skipped} == {UndecidedKind.QUEUE_FULL}


def test_free_run_with_a_full_queue_drops_oldest_frames_and_counts_them(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 3)
    cam = FolderCamera("fr", tmp_path / "imgs", trigger_mode=TriggerMode.FREE_RUN, rate_hz=200)
    with CameraSupervisor(cam, queue_size=2) as sup:
        wait_for(lambda: sup.status().counters["dropped_frames"] >= 3)
    assert sup.status().state is CameraState.STOPPED


def test_software_trigger_without_an_image_becomes_a_skipped_part(tmp_path: Path) -> None:
    class NeverDelivers(FolderCamera):
        def trigger(self) -> None:  # the trigger "goes out" but no image ever comes
            pass

    write_numbered_images(tmp_path / "imgs", 1)
    rec = Recorder()
    cam = NeverDelivers("slow", tmp_path / "imgs", trigger_mode=TriggerMode.SOFTWARE)
    with CameraSupervisor(cam, grab_timeout_ms=150, on_skipped=rec.on_skipped) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        t0 = time.monotonic()
        sup.trigger(part_id="X9")
        wait_for(lambda: len(rec.skipped) == 1)
        waited_s = time.monotonic() - t0
    assert rec.skipped[0].part is not None and rec.skipped[0].part.part_id == "X9"
    assert rec.skipped[0].reason == "no image within 150 ms of the software trigger"
    assert 0.1 <= waited_s < 2.0
    assert sup.status().counters["missed_triggers"] == 1


def test_supervisor_from_config_builds_the_folder_backend(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "imgs", 1)
    config = parse_camera(
        {"source": {"backend": "folder", "path": str(tmp_path / "imgs")}, "queue": {"size": 3}}, "cam.yaml", "cam"
    )
    with CameraSupervisor.from_config(config) as sup:
        wait_for(lambda: sup.status().state is CameraState.CONNECTED)
        sup.trigger()
        cap = take(sup, 1)[0]
    assert cap.frame.camera_id == "cam" and sup.status().queue_size == 3
