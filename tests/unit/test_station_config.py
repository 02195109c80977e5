"""station.yaml: a wrong file fails at start-up naming the file, the field and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lineinspect.cli import main
from lineinspect.config import STATION_DIR_ENV, load_station, station_dir_from
from lineinspect.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"recipes": [{"id": "a", "model": "default"}]}


def write(tmp_path: Path, data: object) -> Path:
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return tmp_path


def test_repository_demo_station_yaml_is_valid() -> None:
    config = load_station(ROOT)
    assert config.default_recipe_id == config.recipes[0].id


def test_minimal_station_gets_defaults() -> None:
    config = load_station(write(Path(__import__("tempfile").mkdtemp()), MINIMAL))
    assert config.station.path == "acme/plant1/area1/line1/cell1/lineinspect/station1"
    assert config.http.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**MINIMAL, "stations": {}}, r"stations: Extra inputs are not permitted"),
        ({"recipes": []}, r"recipes: List should have at least 1 item"),
        ({"recipes": [{"id": "a"}]}, r"recipes.0.model: Field required"),
        ({**MINIMAL, "http": {"port": 70000}}, r"http.port: Input should be less than or equal to 65535 \(got 70000\)"),
        (
            {"recipes": [{"id": "a", "model": "m", "classes": {"*": {"min_score": 3}}}]},
            r"recipes.0.classes.\*.min_score: Input should be less than or equal to 1 \(got 3\)",
        ),
        ({**MINIMAL, "default_recipe": "b"}, r"default_recipe 'b' is not a recipe id; recipes: \['a'\]"),
        ({"recipes": [{"id": "a", "model": "m"}, {"id": "a", "model": "n"}]}, r"recipe ids must be unique"),
        ({**MINIMAL, "station": {"id": "has space"}}, r"station.id: String should match pattern"),
    ],
)
def test_bad_station_yaml_names_file_and_field(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_station(write(tmp_path, data))
    assert str(info.value).startswith(f"{tmp_path / 'station.yaml'}: invalid configuration")


def test_station_yaml_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_station(write(tmp_path, "recipes: [\n"))


def test_station_yaml_that_is_a_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_station(write(tmp_path, "- a\n- b\n"))


def test_missing_station_yaml_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"not found.*pass --station-dir or set {STATION_DIR_ENV}"):
        load_station(tmp_path)


def test_station_dir_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STATION_DIR_ENV, str(tmp_path))
    assert station_dir_from(None) == tmp_path.resolve()
    assert station_dir_from("/opt") == Path("/opt")


def test_schema_command_prints_station_json_schema_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    recipe = schema["$defs"]["Recipe"]["properties"]
    assert all("description" in field for field in recipe.values())


def test_every_station_field_has_a_description() -> None:
    from lineinspect.config import StationConfig

    schema = StationConfig.model_json_schema()
    missing = [
        f"{name}.{field}"
        for name, definition in [("StationConfig", schema), *schema.get("$defs", {}).items()]
        for field, spec in definition.get("properties", {}).items()
        if "description" not in spec
    ]
    assert not missing, f"fields without a description: {missing}"
