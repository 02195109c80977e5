"""`lineinspect quantize` and `teach --quantize int8`: an int8 copy of a model that the station loads and that
judges the sample parts as the float model does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lineinspect.cli import main
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import MODEL_FILE, CardRuntime, file_sha256, load_card, write_card
from lineinspect.core.preprocess import preprocess
from lineinspect.offline.datasets import LabelledImage, find_defects, find_good, read_labelled
from lineinspect.offline.evaluate import evaluate
from lineinspect.offline.quantize import QuantizeOptions, quantize_model
from lineinspect.offline.synthetic import write_sample_set
from tests.helpers.graphs import save_model

SIZE_PX = 64
CHANNELS = 8


def dense_brightness_anomaly(model_dir: Path, *, opset_entries: int = 1) -> Path:
    """Anomaly = local brightness through three convolutions (3→8 3x3, 8→8 3x3, 8→1 1x1), each averaging.

    The 8-channel layers are the dense ones `quantize` makes int8; the 3-channel input layer stays float.
    opset_entries: how often the default domain is listed (graphs merged by onnx.compose list it twice).
    """
    rng = np.random.default_rng(0)

    def weights(name: str, out_ch: int, in_ch: int, k: int) -> onnx.TensorProto:
        w = np.full((out_ch, in_ch, k, k), 1.0 / (in_ch * k * k), np.float32)
        w *= 1.0 + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, w.shape, w.ravel().tolist())

    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["anomaly_map"], name="conv3"),
        helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], name="score", axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "dense_brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE_PX, SIZE_PX])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, SIZE_PX, SIZE_PX]),
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=[
            weights("w1", CHANNELS, 3, 3),
            weights("w2", CHANNELS, CHANNELS, 3),
            weights("w3", 1, CHANNELS, 1),
        ],
    )
    card = {
        "name": model_dir.name,
        "adapter": "anomaly",
        "input": {"width": SIZE_PX, "height": SIZE_PX, "color": "RGB"},
        "anomaly": {"image_threshold": 0.6, "pixel_threshold": 0.6, "score_min": 0.2, "score_max": 1.0},
    }
    save_model(graph, model_dir, card)
    if opset_entries > 1:
        model = onnx.load(str(model_dir / MODEL_FILE))
        model.opset_import.extend([helper.make_opsetid("", 17)] * (opset_entries - 1))
        onnx.save(model, str(model_dir / MODEL_FILE))
        write_card(load_card(model_dir).model_copy(update={"sha256": file_sha256(model_dir / MODEL_FILE)}), model_dir)
    return model_dir


def _plates(folder: Path, count: int, *, blob: bool, seed: int) -> None:
    """Gray plates with sensor noise (good), or with one bright blob (defective, mask in masks/)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        level = int(rng.integers(70, 110))
        image = np.clip(level + rng.normal(0, 6, (128, 128, 3)), 0, 255).astype(np.uint8)
        if blob:
            mask = np.zeros((128, 128), np.uint8)
            centre = (int(rng.integers(30, 98)), int(rng.integers(30, 98)))
            cv2.circle(mask, centre, int(rng.integers(10, 16)), 255, -1)
            image[mask > 0] = 240
            (folder.parent / "masks").mkdir(exist_ok=True)
            assert cv2.imwrite(str(folder.parent / "masks" / f"{folder.name}_{i:03d}.png"), mask)
        assert cv2.imwrite(str(folder / f"{folder.name}_{i:03d}.png"), image)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station folder: models/bright (float), calibration/ (good plates), parts/good and parts/defective."""
    root = tmp_path_factory.mktemp("quantize")
    dense_brightness_anomaly(root / "models" / "bright")
    _plates(root / "calibration", 24, blob=False, seed=1)
    _plates(root / "parts" / "good", 12, blob=False, seed=2)
    _plates(root / "parts" / "defective", 12, blob=True, seed=3)
    return root


@pytest.fixture(scope="module")
def int8(station: Path) -> Path:
    out = station / "models" / "bright-int8"
    quantize_model(station / "models" / "bright", station / "calibration", out, QuantizeOptions(images=16))
    return out


def test_int8_model_loads_through_the_station_loader_and_its_card_names_the_float_model(
    station: Path, int8: Path
) -> None:
    float_card = load_card(station / "models" / "bright")
    card = load_card(int8)
    model = Model.load(int8, RuntimeOptions(intra_op_threads=1))  # checks the sha256 and runs a warm-up
    assert model.id == "bright-int8"
    assert card.sha256 == file_sha256(int8 / MODEL_FILE) != float_card.sha256
    assert card.quantized is not None
    assert card.quantized.format == "int8-qdq"
    assert card.quantized.from_model == "bright"
    assert card.quantized.from_sha256 == float_card.sha256
    assert card.quantized.calibration_images == 16
    assert card.anomaly == float_card.anomaly and card.input == float_card.input
    ops = [node.op_type for node in onnx.load(str(int8 / MODEL_FILE)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_int8_model_judges_the_sample_parts_as_the_float_model_does(station: Path, int8: Path) -> None:
    parts = find_good(station / "parts" / "good") + find_defects(station / "parts" / "defective")
    judged = {}
    for folder in (station / "models" / "bright", int8):
        evaluation = evaluate(Model.load(folder, RuntimeOptions(intra_op_threads=1)), parts)
        judged[folder.name] = [row.rejected for row in evaluation.rows]
    assert judged["bright"] == [item.defective for item in parts]  # the float model gets every part right
    assert judged["bright-int8"] == judged["bright"]


def test_int8_kernels_give_what_the_reference_qdq_arithmetic_gives(station: Path, int8: Path) -> None:
    # onnxruntime fuses QuantizeLinear/DequantizeLinear pairs into int8 kernels (extended optimisation); with
    # optimisation off it runs the same graph in float arithmetic. On an x86 CPU with AVX2 but no VNNI, 8-bit
    # weights saturated the fused kernel's 16-bit pair sums: a bright blob scored 0.46 against 0.74 unfused
    # (and 0.89 in the float model), and the int8 copy passed the part. 7-bit weights cannot saturate.
    model_file = str(int8 / MODEL_FILE)
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"]))
    spec = load_card(int8).input
    for item in find_defects(station / "parts" / "defective"):
        tensor = preprocess(read_labelled(item)[0], spec)[0]
        reference, fused = (session.run(["pred_score"], {"input": tensor})[0] for session in sessions)
        np.testing.assert_allclose(fused, reference, atol=0.01)


def test_quantize_cli_writes_the_int8_model_beside_the_float_one(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense_brightness_anomaly(tmp_path / "models" / "plate")
    argv = ["quantize", "--model", "plate", "--station-dir", str(tmp_path), "--calibration",
            str(station / "calibration"), "--images", "5"]  # fmt: skip
    assert main(argv) == 0
    card = load_card(tmp_path / "models" / "plate-int8")
    assert card.name == "plate-int8" and card.quantized is not None and card.quantized.calibration_images == 5
    assert "agree on 5/5 verdicts" in capsys.readouterr().out


def test_a_model_whose_graph_lists_its_opset_twice_is_quantized(station: Path, tmp_path: Path) -> None:
    # teach --method featnet merges two graphs with onnx.compose, which lists the default domain twice.
    source = dense_brightness_anomaly(tmp_path / "twice", opset_entries=2)
    quantized = quantize_model(source, station / "calibration", tmp_path / "twice-int8", QuantizeOptions(images=4))
    assert Model.load(quantized.out_dir, RuntimeOptions(intra_op_threads=1)).card.quantized is not None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("calibration folder missing", "--calibration {root}/nowhere: folder not found"),
        ("calibration folder without images", "--calibration {root}/empty: no images in it"),
        ("model not found", "--model missing: neither a model folder nor"),
        ("output folder exists", "--out {root}/models/bright-int8: the folder exists"),
    ],
)
def test_quantize_says_what_is_wrong_and_leaves_nothing_behind(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    root = tmp_path
    dense_brightness_anomaly(root / "models" / "bright")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("shift 2")
    calibration = {"calibration folder missing": root / "nowhere", "calibration folder without images": root / "empty"}
    if case == "output folder exists":
        (root / "models" / "bright-int8").mkdir()
    argv = ["quantize", "--model", "missing" if case == "model not found" else "bright", "--station-dir", str(root),
            "--calibration", str(calibration.get(case, station / "calibration"))]  # fmt: skip
    before = sorted(p.name for p in (root / "models").iterdir())
    assert main(argv) == 2
    assert message.format(root=root) in capsys.readouterr().err
    assert sorted(p.name for p in (root / "models").iterdir()) == before


def test_teach_quantize_int8_on_a_stats_model_keeps_the_float_model_and_says_why_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sample_set(tmp_path / "s", good=10, defective=0, seed=3, width=160, height=120)
    out = tmp_path / "models" / "tiny"
    argv = ["teach", "--method", "stats", "--good", str(tmp_path / "s" / "good"), "--out", str(out),
            "--size", "64x48", "--quantize", "int8"]  # fmt: skip
    assert main(argv) == 2
    assert load_card(out).name == "tiny"
    assert "no layer of this model gains from int8" in capsys.readouterr().err
    assert not (tmp_path / "models" / "tiny-int8").exists()


def test_teach_featnet_quantize_int8_writes_an_int8_copy_that_judges_the_samples_as_the_float_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    write_sample_set(tmp_path / "teach", good=16, defective=0, seed=3, width=192, height=144)
    write_sample_set(tmp_path / "parts", good=8, defective=8, seed=4, width=192, height=144)
    out = tmp_path / "models" / "net"
    argv = ["teach", "--method", "featnet", "--good", str(tmp_path / "teach" / "good"), "--out", str(out),
            "--size", "128x96", "--steps", "40", "--quantize", "int8"]  # fmt: skip
    assert main(argv) == 0
    assert "int8 model 'net-int8' written" in capsys.readouterr().out
    card = load_card(tmp_path / "models" / "net-int8")
    assert card.quantized is not None and card.quantized.from_sha256 == load_card(out).sha256
    assert card.quantized.calibration_images == 16
    # The float network runs in a session of its own (NCHWc layout), the int8 copy in one session without it.
    float_runtime = load_card(out).runtime
    assert float_runtime is not None and not float_runtime.onnxruntime_nchwc and float_runtime.nchwc_after
    assert card.runtime == CardRuntime(onnxruntime_nchwc=False)
    parts = find_good(tmp_path / "parts" / "good") + find_defects(tmp_path / "parts" / "defective")
    models = [
        Model.load(folder, RuntimeOptions(intra_op_threads=1)) for folder in (out, tmp_path / "models" / "net-int8")
    ]
    raw = [[_raw_score_and_map_peak(model, item) for item in parts] for model in models]
    judged = [[row.rejected for row in evaluate(model, parts).rows] for model in models]
    # A 40-step network separates the samples barely, so int8's rounding may flip a part the float model judges
    # within a hair of a threshold; every other part must be judged alike, and no score move far.
    anomaly = load_card(out).anomaly
    assert anomaly is not None and anomaly.score_max is not None and anomaly.score_min is not None
    # A tenth of the span of the held-back good parts' scores, at least 0.03 logits (measured: at most 0.016).
    tolerance = max(0.1 * (anomaly.score_max - anomaly.score_min), 0.03)
    assert np.abs(np.array(raw[1]) - np.array(raw[0])).max() <= tolerance
    for (score, peak), float_verdict, int8_verdict in zip(raw[0], judged[0], judged[1], strict=True):
        if abs(score - anomaly.image_threshold) > tolerance and abs(peak - anomaly.pixel_threshold) > tolerance:
            assert int8_verdict == float_verdict


def _raw_score_and_map_peak(model: Model, item: LabelledImage) -> tuple[float, float]:
    """(image score, anomaly map's largest value), both in the card's raw units."""
    output = model.infer(read_labelled(item)[0]).output
    assert output.raw_score is not None and output.raw_map is not None
    return output.raw_score, float(output.raw_map.max())


def test_teach_quantize_int8_refuses_before_teaching_when_the_int8_folder_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=160, height=120)
    (tmp_path / "m-int8").mkdir()
    argv = ["teach", "--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m"), "--quantize", "int8"]
    assert main(argv) == 2
    assert "m-int8: the folder exists" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
