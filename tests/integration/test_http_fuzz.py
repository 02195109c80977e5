"""The HTTP API fuzzed against its own OpenAPI with schemathesis, every check (`--checks all`), bounded in
examples per operation; and the holes fuzzing found, each pinned by a test."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import hypothesis
import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.python import asgi as schemathesis_asgi

from lineinspect.assemble import build_http_app, build_inspector
from lineinspect.config import HttpSection, load_station
from lineinspect.http.routes.inspections import pixel_limit
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.results_store import ResultStore
from lineinspect.line.status import OfflineStatus
from tests.helpers.station_dir import encode, good_part, write_station

# Examples per operation: enough to reach every parameter and status, small enough for a 2-core CI box.
FUZZ_EXAMPLES = 12


def serve_app(station_dir: Path) -> tuple[FastAPI, ResultStore]:
    """The app as `lineinspect serve` wires it (uploads, results, status, metrics, dashboard, archive routes)."""
    config = load_station(station_dir)
    store = ResultStore(":memory:", retain_rows=1000)
    status = OfflineStatus(station_id="teststation", station_path=config.station.path)
    metrics = StationMetrics()
    app = build_http_app(
        build_inspector(station_dir, config),
        config,
        api_key=None,
        store=store,
        metrics=metrics,
        status=status,
        result_sinks=[store.add, metrics.observe_result, status.observe_result],
    )
    return app, store


@pytest.fixture(scope="module")
def station_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_station(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture
def served(station_dir: Path) -> Iterator[TestClient]:
    app, store = serve_app(station_dir)
    with TestClient(app) as client:  # the lifespan: the inspection pool exists while the test runs
        yield client
    store.close()


load_all_checks()
# Every check but "schema-valid data is accepted": OpenAPI can only say an upload is bytes, and any bytes are
# schema-valid, while the server rightly answers 415 for bytes that are no image. Refusals are held to their
# documented status codes by the other checks.
ALL_CHECKS = [CHECKS.get_one(name) for name in CHECKS.get_all_names() if name != "positive_data_acceptance"]


def test_the_api_keeps_to_its_openapi_under_fuzzing(served: TestClient) -> None:
    """`schemathesis run --checks all`, in process: every operation, FUZZ_EXAMPLES generated cases each."""
    api = schemathesis.openapi.from_asgi("/openapi.json", served.app)
    operations = [result.ok() for result in api.get_all_operations()]
    paths = {op.path for op in operations}
    # The archive's routes are in: an app served without an archive answers their documented 404.
    assert {"/v1/results/{result_id}/image", "/v1/results/{result_id}/reviews"} <= paths
    assert len(operations) >= 11

    try:
        run_every(operations)
    finally:
        # schemathesis keeps one event-loop portal thread for the process (closed at exit); close it now, as a
        # test that leaves a thread behind fails (it starts again on the next call).
        schemathesis_asgi._shutdown()


def run_every(operations: list) -> None:  # type: ignore[type-arg]
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,  # the same examples every run: a failure here is reproducible, not a flake
            database=None,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def keeps_to_its_openapi(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=ALL_CHECKS)

        keeps_to_its_openapi()


def test_a_sequence_beyond_sqlites_integers_is_refused_not_a_500(served: TestClient) -> None:
    response = served.get("/v1/results", params={"before_sequence": 2**63})
    assert response.status_code == 422, response.text
    assert served.get("/v1/results", params={"before_sequence": 2**63 - 1}).status_code == 200


@pytest.mark.parametrize("value", ["186", "0.5", "-3", "1e9"])
def test_a_number_is_not_taken_as_a_time(served: TestClient, value: str) -> None:
    for name in ("since", "until"):
        response = served.get("/v1/results", params={name: value})
        assert response.status_code == 422, (name, value, response.text)
        assert "ISO 8601" in response.json()["detail"]
    assert served.get("/v1/results", params={"since": "2024-05-01T06:00:00Z"}).status_code == 200


def test_an_annotated_answer_matches_the_openapi_schema(served: TestClient) -> None:
    response = served.post(
        "/v1/inspections", params={"annotate": "true"}, files={"file": ("p.png", encode(good_part()))}
    )
    assert response.status_code == 200
    schema = served.get("/openapi.json").json()["paths"]["/v1/inspections"]["post"]["responses"]["200"]
    Draft202012Validator(schema["content"]["application/json"]["schema"]).validate(response.json())
    assert set(response.json()) == {"result", "annotated_image"}


def test_the_openapi_states_the_limits_the_server_enforces(served: TestClient) -> None:
    operation = served.get("/openapi.json").json()["paths"]["/v1/inspections"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["maxProperties"] == 8 and "8 form fields" in body["description"]
    assert "GIF" in body["properties"]["file"]["description"] and "GIF" in operation["responses"]["415"]["description"]
    assert {"408", "413"} <= set(operation["responses"])


def _zero_width_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 0, 10, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_zero_width_png_is_named_plainly(served: TestClient) -> None:
    response = served.post("/v1/inspections", files={"file": ("zero.png", _zero_width_png())})
    assert response.status_code == 422
    assert response.json()["detail"] == "zero.png: the PNG has no pixels (0x10)"
    assert "BytesIO" not in response.text


def test_a_long_part_id_is_not_echoed_whole(served: TestClient) -> None:
    response = served.get("/v1/results", params={"part_id": "x" * 20_000})
    assert response.status_code == 422
    assert len(response.text) < 1000 and "20000 characters" in response.text


def test_the_pixel_budget_is_shared_by_the_workers(served: TestClient) -> None:
    assert pixel_limit(HttpSection(max_pixels=40_000_000, inference_workers=2)) == 24_000_000
    assert pixel_limit(HttpSection(max_pixels=1_000_000, inference_workers=2)) == 1_000_000
    assert pixel_limit(HttpSection(decode_budget_pixels=9_000_000, inference_workers=3)) == 3_000_000
    # A small file of many pixels (6300 x 6300, a few hundred kB) is refused before it is decoded.
    big = cv2.imencode(".png", np.zeros((6300, 6300), np.uint8))[1].tobytes()
    assert len(big) < 1_000_000
    response = served.post("/v1/inspections", files={"file": ("big.png", big)})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_many_pixels"


def test_the_api_docs_are_served_from_the_package(served: TestClient) -> None:
    page = served.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "/docs-assets/swagger-ui-bundle.js" in page.text
    script = served.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert served.get("/docs-assets/swagger-ui.css").status_code == 200


def test_check_exits_non_zero_on_implausible_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's uploads (1x1, 5x5 black, 5x5 noise, 4x7 white) and the plausibility set, through `check`."""
    from lineinspect.cli import main
    from tests.unit.test_plausibility import good_frame, implausible_frames

    root = Path(__file__).resolve().parents[2]
    made = {name: frame for name, (frame, _) in implausible_frames().items()}
    made["noise 5x5"] = np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    made["white 4x7"] = np.full((7, 4, 3), 255, np.uint8)
    for name, frame in made.items():
        assert cv2.imwrite(str(tmp_path / f"{name.replace(' ', '_')}.png"), frame)
    assert main(["check", "--quiet", str(tmp_path / "*.png"), "--station-dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"0 pass, 0 fail, {len(made)} undecided" in out and out.count("implausible frame:") == len(made)
    assert cv2.imwrite(str(tmp_path / "good.png"), good_frame())
    assert main(["check", "--quiet", str(tmp_path / "good.png"), "--station-dir", str(root)]) == 0
