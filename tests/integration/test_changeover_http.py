"""What a user who sends the changeover, reload and shadow endpoints something wrong is told (real app, real models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineinspect.cli import main
from lineinspect.config import HttpSection
from lineinspect.core.inspector import Inspector
from lineinspect.http.app import create_app
from lineinspect.http.routes.recipes import recipes_router
from lineinspect.http.routes.shadow import shadow_router
from lineinspect.line.changeover import RecipeBook
from lineinspect.line.shadow import ShadowStore
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.recipes import two_recipes


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    inspector: Inspector = two_recipes(brightness_anomaly(tmp_path / "bright"))
    book = RecipeBook(inspector, {"cam1": None})  # no loader: a reload is refused
    store = ShadowStore(tmp_path / "shadow.sqlite")
    app = create_app(inspector, HttpSection(), api_key="k3y", routers=[recipes_router(book), shadow_router(store)])
    try:
        with TestClient(app, headers={"X-API-Key": "k3y"}) as c:
            yield c
    finally:
        store.close()


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "says"),
    [
        ("put", "/v1/cameras/cam9/recipe", {"recipe": "strict"}, 404, "no camera 'cam9'; this station has ['cam1']"),
        ("put", "/v1/cameras/cam1/recipe", {"recipe": "nope"}, 409, "unknown recipe 'nope'"),
        ("put", "/v1/cameras/cam1/recipe", {}, 422, "recipe"),
        ("put", "/v1/cameras/cam1/recipe", {"recipe": "strict", "extra": 1}, 422, "extra"),
        ("post", "/v1/reload", None, 409, "this station cannot reload"),
        ("get", "/v1/shadow/report?since=2026-05-01T06:00:00", None, 422, "has no time zone"),
        ("get", "/v1/shadow/report?disagreements=5000", None, 422, "disagreements"),
    ],
)
def test_bad_requests_are_answered_with_what_is_wrong(
    client: TestClient, method: str, url: str, body: dict[str, Any] | None, status: int, says: str
) -> None:
    answer = client.request(method.upper(), url, json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_changeover_needs_the_api_key(client: TestClient) -> None:
    answer = client.put("/v1/cameras/cam1/recipe", json={"recipe": "lenient"}, headers={"X-API-Key": "wrong"})
    assert answer.status_code == 401
    assert client.get("/v1/recipes").json()["cameras"] == {"cam1": "strict"}


def test_shadow_report_without_a_store_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shadow", "report", "--station-dir", str(tmp_path)]) == 2
    assert "no shadow verdicts yet (name a `shadow:` model in a recipe and run the line)" in capsys.readouterr().err
