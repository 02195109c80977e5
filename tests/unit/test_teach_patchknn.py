"""`lineinspect teach --method patchknn`: passes shifted good parts, fails defective ones."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.core.decode import read_image_file
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import MODEL_FILE, ModelCard, file_sha256, load_card
from lineinspect.offline.synthetic import write_sample_set
from lineinspect.teach.common import TeachOptions
from lineinspect.teach.good_folder import find_good_images
from lineinspect.teach.patchknn import PatchOptions, greedy_coreset, teach_patchknn

W, H = 160, 120


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard, Path]:
    """(model folder, its card, a held-out sample folder) — taught once for this module."""
    root = tmp_path_factory.mktemp("patchknn")
    write_sample_set(root / "train", good=40, defective=0, seed=21, width=W, height=H)
    write_sample_set(root / "held_out", good=4, defective=4, seed=22, width=W, height=H)
    # Position counts little here: the test moves good parts about and they must still pass.
    teach = TeachOptions(name="bracket", width=W, height=H, progress=False)
    options = PatchOptions(teach=teach, bank_size=1024, position_weight=0.25)
    card = teach_patchknn(find_good_images(root / "train" / "good", minimum=8), root / "model", options)
    return root / "model", card, root / "held_out"


def _score(model: Model, image: np.ndarray) -> float:
    output = model.infer(image).output
    assert output.score is not None
    return float(output.score)


def test_patchknn_model_loads_and_its_card_checks_out(taught: tuple[Path, ModelCard, Path]) -> None:
    model_dir, card, _ = taught
    model = Model.load(model_dir, RuntimeOptions(intra_op_threads=1))
    assert load_card(model_dir) == card
    assert card.sha256 == file_sha256(model_dir / MODEL_FILE)
    assert card.adapter == "anomaly" and card.anomaly is not None and card.input.color == "GRAY"
    assert card.anomaly.score_min < card.anomaly.image_threshold < card.anomaly.score_max
    assert card.trained["pretrained_weights"] is None and card.trained["bank_size"] <= 1024
    assert set(model.output_names) == {"anomaly_map", "pred_score"}
    inference = model.infer(read_image_file(str(taught[2] / "good" / "good_000.png")))
    assert inference.output.defect_map is not None and inference.output.defect_map.shape[:2] == (H, W)


def test_patchknn_passes_shifted_good_parts_and_fails_defective_ones(taught: tuple[Path, ModelCard, Path]) -> None:
    model_dir, _, held_out = taught
    threshold = 0.5  # the card's image threshold on the adapter's 0–1 scale
    model = Model.load(model_dir, RuntimeOptions(intra_op_threads=1))
    good = [read_image_file(str(p)) for p in sorted((held_out / "good").glob("*.png"))]
    moved = []
    for image in good:
        # Moved along the belt by 8 px and across it by 4 px (never seen there in teaching):
        # no per-location statistics, so it still passes. Turned parts are not covered: the
        # features tell lines by their direction (grinding marks vs cracks on tiles).
        for shift in ((8.0, 0.0), (8.0, 4.0)):
            move = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
            moved.append(cv2.warpAffine(image, move, (W, H), borderMode=cv2.BORDER_REPLICATE))
    good_scores = [_score(model, image) for image in good + moved]
    defective_scores = [_score(model, read_image_file(str(p))) for p in sorted((held_out / "defective").glob("*.png"))]
    assert max(good_scores) < threshold, (good_scores, threshold)
    assert min(defective_scores) >= threshold, (defective_scores, threshold)


def test_greedy_coreset_keeps_far_points() -> None:
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(500, 3)).astype(np.float32)
    far = np.array([[40.0, 0.0, 0.0]], np.float32)
    bank = greedy_coreset(np.concatenate([cloud, far]), 8, rng)
    assert bank.shape == (8, 3) and (bank == far).all(axis=1).any()


def test_teach_cli_takes_method_patchknn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=96, height=64)
    out = tmp_path / "models" / "tiny"
    args = ["teach", "--good", str(tmp_path / "s" / "good"), "--out", str(out), "--size", "64x48"]
    assert main([*args, "--method", "patchknn"]) == 0
    assert load_card(out).trained["method"].startswith("patch nearest neighbour")
    assert "model 'tiny' written" in capsys.readouterr().out


def test_teach_cli_refuses_defects_for_patchknn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=0, seed=3, width=96, height=64)
    args = ["teach", "--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m"), "--method", "patchknn"]
    assert main([*args, "--defects", str(tmp_path)]) == 2
    assert "the patchknn method learns from good images only" in capsys.readouterr().err


def test_patchknn_graph_scores_the_ignored_border_band_zero() -> None:
    from lineinspect.core.modelcard import InputSpec
    from lineinspect.teach.common import open_session, run_model
    from lineinspect.teach.patchknn import FEATURE_COUNT, patchknn_graph

    spec = InputSpec(width=64, height=48, color="GRAY", layout="NCHW", resize="stretch")
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(32, FEATURE_COUNT)).astype(np.float32)
    model = patchknn_graph(spec, np.zeros(FEATURE_COUNT), np.ones(FEATURE_COUNT), bank, ignore_border_px=8)
    maps, scores = run_model(open_session(model, threads=1), rng.random((2, 1, 48, 64), dtype=np.float32))
    assert maps.shape == (2, 48, 64) and (maps[:, :4] == 0).all() and (maps[:, :, -4:] == 0).all()
    assert (maps[:, 20:28, 24:40] > 0).all() and np.allclose(scores, maps.reshape(2, -1).max(axis=1), rtol=0.05)
