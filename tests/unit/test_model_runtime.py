"""The card's `runtime.onnxruntime_nchwc`: a filter-bank model runs without onnxruntime's NCHWc layout rewrite,
with the same outputs, and teach writes it on the cards of the filter-bank methods."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from lineinspect.core.model import NCHWC_OPTIMIZER, Model, RuntimeOptions, SplitSession
from lineinspect.core.modelcard import load_card
from lineinspect.core.preprocess import preprocess
from lineinspect.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "default"
OPTIONS = RuntimeOptions(intra_op_threads=1)


def _optimized_domains(onnx_path: Path, out: Path, disabled: list[str]) -> Counter[str]:
    """Node domains of the graph onnxruntime runs (its optimized copy, written to `out`)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(out)
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    return Counter(node.domain for node in onnx.load(str(out)).graph.node)


def test_the_optimizer_name_takes_the_nchwc_layout_out(tmp_path: Path) -> None:
    # onnxruntime ignores an optimizer name it does not know without a word; this one must take effect.
    with_it = _optimized_domains(DEFAULT_MODEL / "model.onnx", tmp_path / "with.onnx", [])
    if not with_it["com.microsoft.nchwc"]:
        pytest.skip("this CPU has no NCHWc kernels (onnxruntime lays nothing out in NCHWc here)")
    without = _optimized_domains(DEFAULT_MODEL / "model.onnx", tmp_path / "without.onnx", [NCHWC_OPTIMIZER])
    assert without["com.microsoft.nchwc"] == 0
    assert sum(without.values()) < sum(with_it.values())  # no layout reorders between the convolutions


def test_the_default_model_runs_without_nchwc_and_answers_as_with_it(tmp_path: Path) -> None:
    runtime = load_card(DEFAULT_MODEL).runtime
    assert runtime is not None and runtime.onnxruntime_nchwc is False and runtime.nchwc_after is None
    with_it = tmp_path / "with"
    shutil.copytree(DEFAULT_MODEL, with_it)
    card = yaml.safe_load((with_it / "model.yaml").read_text())
    card["runtime"] = {"onnxruntime_nchwc": True}
    (with_it / "model.yaml").write_text(yaml.safe_dump(card))
    without_model, with_model = Model.load(DEFAULT_MODEL, OPTIONS), Model.load(with_it, OPTIONS)
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    tensor, _ = preprocess(image, without_model.card.input)
    a, b = without_model.run(tensor), with_model.run(tensor)
    assert set(a) == {"anomaly_map", "pred_score"} == set(b)
    for name in a:
        assert np.allclose(a[name], b[name], rtol=1e-4, atol=1e-4), name


def test_a_card_with_a_wrong_nchwc_value_is_refused_with_its_name(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, model_dir)
    card = yaml.safe_load((model_dir / "model.yaml").read_text())
    card["runtime"] = {"onnxruntime_nchwc": "sometimes"}
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match=r"runtime\.onnxruntime_nchwc"):
        Model.load(model_dir, OPTIONS)


def _tensor(prefix: str) -> str:
    """The default model's tensor whose name starts with prefix (GraphParts numbers its names)."""
    graph = onnx.load(str(DEFAULT_MODEL / "model.onnx")).graph
    return next(out for node in graph.node for out in node.output if out.startswith(prefix))


def _with_runtime(tmp_path: Path, runtime: dict[str, object]) -> Path:
    model_dir = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, model_dir)
    card = yaml.safe_load((model_dir / "model.yaml").read_text())
    card["runtime"] = runtime
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card))
    return model_dir


def test_a_graph_cut_at_nchwc_after_runs_in_two_sessions_and_answers_as_one(tmp_path: Path) -> None:
    features = _tensor("features")
    split = Model.load(_with_runtime(tmp_path, {"onnxruntime_nchwc": False, "nchwc_after": features}), OPTIONS)
    whole = Model.load(DEFAULT_MODEL, OPTIONS)
    assert isinstance(split.session, SplitSession) and split.session.tensor == features
    assert isinstance(whole.session, ort.InferenceSession)
    # The first half ends at the tensor, the second starts there and makes every output.
    assert [o.name for o in split.session.head.get_outputs()] == [features]
    assert [i.name for i in split.session.tail.get_inputs()] == [features]
    assert split.output_names == whole.output_names and split.input_name == whole.input_name
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    tensor, _ = preprocess(image, whole.card.input)
    a, b = split.run(tensor), whole.run(tensor)
    for name in a:
        assert np.allclose(a[name], b[name], rtol=1e-4, atol=1e-4), name


def test_nchwc_after_naming_no_tensor_of_the_graph_is_refused_at_load(tmp_path: Path) -> None:
    model_dir = _with_runtime(tmp_path, {"onnxruntime_nchwc": False, "nchwc_after": "patch_feature"})
    with pytest.raises(ModelError, match=r"runtime\.nchwc_after 'patch_feature': no node of model\.onnx makes"):
        Model.load(model_dir, OPTIONS)


def test_nchwc_after_at_a_tensor_that_does_not_cut_the_graph_is_refused_at_load(tmp_path: Path) -> None:
    # The gray image feeds only part of the filter bank: the colour blur takes the input by another way.
    model_dir = _with_runtime(tmp_path, {"onnxruntime_nchwc": False, "nchwc_after": _tensor("gray")})
    message = r"runtime\.nchwc_after 'gray_\d+': does not cut model\.onnx in two: its outputs .* also use the input"
    with pytest.raises(ModelError, match=message):
        Model.load(model_dir, OPTIONS)


def test_nchwc_after_with_nchwc_on_is_a_card_error(tmp_path: Path) -> None:
    model_dir = _with_runtime(tmp_path, {"onnxruntime_nchwc": True, "nchwc_after": _tensor("features")})
    with pytest.raises(ModelError, match=r"nchwc_after 'features_\d+' only applies with onnxruntime_nchwc: false"):
        Model.load(model_dir, OPTIONS)
