"""The sample-part generator: reproducible, and its ground truth matches what it drew."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineinspect.cli import main
from lineinspect.offline.synthetic import DEFECT_CLASSES, render_part, sample_rng, write_sample_set

W, H = 320, 240


def test_render_part_is_the_same_for_the_same_seed_and_index() -> None:
    a = render_part(sample_rng(7, "defective", 3), W, H, ["crack"])
    b = render_part(sample_rng(7, "defective", 3), W, H, ["crack"])
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.defects == b.defects


def test_render_part_differs_between_seeds_like_real_parts_do() -> None:
    a = render_part(sample_rng(1, "good", 0), W, H)
    b = render_part(sample_rng(2, "good", 0), W, H)
    assert a.image.shape == (H, W, 3) and a.image.dtype == np.uint8
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 1.0


def test_good_part_has_no_defect_and_an_empty_mask() -> None:
    part = render_part(sample_rng(0, "good", 0), W, H)
    assert part.label == "good" and part.defects == [] and not part.mask.any()


@pytest.mark.parametrize("name", DEFECT_CLASSES)
def test_defect_mask_and_box_match_the_drawn_defect_when_class_is(name: str) -> None:
    dirty = render_part(sample_rng(3, "defective", 1), W, H, [name])
    assert [d.class_name for d in dirty.defects] == [name]
    (defect,) = dirty.defects
    x0, y0, x1, y1 = defect.box
    assert defect.area_px == int(dirty.mask.sum()) > 10
    assert dirty.mask[y0:y1, x0:x1].sum() == defect.area_px
    assert 0.0 < defect.severity <= 1.0
    # The defect shows: some of its pixels stand well out from the plate just around it.
    ring = cv2.dilate(dirty.mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~dirty.mask
    around = dirty.image[ring].astype(float).mean(axis=0)
    assert np.abs(dirty.image[dirty.mask].astype(float) - around).max() > 10


def test_write_sample_set_writes_images_masks_and_manifest(tmp_path: Path) -> None:
    manifest = write_sample_set(tmp_path, good=2, defective=4, seed=5, width=W, height=H)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["images"] == manifest["images"]
    assert on_disk["seed"] == 5 and on_disk["width"] == W
    labels = [e["label"] for e in on_disk["images"]]
    assert labels == ["good"] * 2 + ["defective"] * 4
    classes = set()
    for entry in on_disk["images"]:
        image = cv2.imread(str(tmp_path / entry["file"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (H, W, 3)
        if entry["label"] == "good":
            assert entry["mask"] is None and entry["defects"] == []
            continue
        mask = cv2.imread(str(tmp_path / entry["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
        for defect in entry["defects"]:
            x0, y0, x1, y1 = defect["box"]
            assert mask[y0:y1, x0:x1].any()
            classes.add(defect["class"])
        assert entry["classes"] == sorted({d["class"] for d in entry["defects"]})
    assert classes >= set(DEFECT_CLASSES)


def test_samples_cli_writes_the_requested_counts(tmp_path: Path) -> None:
    assert main(["samples", "--out", str(tmp_path), "--good", "1", "--defective", "1", "--size", "160x120"]) == 0
    assert len(list((tmp_path / "good").glob("*.png"))) == 1
    assert len(list((tmp_path / "masks").glob("*.png"))) == 1


def test_samples_cli_refuses_a_size_it_cannot_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["samples", "--out", str(tmp_path), "--size", "big"])
    assert "write it as WIDTHxHEIGHT" in capsys.readouterr().err
