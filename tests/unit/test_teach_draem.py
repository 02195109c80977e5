"""`lineinspect teach --method draem`: a seconds-long training run that exports a model the station loads.

Needs torch (the `train` extra); skipped where it is not installed, as in the
default test environment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.modelcard import load_card
from lineinspect.offline.synthetic import write_sample_set

pytest.importorskip("torch", reason="torch is not installed (pip install 'lineinspect[train]'); draem not tested")


def test_draem_teach_exports_an_anomaly_model_that_loads_and_scores(tmp_path: Path) -> None:
    write_sample_set(tmp_path / "s", good=10, defective=2, seed=5, width=160, height=128)
    out = tmp_path / "models" / "bracket"
    argv = ["teach", "--method", "draem", "--good", str(tmp_path / "s" / "good"), "--out", str(out),
            "--size", "128x128", "--epochs", "1", "--defects", str(tmp_path / "s" / "defective")]  # fmt: skip
    assert main(argv) == 0
    card = load_card(out)
    assert card.adapter == "anomaly" and card.input.color == "GRAY"
    assert card.trained["supervised"] is True and card.trained["pretrained_weights"] is None
    # The map is a probability: a threshold of 1 or more would never reject anything.
    assert card.anomaly is not None
    assert card.anomaly.image_threshold < 1.0 and card.anomaly.pixel_threshold < 1.0 + 1e-3
    assert card.anomaly.pixel_threshold >= card.anomaly.image_threshold
    model = Model.load(out, RuntimeOptions(intra_op_threads=1))
    output = model.infer(np.full((100, 140, 3), 128, np.uint8)).output
    assert 0.0 <= output.score <= 1.0
    assert output.defect_map is not None and output.defect_map.shape == (100, 140)


def test_stats_method_refuses_defects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sample_set(tmp_path / "s", good=8, defective=1, seed=5, width=96, height=64)
    argv = ["teach", "--method", "stats", "--good", str(tmp_path / "s" / "good"), "--out", str(tmp_path / "m"),
            "--defects", str(tmp_path / "s" / "defective")]  # fmt: skip
    assert main(argv) == 2
    assert "--defects: the stats method learns from good images only; add --method featnet" in capsys.readouterr().err
