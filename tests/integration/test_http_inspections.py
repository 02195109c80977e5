"""POST /v1/inspections and the health endpoints, through the real app with real ONNX models."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from lineinspect.assemble import build_inspector
from lineinspect.config import HttpSection, load_station
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import Result, result_schema
from lineinspect.http.app import create_app
from tests.helpers.graphs import slow_brightness_anomaly
from tests.helpers.station_dir import bad_part, encode, good_part, write_station

STATION_PATH = "acme/s1/a1/l1/cell1/lineinspect/teststation"
RECIPES = [
    {"id": "part", "model": "bright"},
    {"id": "lenient", "model": "bright", "classes": {"*": {"min_area_px": 1000}}},
    {"id": "offset", "model": "bright", "roi": {"x": 500, "y": 500, "width": 10, "height": 10}},
]


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    station_dir = write_station(tmp_path_factory.mktemp("station"), recipes=RECIPES)
    return build_inspector(station_dir, load_station(station_dir))


@pytest.fixture(scope="module")
def slow_inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    station_dir = tmp_path_factory.mktemp("slow")
    slow_brightness_anomaly(station_dir / "models" / "slow", matmuls=30, side=1024)
    write_station(station_dir, recipes=[{"id": "part", "model": "slow"}])
    return build_inspector(station_dir, load_station(station_dir))


def client_for(inspector: Inspector, api_key: str | None = None, **settings: Any) -> TestClient:
    app = create_app(inspector, HttpSection(**settings), station_path=STATION_PATH, api_key=api_key)
    return TestClient(app)


@pytest.fixture
def client(inspector: Inspector) -> Iterator[TestClient]:
    with client_for(inspector) as c:
        yield c


def upload(client: TestClient, data: bytes, name: str = "part.png", *, params: Any = None, **kw: Any) -> Any:
    return client.post("/v1/inspections", files={"file": (name, data, "application/octet-stream")}, params=params, **kw)


def assert_valid_result(payload: dict[str, Any]) -> None:
    validator = Draft202012Validator(result_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(payload)]
    assert not errors, errors


def assert_error(response: Any, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]


# --- results ---------------------------------------------------------------------------------


def test_upload_returns_pass_result_when_part_is_good(client: TestClient) -> None:
    response = upload(client, encode(good_part()), "good.png")
    assert response.status_code == 200
    payload = response.json()
    assert_valid_result(payload)
    assert payload["verdict"] == "pass"
    assert payload["station"] == STATION_PATH
    assert payload["image"] == {"width": 96, "height": 64, "ref": None, "source": "good.png"}
    assert payload["recipe"] == {"id": "part", "version": "1"}
    assert payload["model"]["id"] == "bright"
    assert payload["timings_ms"]["decode"] >= 0
    assert payload["timings_ms"]["total"] >= payload["timings_ms"]["decode"]


def test_upload_returns_fail_with_defect_box_when_part_has_bright_spot(client: TestClient) -> None:
    response = upload(client, encode(bad_part(), ".jpg"), "bad.jpg")
    payload = response.json()
    assert_valid_result(payload)
    assert payload["verdict"] == "fail"
    assert payload["reason"].startswith("1 defect: anomaly")
    [defect] = payload["defects"]
    assert defect["counts"] is True
    assert defect["box_px"] == pytest.approx([40, 20, 56, 36], abs=2)


@pytest.mark.parametrize("where", ["query", "form"])
def test_upload_uses_named_recipe_when_recipe_given(client: TestClient, where: str) -> None:
    files = {"file": ("bad.png", encode(bad_part()), "image/png")}
    if where == "query":
        response = client.post("/v1/inspections", files=files, params={"recipe": "lenient"})
    else:
        response = client.post("/v1/inspections", files=files, data={"recipe": "lenient"})
    payload = response.json()
    assert payload["recipe"]["id"] == "lenient"
    assert payload["verdict"] == "pass"
    assert payload["reason"].startswith("1 defect below the size limits: area 256 px < 1000 px")


def test_upload_is_undecided_when_recipe_roi_lies_outside_image(client: TestClient) -> None:
    payload = upload(client, encode(good_part()), params={"recipe": "offset"}).json()
    assert_valid_result(payload)
    assert payload["verdict"] == "undecided"
    assert "lies outside the 96x64 image" in payload["reason"]


@pytest.mark.parametrize(("extension", "media_type"), [(".png", "image/png"), (".jpg", "image/jpeg")])
def test_annotate_returns_overlay_with_defect_drawn_when_asked(
    client: TestClient, extension: str, media_type: str
) -> None:
    response = upload(client, encode(bad_part(), extension), f"bad{extension}", params={"annotate": "true"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"result", "annotated_image"}
    assert_valid_result(body["result"])
    assert body["annotated_image"]["media_type"] == media_type
    raw = np.frombuffer(base64.b64decode(body["annotated_image"]["base64"]), np.uint8)
    overlay = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    assert overlay.shape == (64, 96, 3)
    # The defect's box edge (x 40, y 30) is drawn red where the part is dark grey.
    b, g, r = (int(v) for v in overlay[30, 40])
    assert r > 150 and g < 100 and b < 100


def test_results_go_to_sinks_and_extra_routers_are_served(inspector: Inspector) -> None:
    seen: list[Result] = []
    extra = APIRouter()

    @extra.get("/v1/extra")
    def extra_route() -> dict[str, str]:
        return {"hello": "there"}

    app = create_app(inspector, HttpSection(), station_path=STATION_PATH, routers=[extra], result_sinks=[seen.append])
    with TestClient(app) as c:
        payload = upload(c, encode(good_part())).json()
        assert c.get("/v1/extra").json() == {"hello": "there"}
    assert [r.result_id for r in seen] == [payload["result_id"]]
    assert seen[0].station == STATION_PATH


# --- bad uploads: status and message ------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = encode(bad_part(), ".jpg")
    return data[: len(data) - 100]


def _corrupt_png() -> bytes:
    data = encode(bad_part(), ".png")
    return data[:40] + bytes(200)


BAD_FILES = [
    ("empty", b"", 400, "empty", "x.png: the file is empty (0 bytes)"),
    ("text", b"hello, this is text", 415, "not_an_image", "x.png: not an image"),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", 415, "unsupported_format", "this is a PDF document"),
    ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00", 415, "unsupported_format", "a GIF"),
    ("truncated jpeg", _truncated_jpeg(), 422, "corrupt", "x.png: the JPEG data is truncated"),
    ("jpeg cut in its header", encode(bad_part(), ".jpg")[:300], 422, "corrupt", "JPEG header is corrupt"),
    ("corrupt png", _corrupt_png(), 422, "corrupt", "x.png:"),
]


@pytest.mark.parametrize(("case", "data", "status", "code", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_upload_is_refused_with_reason_when_file_is_bad(
    client: TestClient, case: str, data: bytes, status: int, code: str, message: str
) -> None:
    assert_error(upload(client, data, "x.png"), status, code, message)


def test_upload_is_413_when_image_has_too_many_pixels(inspector: Inspector) -> None:
    with client_for(inspector, max_pixels=5000) as c:
        response = upload(c, encode(good_part()), "big.png")
    assert_error(response, 413, "too_many_pixels", "big.png: 96x64", "over the limit of 0.0 MP")


def test_upload_is_413_before_reading_when_content_length_is_over_limit(inspector: Inspector) -> None:
    with client_for(inspector, max_upload_bytes=1000) as c:
        response = upload(c, b"\x89PNG\r\n\x1a\n" + bytes(200_000))
    assert_error(response, 413, "upload_too_large", "the upload is 200", "limit is 1000 bytes (http.max_upload_bytes)")


def test_upload_is_413_when_file_is_over_limit_inside_small_body(inspector: Inspector) -> None:
    with client_for(inspector, max_upload_bytes=1000) as c:
        response = upload(c, b"\x89PNG\r\n\x1a\n" + bytes(5000))
    assert_error(response, 413, "upload_too_large", "the file is 5008 bytes", "limit is 1000 bytes")


def test_upload_is_413_while_streaming_when_body_has_no_length(inspector: Inspector) -> None:
    boundary = "limitboundary"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()
        for _ in range(40):  # 40 × 4 KiB, well past 1000 + the multipart allowance
            yield bytes(4096)
        yield f"\r\n--{boundary}--\r\n".encode()

    with client_for(inspector, max_upload_bytes=1000) as c:
        response = c.post(
            "/v1/inspections",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert_error(response, 413, "upload_too_large", "the upload is over", "limit is 1000 bytes")


def test_upload_is_422_naming_the_field_when_file_field_is_missing(client: TestClient) -> None:
    response = client.post("/v1/inspections", files={"image": ("x.png", encode(good_part()), "image/png")})
    assert_error(response, 422, "invalid_request", "multipart field 'file' is missing", "fields sent: ['image']")


def test_upload_is_422_when_file_field_is_text(client: TestClient) -> None:
    response = client.post("/v1/inspections", files={"file": (None, "part.png")})
    assert_error(response, 422, "invalid_request", "field 'file' is text, not a file")


def test_upload_is_415_when_body_is_not_multipart(client: TestClient) -> None:
    response = client.post("/v1/inspections", content=encode(good_part()), headers={"Content-Type": "image/png"})
    assert_error(response, 415, "not_multipart", "multipart/form-data field 'file'", "got Content-Type 'image/png'")


def test_upload_is_400_when_multipart_body_is_malformed(client: TestClient) -> None:
    response = client.post("/v1/inspections", content=b"garbage", headers={"Content-Type": "multipart/form-data"})
    assert_error(response, 400, "bad_multipart", "cannot be read", "boundary")


@pytest.mark.parametrize("where", ["query", "form"])
def test_upload_is_404_listing_recipes_when_recipe_is_unknown(client: TestClient, where: str) -> None:
    files = {"file": ("x.png", encode(good_part()), "image/png")}
    if where == "query":
        response = client.post("/v1/inspections", files=files, params={"recipe": "nope"})
    else:
        response = client.post("/v1/inspections", files=files, data={"recipe": "nope"})
    assert_error(response, 404, "unknown_recipe", "unknown recipe 'nope'", "['lenient', 'offset', 'part']")


def test_upload_is_422_when_annotate_is_not_a_boolean(client: TestClient) -> None:
    response = upload(client, encode(good_part()), params={"annotate": "maybe"})
    assert_error(response, 422, "invalid_request", "query.annotate", "'maybe'")


# --- API key ------------------------------------------------------------------------------------


def test_upload_is_401_when_api_key_is_configured_and_missing(inspector: Inspector) -> None:
    with client_for(inspector, api_key="s3cret") as c:
        assert_error(
            upload(c, encode(good_part())), 401, "unauthorized", "needs the station's API key in the X-API-Key"
        )
        assert c.get("/healthz").status_code == 200  # reading needs no key


def test_upload_is_401_when_api_key_is_wrong(inspector: Inspector) -> None:
    with client_for(inspector, api_key="s3cret") as c:
        response = upload(c, encode(good_part()), headers={"X-API-Key": "guess"})
    assert_error(response, 401, "unauthorized", "does not match the station's API key")


def test_upload_is_accepted_when_api_key_matches(inspector: Inspector) -> None:
    with client_for(inspector, api_key="s3cret") as c:
        response = upload(c, encode(good_part()), headers={"X-API-Key": "s3cret"})
    assert response.status_code == 200
    assert response.json()["verdict"] == "pass"


# --- bounded pool and timeout -------------------------------------------------------------------


def test_upload_is_undecided_when_inspection_times_out_and_503_when_pool_is_full(slow_inspector: Inspector) -> None:
    with client_for(slow_inspector, inference_workers=1, max_waiting=0, inference_timeout_ms=20) as c:
        t0 = time.monotonic()
        first = upload(c, encode(good_part()), "slow.png")
        answered_s = time.monotonic() - t0
        # The timed-out inference still runs and holds the only worker.
        second = upload(c, encode(good_part()), "next.png")
        pool = c.app.state.services.pool  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while pool.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        third = upload(c, encode(good_part()), "later.png")
    assert first.status_code == 200
    payload = first.json()
    assert_valid_result(payload)
    assert payload["verdict"] == "undecided"
    assert payload["reason"] == "timed out: not inspected within 20 ms (http.inference_timeout_ms)"
    assert payload["image"]["source"] == "slow.png"
    assert answered_s < 5
    assert_error(second, 503, "busy", "1 uploads are being inspected and 0 are waiting", "retry in 1 s")
    assert second.headers["Retry-After"] == "1"
    assert third.status_code == 200  # the slot came back once the slow inference ended


# --- health, docs, unknown URLs -----------------------------------------------------------------


def test_health_and_readiness_when_app_is_running(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "station": STATION_PATH,
        "models": ["bright"],
        "recipes": ["lenient", "offset", "part"],
        "default_recipe": "part",
    }


def test_readyz_is_503_when_app_has_not_started(inspector: Inspector) -> None:
    c = client_for(inspector)  # not entered: no lifespan, so no inspection pool
    assert_error(c.get("/readyz"), 503, "not_ready", "not running")
    assert_error(upload(c, encode(good_part())), 503, "not_ready", "starting or stopping")


def test_openapi_documents_multipart_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/inspections"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    assert {"200", "401", "404", "413", "415", "422", "503"} <= set(operation["responses"])
    assert client.get("/docs").status_code == 200


def test_unknown_url_and_wrong_method_answer_json_errors(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found", "Not Found")
    assert_error(client.get("/v1/inspections"), 405, "method_not_allowed", "Method Not Allowed")
