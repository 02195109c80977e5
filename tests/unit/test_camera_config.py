"""cameras/<id>.yaml: what a commissioning engineer sees for good and bad definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineinspect.errors import ConfigError
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.config import QueueFullPolicy, load_cameras, parse_camera


def write(station: Path, name: str, text: str) -> Path:
    (station / "cameras").mkdir(parents=True, exist_ok=True)
    path = station / "cameras" / name
    path.write_text(text)
    return path


def test_load_cameras_when_definitions_are_valid(tmp_path: Path) -> None:
    write(
        tmp_path,
        "top.yaml",
        "source: {backend: pylon, serial: '40012345'}\n"
        "acquisition:\n  trigger: {mode: hardware, line: Line2, activation: falling_edge}\n  exposure_us: 1500\n"
        "recipe: bracket\nreject_output: ejector1\n",
    )
    write(
        tmp_path,
        "replay.yaml",
        "source: {backend: folder, path: images, rate_hz: 5}\nacquisition: {trigger: {mode: free_run}}\n",
    )
    cams = load_cameras(tmp_path)
    assert [c.id for c in cams] == ["replay", "top"]
    replay, top = cams
    assert top.trigger_mode is TriggerMode.HARDWARE
    assert top.acquisition.trigger.line == "Line2"  # type: ignore[union-attr]
    assert top.full_policy is QueueFullPolicy.UNDECIDED_NEW
    assert replay.full_policy is QueueFullPolicy.DROP_OLDEST
    # Relative paths are anchored at the station directory, not the current directory.
    assert replay.source.path == (tmp_path / "images").resolve()  # type: ignore[union-attr]


def test_load_cameras_when_station_has_no_cameras_folder(tmp_path: Path) -> None:
    assert load_cameras(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("source: {backend: gopro}\n", "source: Input tag 'gopro' found using 'backend' does not match"),
        ("source: {backend: pylon}\n", "give serial or user_defined_name (or emulation: true)"),
        ("source: {backend: aravis}\n", "source.aravis.device_id: Field required"),
        ("source: {backend: opencv, index: 0, url: 'rtsp://x'}\n", "give exactly one of index, url, file"),
        ("source: {backend: folder, path: x, rate_hz: 0}\n", "source.folder.rate_hz: Input should be greater than 0"),
        ("source: {backend: folder, path: x}\nexposure_us: 10\n", "exposure_us: Extra inputs are not permitted"),
        (
            "source: {backend: folder, path: x}\nacquisition: {trigger: {mode: hardware}}\n",
            "backend folder has no input lines",
        ),
        (
            "source: {backend: aravis, device_id: X}\nqueue: {full_policy: drop_oldest}\n",
            "drop_oldest would silently lose triggered parts",
        ),
        (
            "source: {backend: aravis, device_id: X}\nacquisition: {trigger: {mode: sometimes}}\n",
            "acquisition.trigger: Input tag 'sometimes' found using 'mode'",
        ),
        ("source: {backend: aravis, device_id: X}\nreconnect: {min_ms: 500, max_ms: 100}\n", "max_ms (100)"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_load_cameras_when_a_field_is_bad_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "cam1.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_cameras(tmp_path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_load_cameras_when_yaml_is_broken(tmp_path: Path) -> None:
    path = write(tmp_path, "cam1.yaml", "source: {backend: folder\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_cameras(tmp_path)


def test_parse_camera_when_id_differs_from_file_name() -> None:
    with pytest.raises(ConfigError, match="id 'other' differs from the file name; the camera id is 'cam1'"):
        parse_camera({"id": "other", "source": {"backend": "folder", "path": "x"}}, "cameras/cam1.yaml", "cam1")


def test_every_camera_field_has_a_description() -> None:
    from lineinspect.line.capture.config import cameras_json_schema

    schema = cameras_json_schema()
    missing = []
    for name, definition in [("CameraConfig", schema), *schema.get("$defs", {}).items()]:
        for prop, spec in definition.get("properties", {}).items():
            if "description" not in spec:
                missing.append(f"{name}.{prop}")
    assert not missing
