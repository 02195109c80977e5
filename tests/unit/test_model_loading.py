"""Model folders that cannot be used fail at load with a message naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.errors import ModelError
from tests.helpers.graphs import brightness_anomaly

OPTIONS = RuntimeOptions(intra_op_threads=1)


def _edit_card(model_dir: Path, **changes: object) -> None:
    card_path = model_dir / "model.yaml"
    card = yaml.safe_load(card_path.read_text())
    card.update(changes)
    card_path.write_text(yaml.safe_dump(card))


def test_model_loads_and_warms_up_when_card_matches(tmp_path: Path) -> None:
    model = Model.load(brightness_anomaly(tmp_path / "ok"), OPTIONS)
    assert model.id == "ok" and len(model.sha256) == 64


def test_model_is_refused_when_file_changed_after_card_was_written(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    with (model_dir / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"model.onnx: sha256 is [0-9a-f]{64} but .*model.yaml says"):
        Model.load(model_dir, OPTIONS)


def test_model_is_refused_when_card_is_missing(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    (model_dir / "model.yaml").unlink()
    with pytest.raises(ModelError, match="model card not found"):
        Model.load(model_dir, OPTIONS)


def test_model_is_refused_when_onnx_file_is_missing(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx: model file not found"):
        Model.load(model_dir, OPTIONS)


def test_model_is_refused_when_card_is_not_yaml(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    (model_dir / "model.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ModelError, match=r"model\.yaml: not valid YAML"):
        Model.load(model_dir, OPTIONS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"adapter": "detector"}, r"adapter: Input should be 'anomaly', 'segmentation', 'yolo' or 'classification'"),
        ({"colour": "RGB"}, r"colour: Extra inputs are not permitted"),
        ({"anomaly": None}, r"an anomaly model card needs an 'anomaly' section"),
        ({"input": {"width": 64, "height": 64, "std": [0.0]}}, r"input.std must not contain 0"),
        ({"input": {"width": 64, "height": 64, "mean": [0.1, 0.2]}}, r"input.mean has 2 values; the input has 3"),
    ],
)
def test_model_card_error_names_the_field_when_card_is_wrong(tmp_path: Path, changes: dict, message: str) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    _edit_card(model_dir, **changes)
    with pytest.raises(ModelError, match=message) as info:
        Model.load(model_dir, OPTIONS)
    assert "model.yaml: invalid model card" in str(info.value)


def test_model_is_refused_when_card_size_differs_from_model_input(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m", size=64)
    _edit_card(model_dir, input={"width": 32, "height": 32})
    with pytest.raises(ModelError, match=r"input has shape \[1, 3, 64, 64\] but the card says NCHW 3x32x32"):
        Model.load(model_dir, OPTIONS)


def test_model_is_refused_when_onnx_file_is_garbage(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    (model_dir / "model.onnx").write_bytes(b"this is not a protobuf")
    from lineinspect.core.modelcard import file_sha256

    _edit_card(model_dir, sha256=file_sha256(model_dir / "model.onnx"))
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        Model.load(model_dir, OPTIONS)


def test_missing_execution_provider_falls_back_to_cpu_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = RuntimeOptions(providers=("TensorrtExecutionProvider", "CPUExecutionProvider"), intra_op_threads=1)
    model = Model.load(brightness_anomaly(tmp_path / "m"), options)
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider" in caplog.text and "not installed" in caplog.text


def test_remote_card_is_refused_when_its_url_has_a_scheme(tmp_path: Path) -> None:
    model_dir = brightness_anomaly(tmp_path / "m")
    _edit_card(model_dir, runtime={"remote": {"url": "http://10.0.4.20:8000", "model": "m", "protocol": "http"}})
    with pytest.raises(ModelError, match=r"runtime.remote.url: .*not host:port; write e.g. 10.0.4.20:8001"):
        Model.load(model_dir, OPTIONS)
