"""The committed default model on the committed samples, through the demo station's own recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lineinspect.assemble import build_inspector
from lineinspect.config import load_station
from lineinspect.core.decode import read_image_file
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import Verdict

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "sample_images" / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_inspector() -> Inspector:
    return build_inspector(ROOT, load_station(ROOT))


def test_sample_set_has_good_and_defective_parts_of_every_class() -> None:
    labels = [e["label"] for e in MANIFEST["images"]]
    assert labels.count("good") >= 5 and labels.count("defective") >= 5
    classes = {c for e in MANIFEST["images"] for c in e["classes"]}
    assert classes == set(MANIFEST["defect_classes"])


@pytest.mark.parametrize("entry", MANIFEST["images"], ids=[e["file"] for e in MANIFEST["images"]])
def test_default_model_judges_sample_like_its_ground_truth(demo_inspector: Inspector, entry: dict[str, Any]) -> None:
    image = read_image_file(str(ROOT / "sample_images" / entry["file"]))
    result = demo_inspector.inspect(Frame(image, source=entry["file"]), "bracket")
    expected = Verdict.PASS if entry["label"] == "good" else Verdict.FAIL
    assert result.verdict is expected, result.reason
    if expected is Verdict.FAIL:
        # The defect it reports lies on the true defect, not elsewhere on the part.
        truth = read_image_file(str(ROOT / "sample_images" / entry["mask"])) > 0
        boxes = [f.defect.box for f in result.findings if f.counts]
        assert any(truth[round(b.y0) : round(b.y1), round(b.x0) : round(b.x1)].any() for b in boxes)
