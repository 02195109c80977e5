"""The HTTP trigger refuses a camera that is not software-triggered, saying what to change."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from lineinspect.assemble import single_model_inspector
from lineinspect.config import HttpSection
from lineinspect.core.model import RuntimeOptions
from lineinspect.http.app import create_app
from lineinspect.http.routes.triggers import triggers_router
from lineinspect.line.capture.base import TriggerMode
from tests.helpers.graphs import brightness_anomaly


def test_trigger_is_refused_when_camera_is_not_software_triggered(tmp_path: Path) -> None:
    sent: list[str] = []
    inspector = single_model_inspector(brightness_anomaly(tmp_path / "m"), RuntimeOptions(intra_op_threads=1))
    router = triggers_router(lambda camera, **_: sent.append(camera) or 1, {"line": TriggerMode.HARDWARE}, run_id="r")
    with TestClient(create_app(inspector, HttpSection(), routers=[router])) as client:
        answer = client.post("/v1/cameras/line/trigger")
    assert answer.status_code == 409
    assert answer.json() == {
        "error": "not_software_triggered",
        "detail": "camera 'line' runs in hardware trigger mode; set acquisition.trigger.mode: software "
        "in cameras/line.yaml to trigger it over HTTP",
    }
    assert sent == []
