"""The Aravis backend against Aravis' fake GigE Vision camera, which speaks real GVCP/GVSP on loopback.

The fake camera listens on 127.0.0.1 at the GigE Vision control port 3956, so only
one can run at a time on this machine; each test starts and removes its own.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lineinspect.line.capture.aravis import AravisCamera
from lineinspect.line.capture.base import CameraNotFound
from lineinspect.line.capture.config import CameraConfig, parse_camera
from lineinspect.line.capture.supervisor import CameraState, CameraSupervisor
from tests.helpers.camera_recorder import Recorder
from tests.helpers.waiting import take, wait_for

gi = pytest.importorskip("gi", reason="PyGObject is not installed (pip install -e '.[dev]' installs it)")
try:
    gi.require_version("Aravis", "0.8")
    from gi.repository import Aravis
except (ValueError, ImportError):
    pytest.skip("Aravis typelib missing: apt-get install gir1.2-aravis-0.8 (make test does)", allow_module_level=True)


class FakeCameras:
    """Starts GvFakeCamera instances on loopback and removes them again."""

    def __init__(self) -> None:
        self.cameras: list[Any] = []

    def start(self, serial: str) -> Any:
        fake = Aravis.GvFakeCamera.new("lo", serial)
        assert fake.is_running(), "the fake camera did not start on 'lo'"
        self.cameras.append(fake)
        return fake

    def remove_all(self) -> None:
        # Dropping the last reference stops its GVCP/GVSP threads: the camera vanishes from the network.
        self.cameras.clear()
        gc.collect()


@pytest.fixture
def fakes() -> Iterator[FakeCameras]:
    f = FakeCameras()
    yield f
    f.remove_all()


@pytest.fixture
def serial() -> str:
    return "LI" + uuid.uuid4().hex[:8].upper()


def config_for(device_id: str, trigger: dict[str, object], **extra: object) -> CameraConfig:
    raw = {
        "source": {"backend": "aravis", "device_id": device_id},
        "acquisition": {"trigger": trigger, "roi": {"x": 0, "y": 0, "width": 64, "height": 48}},
        **extra,
    }
    return parse_camera(raw, "cameras/gige.yaml", "gige")


def supervisor(config: CameraConfig, rec: Recorder, **kw: Any) -> CameraSupervisor:
    camera = AravisCamera(config.id, config.source, config.acquisition)  # type: ignore[arg-type]
    return CameraSupervisor(camera, on_skipped=rec.on_skipped, on_status=rec.on_status, **kw)


def connected(sup: CameraSupervisor) -> Callable[[], bool]:
    return lambda: sup.status().state is CameraState.CONNECTED


def test_aravis_software_triggers_give_one_frame_each(fakes: FakeCameras, serial: str) -> None:
    fakes.start(serial)
    rec = Recorder()
    with supervisor(config_for(f"Aravis-Fake-{serial}", {"mode": "software"}), rec) as sup:
        wait_for(connected(sup), 5, "connected")
        caps = []
        for i in range(3):
            # One part at a time: the fake camera keeps one pending trigger, like a camera that is still exposing.
            sup.trigger(part_id=f"P{i}")
            caps += take(sup, 1)
        assert sup.get(0.3) is None
        wait_for(lambda: sup.status().stream.get("n_completed_buffers") == 3, 3, "Aravis statistics")
        stream = sup.status().stream
    frames = [c.frame for c in caps]
    assert [f.part_id for f in frames] == ["P0", "P1", "P2"]
    assert [f.trigger_id for f in frames] == [1, 2, 3]
    ids = [f.frame_id for f in frames]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]  # the camera's GVSP block ids, none missing
    assert all(f.image.shape == (48, 64) and f.device_timestamp_ns for f in frames)
    assert stream["n_failures"] == 0 and stream.get("n_missing_packets", 0) == 0
    assert rec.skipped == []


def test_aravis_free_run_and_serial_number_as_device_id(fakes: FakeCameras, serial: str) -> None:
    fakes.start(serial)
    rec = Recorder()
    with supervisor(config_for(serial, {"mode": "free_run", "frame_rate_hz": 50}), rec) as sup:
        caps = take(sup, 5)
    ids = [c.frame.frame_id for c in caps]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(c.frame.trigger_id is None for c in caps)


@pytest.mark.slow  # ~15 s: Aravis takes ~10 s to let go of a vanished GigE device (see capture/aravis.py)
def test_aravis_camera_lost_then_back_with_the_same_serial_reconnects(fakes: FakeCameras, serial: str) -> None:
    fakes.start(serial)
    rec = Recorder()
    config = config_for(serial, {"mode": "free_run", "frame_rate_hz": 50})
    with supervisor(config, rec, liveness_check_ms=200, reconnect_min_ms=100, reconnect_max_ms=400) as sup:
        take(sup, 3)
        fakes.remove_all()
        # Loss is noticed by the liveness check (a discovery) within about a second of the last image.
        t0 = time.monotonic()
        wait_for(lambda: CameraState.LOST in rec.states, 5, "lost reported")
        lost_after_s = time.monotonic() - t0
        wait_for(lambda: sup.status().reconnect_attempts >= 2, 20, "reconnect attempts while the camera is gone")
        gone = sup.status()
        fakes.start(serial)
        wait_for(connected(sup), 10, "reconnected")
        while sup.get(0) is not None:  # frames from before the loss
            pass
        after = take(sup, 3)
        status = sup.status()
    assert lost_after_s < 3.0
    assert gone.state is CameraState.RECONNECTING
    assert f"Aravis device '{serial}' not found" in (gone.last_error or "")
    assert rec.states[:4] == [CameraState.CONNECTED, CameraState.LOST, CameraState.RECONNECTING, CameraState.CONNECTED]
    assert status.counters["reconnects"] == 1 and len(after) == 3


def test_aravis_unknown_device_lists_the_devices_found(fakes: FakeCameras, serial: str) -> None:
    fakes.start(serial)
    config = config_for("Basler-00000000", {"mode": "software"})
    camera = AravisCamera("gige", config.source, config.acquisition)  # type: ignore[arg-type]
    with pytest.raises(CameraNotFound) as err:
        camera.open()
    camera.close()
    assert str(err.value) == (
        "camera 'gige': Aravis device 'Basler-00000000' not found "
        f"(devices found: Aravis-Fake-{serial} (Fake, 127.0.0.1)); "
        "check the cable, power and the serial/device id in cameras/gige.yaml"
    )
