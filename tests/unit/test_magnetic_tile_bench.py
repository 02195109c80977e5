"""bench/magnetic_tile.py's --rotate refuses what it cannot measure, with a message, before teaching anything."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from bench import magnetic_tile


def _tiles(root: Path, per_batch: int) -> Path:
    """A magnetic-tile layout: per_batch good and Crack tiles (with masks) in each of exp0-exp2."""
    image = np.full((40, 40), 120, np.uint8)
    for batch in ("exp0", "exp1", "exp2"):
        for i in range(per_batch):
            for cls in ("MT_Free", "MT_Crack"):
                (root / cls / "Imgs").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / cls / "Imgs" / f"{batch}_num_{i}.jpg"), image)
                if cls != "MT_Free":
                    cv2.imwrite(str(root / cls / "Imgs" / f"{batch}_num_{i}.png"), np.zeros_like(image))
    return root


def test_rotate_takes_two_training_batches_or_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _tiles(tmp_path / "mt", 2)
    argv = ["--data", str(data), "--methods", "none", "--curve", "none", "--rotate", "--train-batches", "exp1"]
    assert magnetic_tile.main(argv) == 2
    assert "--rotate: --train-batches exp1 is one batch; it takes two or more" in capsys.readouterr().err


def test_rotate_says_when_no_batch_is_large_enough_to_measure_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tiles(tmp_path / "mt", magnetic_tile.FOLD_MIN_IMAGES - 1)
    argv = ["--data", str(data), "--methods", "none", "--curve", "none", "--rotate", "--work", str(tmp_path / "w")]
    assert magnetic_tile.main(argv) == 2
    captured = capsys.readouterr()
    assert f"exp1: {magnetic_tile.FOLD_MIN_IMAGES - 1} good and {magnetic_tile.FOLD_MIN_IMAGES - 1} defective" in (
        captured.out
    )
    assert "--rotate: no batch of ('exp0', 'exp1', 'exp2') holds 20 good and 20 defective tiles" in captured.err
    assert not (tmp_path / "w" / "rotation").exists()  # nothing was taught
