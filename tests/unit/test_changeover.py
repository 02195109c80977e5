"""RecipeBook: changeover and reload rules, with real Inspectors over real ONNX graphs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from lineinspect.assemble import single_model_inspector
from lineinspect.core.inspector import Inspector
from lineinspect.errors import ModelError
from lineinspect.line.changeover import SETUPS_KEPT, Change, ChangeoverAudit, RecipeBook
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.recipes import OPTIONS, two_recipes


class Heard:
    def __init__(self) -> None:
        self.changes: list[tuple[Change, dict[str, str | None]]] = []

    def changeover(self, change: Change, active: Mapping[str, str | None]) -> None:
        self.changes.append((change, dict(active)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return brightness_anomaly(tmp_path_factory.mktemp("m") / "bright")


def test_a_changeover_applies_from_the_next_trigger_and_is_audited_and_announced(
    model_dir: Path, tmp_path: Path
) -> None:
    heard = Heard()
    audit = ChangeoverAudit(tmp_path / "changeover.jsonl")
    book = RecipeBook(two_recipes(model_dir), {"cam1": None, "cam2": "lenient"}, audit=audit, listener=heard)
    before = book.selection("cam1")
    change = book.select("cam1", "lenient", source="http")
    after = book.selection("cam1")
    book.close()
    assert (before.recipe_id, after.recipe_id) == ("strict", "lenient")
    assert change.ok and change.previous_recipe_id == "strict" and "from the next part" in change.message
    assert book.active() == {"cam1": "lenient", "cam2": "lenient"}
    assert heard.changes[0][1] == {"cam1": "lenient", "cam2": "lenient"}
    (line,) = (tmp_path / "changeover.jsonl").read_text().splitlines()
    assert json.loads(line) | {"at": None} == change.to_payload() | {"at": None}


@pytest.mark.parametrize(
    ("camera", "recipe", "message"),
    [
        ("cam1", "nope", "unknown recipe 'nope'; this station has ['lenient', 'strict']"),
        ("cam9", "strict", "no camera 'cam9'; this station has ['cam1']"),
    ],
)
def test_an_unknown_recipe_or_camera_is_refused_and_nothing_changes(
    model_dir: Path, camera: str, recipe: str, message: str
) -> None:
    heard = Heard()
    book = RecipeBook(two_recipes(model_dir), {"cam1": None}, listener=heard)
    change = book.select(camera, recipe, source="mqtt", request_id="r7")
    assert not change.ok and message in change.message and change.request_id == "r7"
    assert book.active() == {"cam1": "strict"}
    assert [c.ok for c, _ in heard.changes] == [False]  # refusals are announced too


def test_a_reload_swaps_in_new_models_while_parts_triggered_before_keep_theirs(model_dir: Path, tmp_path: Path) -> None:
    first = two_recipes(model_dir)
    newer_dir = brightness_anomaly(tmp_path / "bright", size=48)  # another graph: another sha256
    book = RecipeBook(first, {"cam1": None}, load=lambda: two_recipes(newer_dir))
    in_flight = book.selection("cam1")
    change = book.reload(source="sighup")
    assert change.ok and change.setup == 2
    assert book.inspector_for(in_flight) is first  # triggered before: inspected with the old setup
    fresh = book.inspector_for(book.selection("cam1"))
    assert fresh is not first
    assert change.models == {m: model.sha256 for m, model in fresh.models.items()}
    assert change.models != {m: model.sha256 for m, model in first.models.items()}


def test_a_reload_whose_model_does_not_load_is_refused_and_the_running_setup_stays(model_dir: Path) -> None:
    first = two_recipes(model_dir)

    def broken() -> Inspector:
        raise ModelError("models/bright/model.onnx: sha256 does not match the card (a copy was changed?)")

    book = RecipeBook(first, {"cam1": None}, load=broken)
    change = book.reload(source="http")
    assert not change.ok and "reload refused, the running recipes and models stay: models/bright" in change.message
    assert book.current is first and book.setup == 1


def test_a_reload_that_drops_a_running_recipe_is_refused(model_dir: Path) -> None:
    book = RecipeBook(
        two_recipes(model_dir), {"cam1": "lenient"}, load=lambda: single_model_inspector(model_dir, OPTIONS)
    )
    change = book.reload(source="mqtt")
    assert not change.ok and "cameras run recipes the new station.yaml lacks {'cam1': 'lenient'}" in change.message
    assert book.setup == 1 and book.active() == {"cam1": "lenient"}


def test_only_the_last_setups_are_kept_and_an_expired_one_falls_back_to_the_current(model_dir: Path) -> None:
    book = RecipeBook(two_recipes(model_dir), {"cam1": None}, load=lambda: two_recipes(model_dir))
    oldest = book.selection("cam1")
    for _ in range(SETUPS_KEPT + 1):
        assert book.reload(source="http").ok
    assert book.inspector_for(oldest) is book.current


def test_the_models_of_an_expired_setup_are_let_go(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote model's connections must not pile up over months of reloads: an expired setup's models are closed,
    and not before it expires."""
    closed: list[int] = []
    first = two_recipes(model_dir)
    for model in first.models.values():
        monkeypatch.setattr(model, "close", lambda m=model: closed.append(id(m)))
    setups = [first]

    def load() -> Inspector:
        setups.append(two_recipes(model_dir))
        return setups[-1]

    book = RecipeBook(first, {"cam1": None}, load=load)
    for _ in range(SETUPS_KEPT - 1):
        assert book.reload(source="http").ok
    assert closed == []  # setup 1 is still kept
    assert book.reload(source="http").ok
    assert closed == [id(m) for m in first.models.values()]
