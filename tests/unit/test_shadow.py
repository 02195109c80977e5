"""Shadow verdicts side by side (ShadowStore.report) and promote/rollback of a recipe's models in station.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineinspect.core.result import UndecidedKind, Verdict
from lineinspect.line.shadow import ShadowStore
from lineinspect.offline.promotion import PROMOTIONS_FILE, PromotionError, promote, rollback
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.line_results import T0, finding, line_result
from tests.helpers.station_dir import write_station


def test_the_report_counts_agreement_verdicts_classes_and_lists_the_disagreements(tmp_path: Path) -> None:
    store = ShadowStore(tmp_path / "shadow.sqlite")
    try:
        pairs = [
            (Verdict.PASS, Verdict.PASS, (), ()),
            (Verdict.FAIL, Verdict.FAIL, ("scratch",), ("scratch",)),
            (Verdict.FAIL, Verdict.PASS, ("dent",), ()),  # the shadow would let a dent through
            (Verdict.PASS, Verdict.FAIL, (), ("scratch",)),  # the shadow would reject a good part
        ]
        for n, (prod, shad, prod_classes, shad_classes) in enumerate(pairs):
            production = line_result(verdict=prod, defects=tuple(finding(c) for c in prod_classes), part_id=f"P{n}")
            shadow = line_result(verdict=shad, defects=tuple(finding(c) for c in shad_classes), recipe="bracket")
            store.add(production, shadow)
        report = store.report()
        assert report["parts"] == 4 and report["agreement"] == 0.5
        assert report["confusion"]["fail"] == {"pass": 1, "fail": 1, "undecided": 0}
        assert report["classes"] == {
            "dent": {"both": 0, "production_only": 1, "shadow_only": 0},
            "scratch": {"both": 1, "production_only": 0, "shadow_only": 1},
        }
        assert sorted(d["part_id"] for d in report["disagreements"]) == ["P2", "P3"]
        assert store.report(recipe="other")["parts"] == 0
        assert store.report(since=T0.replace(year=2030))["parts"] == 0
    finally:
        store.close()


def test_an_undecided_shadow_counts_as_a_disagreement(tmp_path: Path) -> None:
    store = ShadowStore(tmp_path / "shadow.sqlite")
    try:
        store.add(line_result(), line_result(verdict=Verdict.UNDECIDED, kind=UndecidedKind.INFERENCE, score=None))
        assert store.report()["confusion"]["pass"]["undecided"] == 1 and store.report()["agreement"] == 0.0
    finally:
        store.close()


STATION_YAML_COMMENT = "# the line's own note: keep me\n"


def station_with_shadow(tmp_path: Path) -> Path:
    station = write_station(tmp_path, recipes=[{"id": "part", "model": "bright", "shadow": "bright-v2"}])
    brightness_anomaly(station / "models" / "bright-v2", size=48)
    path = station / "station.yaml"
    path.write_text(STATION_YAML_COMMENT + path.read_text())
    return station


def test_promote_makes_the_shadow_production_keeping_the_files_comments_and_rollback_undoes_it(
    tmp_path: Path,
) -> None:
    station = station_with_shadow(tmp_path)
    done = promote(station, "bright-v2", "part")
    text = (station / "station.yaml").read_text()
    assert (done.model, done.previous_model) == ("bright-v2", "bright")
    assert text.startswith(STATION_YAML_COMMENT) and "model: bright-v2" in text and "shadow" not in text
    back = rollback(station, "part")
    text = (station / "station.yaml").read_text()
    assert (back.model, back.shadow) == ("bright", "bright-v2")
    assert "model: bright\n" in text and "shadow: bright-v2" in text
    actions = [json.loads(line)["action"] for line in (station / PROMOTIONS_FILE).read_text().splitlines()]
    assert actions == ["promote", "rollback"]
    with pytest.raises(PromotionError, match="no promotion to roll back"):
        rollback(station, "part")


@pytest.mark.parametrize(
    ("model", "recipe", "message"),
    [
        ("other", "part", "recipe 'part' has shadow 'bright-v2', not 'other'"),
        ("bright-v2", "nope", "no recipe 'nope'; recipes: ['part']"),
    ],
)
def test_a_promotion_that_does_not_fit_is_refused_and_station_yaml_is_unchanged(
    tmp_path: Path, model: str, recipe: str, message: str
) -> None:
    station = station_with_shadow(tmp_path)
    before = (station / "station.yaml").read_text()
    with pytest.raises(PromotionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        promote(station, model, recipe)
    assert (station / "station.yaml").read_text() == before
