"""The archive through the real app: uploads kept, frames and overlays served, look-up by part, reviews,
the export taught and evaluated, and the dashboard's gallery in headless Chromium."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from lineinspect.assemble import build_archive, build_http_app, build_inspector
from lineinspect.cli import main
from lineinspect.config import load_station
from lineinspect.core.clock import utc_now
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import Verdict
from lineinspect.line.archive.archive import ImageArchive
from lineinspect.line.archive.settings import ArchiveSettings
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.results_store import ResultStore
from lineinspect.line.status import OfflineStatus
from tests.helpers.chromium import needs_chromium, rendered_dom, serving
from tests.helpers.line_results import line_result
from tests.helpers.station_dir import bad_part, encode, good_part, write_station
from tests.integration.test_http_inspections import assert_error

API_KEY = "secret-key"
KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Inspector]:
    station_dir = write_station(tmp_path_factory.mktemp("station"))
    return station_dir, build_inspector(station_dir, load_station(station_dir))


@dataclass
class Served:
    client: TestClient
    archive: ImageArchive
    store: ResultStore
    folder: Path


def serve_app(station_dir: Path, inspector: Inspector, archive: ImageArchive | None, store: ResultStore) -> TestClient:
    config = load_station(station_dir)
    status = OfflineStatus(
        station_id="teststation", station_path=config.station.path, archive=archive.status if archive else None
    )
    metrics = StationMetrics()
    app = build_http_app(
        inspector,
        config,
        api_key=API_KEY,
        store=store,
        metrics=metrics,
        status=status,
        result_sinks=[store.add, metrics.observe_result, status.observe_result],
        archive=archive,
    )
    return TestClient(app)


@pytest.fixture
def served(station: tuple[Path, Inspector], tmp_path: Path) -> Iterator[Served]:
    station_dir, inspector = station
    settings = ArchiveSettings(folder=tmp_path / "archive", min_free_bytes=0, pass_first_count=0, pass_sample_every=0)
    archive = build_archive(station_dir, settings)
    store = ResultStore(":memory:", retain_rows=1000)
    with serve_app(station_dir, inspector, archive, store) as client:
        yield Served(client, archive, store, tmp_path / "archive")
    store.close()
    archive.close()


def upload(client: TestClient, image: np.ndarray, name: str = "part.png") -> dict[str, Any]:
    response = client.post("/v1/inspections", files={"file": (name, encode(image), "image/png")}, headers=KEY)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def png(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_a_rejected_upload_is_archived_and_served_with_and_without_its_overlay(served: Served) -> None:
    failed = upload(served.client, bad_part(), "bad.png")
    assert failed["verdict"] == "fail"
    assert failed["image"]["source"] == "bad.png" and failed["image"]["ref"].endswith(
        f"/upload/{failed['result_id']}.png"
    )
    served.archive.flush()
    assert (served.folder / failed["image"]["ref"]).is_file()
    frame = png(served.client.get(f"/v1/results/{failed['result_id']}/image"))
    assert np.array_equal(frame, bad_part())
    overlay = png(served.client.get(f"/v1/results/{failed['result_id']}/image", params={"overlay": "true"}))
    assert overlay.shape == bad_part().shape and not np.array_equal(overlay, bad_part())
    assert (overlay[:, :, 2] > 200).sum() > (bad_part()[:, :, 2] > 200).sum()  # red box drawn around the spot
    thumb = png(served.client.get(f"/v1/results/{failed['result_id']}/image", params={"max_width": 48}))
    assert thumb.shape[:2] == (32, 48)


def test_the_image_route_says_why_there_is_no_frame(served: Served, station: tuple[Path, Inspector]) -> None:
    passed = upload(served.client, good_part())
    assert passed["verdict"] == "pass" and passed["image"]["ref"] is None
    assert_error(
        served.client.get(f"/v1/results/{passed['result_id']}/image"),
        404,
        "image_not_kept",
        "sampled out: a passed part",
    )
    assert_error(served.client.get("/v1/results/nope/image"), 404, "image_not_kept", "no record of it")
    station_dir, inspector = station
    with ResultStore(":memory:") as store, serve_app(station_dir, inspector, None, store) as client:
        failed = upload(client, bad_part())
        assert failed["image"]["ref"] is None
        assert_error(
            client.get(f"/v1/results/{failed['result_id']}/image"),
            404,
            "archive_off",
            "there is no archive: section in its station.yaml",
        )


def test_a_part_is_found_by_its_part_id_or_result_id(served: Served) -> None:
    failed = upload(served.client, bad_part())
    by_result = served.client.get("/v1/results", params={"result_id": failed["result_id"]}).json()
    assert [r["result_id"] for r in by_result["results"]] == [failed["result_id"]]
    assert served.client.get("/v1/results", params={"part_id": "A123"}).json()["count"] == 0


def mask_of(image: np.ndarray) -> str:
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[20:36, 40:56] = 255
    return base64.b64encode(encode(mask)).decode("ascii")


def test_a_review_is_recorded_with_who_and_when_and_the_result_is_not_changed(served: Served) -> None:
    failed = upload(served.client, bad_part())
    rid = failed["result_id"]
    body = {"label": "confirmed_defect", "defect_class": "spot", "mask_png_base64": mask_of(bad_part()), "note": "burn"}
    response = served.client.post(f"/v1/results/{rid}/review", json=body, headers=KEY)
    assert response.status_code == 201, response.text
    review = response.json()
    assert review["label"] == "confirmed_defect" and review["has_mask"] and review["key_name"] == "LINEINSPECT_API_KEY"
    assert review["reviewed_at"].endswith("Z")
    second = served.client.post(f"/v1/results/{rid}/review", json={"label": "false_reject"}, headers=KEY)
    assert second.status_code == 201
    listed = served.client.get(f"/v1/results/{rid}/reviews").json()["reviews"]
    assert [r["label"] for r in listed] == ["confirmed_defect", "false_reject"]
    assert served.client.get(f"/v1/results/{rid}").json() == failed  # the result itself is never altered
    assert served.archive.status().counters["reviews"] == 2


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"label": "escape"}, 422, "invalid_request", "a fail part cannot be marked escape; use confirmed_defect or"),
        ({"label": "maybe"}, 422, "invalid_request", "body.label: Input should be 'confirmed_defect'"),
        ({"label": "confirmed_defect", "colour": "red"}, 422, "invalid_request", "body.colour: Extra inputs"),
        ({"label": "confirmed_defect", "box_px": [50, 10, 40, 20]}, 422, "invalid_request", "with x0 < x1"),
        ({"label": "confirmed_defect", "box_px": [0, 0, 500, 20]}, 422, "invalid_request", "outside the 96x64 px"),
        ({"label": "confirmed_defect", "mask_png_base64": "%%%"}, 422, "invalid_request", "not base64"),
        (
            {
                "label": "confirmed_defect",
                "mask_png_base64": base64.b64encode(encode(np.full((8, 8), 255, np.uint8))).decode(),
            },
            422,
            "invalid_request",
            "the mask is 8x8 px but the frame is 96x64 px",
        ),
        ({"label": "confirmed_defect", "defect_class": "a/b"}, 422, "invalid_request", "body.defect_class"),
    ],
)
def test_a_review_that_does_not_fit_the_part_is_refused_with_a_message(
    served: Served, body: dict[str, Any], status: int, code: str, message: str
) -> None:
    failed = upload(served.client, bad_part())
    response = served.client.post(f"/v1/results/{failed['result_id']}/review", json=body, headers=KEY)
    assert_error(response, status, code, message)


def test_a_review_needs_the_api_key_and_a_known_result(served: Served) -> None:
    failed = upload(served.client, bad_part())
    assert_error(
        served.client.post(f"/v1/results/{failed['result_id']}/review", json={"label": "false_reject"}),
        401,
        "unauthorized",
        "X-API-Key",
    )
    assert_error(
        served.client.post("/v1/results/unknown-id/review", json={"label": "false_reject"}, headers=KEY),
        404,
        "unknown_result",
        "no result 'unknown-id' is archived or stored here",
    )


def test_status_and_metrics_show_the_archive(served: Served) -> None:
    upload(served.client, bad_part())
    served.archive.flush()
    archive = served.client.get("/v1/status").json()["archive"]
    assert archive["state"] == "ok" and archive["frames"] == 1 and archive["used_bytes"] > 0
    metrics = served.client.get("/metrics").text
    assert "lineinspect_archive_kept_frames_total 1.0" in metrics
    assert 'lineinspect_archive_state{state="ok"} 1.0' in metrics
    assert "lineinspect_archive_skipped_busy_frames_total 0.0" in metrics


# --- the loop: line → archive → review → export → teach / evaluate ---------------------------------


def varied_good(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return np.clip(good_part().astype(np.int16) + rng.integers(-6, 7, good_part().shape), 0, 255).astype(np.uint8)


def test_an_export_of_reviewed_parts_is_taught_and_evaluated(served: Served, tmp_path: Path) -> None:
    served.archive.rule.pass_sample_every = 1  # keep every pass for this test
    for i in range(12):
        upload(served.client, varied_good(i), f"good{i}.png")
    defects = [upload(served.client, bad_part(), f"bad{i}.png") for i in range(4)]
    false_reject = upload(served.client, bad_part(), "false.png")
    unreviewed = upload(served.client, bad_part(), "open.png")
    for d in defects:
        body = {"label": "confirmed_defect", "defect_class": "spot", "mask_png_base64": mask_of(bad_part())}
        assert served.client.post(f"/v1/results/{d['result_id']}/review", json=body, headers=KEY).status_code == 201
    assert (
        served.client.post(
            f"/v1/results/{false_reject['result_id']}/review", json={"label": "false_reject"}, headers=KEY
        ).status_code
        == 201
    )
    served.archive.flush()
    out = tmp_path / "export"
    assert main(["archive", "export", "--folder", str(served.folder), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"good": 13, "defects": {"spot": 4}, "masks": 4}
    ids = {p["result_id"]: p for p in manifest["parts"]}
    assert unreviewed["result_id"] not in ids  # an unreviewed fail is left out unless asked
    assert ids[false_reject["result_id"]]["class"] == "good"
    assert ids[defects[0]["result_id"]]["reviews"][0]["label"] == "confirmed_defect"
    assert manifest["model_sha256"] == [defects[0]["model"]["sha256"]]
    mask = cv2.imread(str(out / ids[defects[0]["result_id"]]["mask_file"]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (64, 96) and mask[25, 45] == 255 and mask[5, 5] == 0

    model = tmp_path / "models" / "line"
    argv = ["teach", "--method", "stats", "--good", str(out / "good"), "--out", str(model), "--size", "96x64",
            "--holdout", "0.3"]  # fmt: skip
    assert main(argv) == 0
    report = tmp_path / "evaluation"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--good",
                str(out / "good"),
                "--defects",
                str(out / "defects"),
                "--out",
                str(report),
                "-q",
            ]
        )
        == 0
    )
    # The exported set reads as it is: every part of it judged, the defects by their reviewed class.
    evaluation = json.loads((report / "report.json").read_text())
    assert "spot" in json.dumps(evaluation) and (report / "worst.png").is_file()

    wider = tmp_path / "wider"
    assert main(["archive", "export", "--folder", str(served.folder), "--out", str(wider), "--unreviewed-fails"]) == 0
    assert json.loads((wider / "manifest.json").read_text())["counts"]["defects"] == {"spot": 4, "anomaly": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday': not an ISO 8601 time"),
        (["--since", "2024-05-01T06:00:00"], "no time zone; add Z for UTC"),
        (["--since", "2024-05-02T00:00:00Z", "--until", "2024-05-01T00:00:00Z"], "must be before --until"),
    ],
)
def test_archive_export_refuses_bad_options_with_a_message(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["archive", "export", "--folder", str(served.folder), "--out", str(tmp_path / "x"), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_archive_export_refuses_a_folder_without_an_archive_or_a_full_out_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], served: Served
) -> None:
    assert main(["archive", "export", "--folder", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no image archive here (index.sqlite not found)" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("x")
    assert main(["archive", "export", "--folder", str(served.folder), "--out", str(tmp_path / "full")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_a_16_bit_frame_is_kept_and_served_at_16_bit(served: Served) -> None:
    image = np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) * 10
    result = line_result(verdict=Verdict.FAIL, decided_at=utc_now())
    frame = Frame(image=np.zeros((64, 96), np.uint8), camera_id="cam1")
    object.__setattr__(frame, "image", image)  # a 16-bit camera; Frame itself holds 8-bit today
    assert served.archive.keep(result, frame) is not None
    served.archive.flush()
    served_image = png(served.client.get(f"/v1/results/{result.result_id}/image"))
    assert served_image.dtype == np.uint16 and np.array_equal(served_image, image)
    png(served.client.get(f"/v1/results/{result.result_id}/image", params={"overlay": "true"}))


# --- the dashboard in a real browser ---------------------------------------------------------------


@pytest.fixture
def uvicorn_url(served: Served) -> Iterator[str]:
    with serving(served.client.app) as url:  # type: ignore[arg-type]
        yield url


@needs_chromium
def test_the_dashboard_shows_rejects_with_pictures_and_finds_a_part_by_id(
    served: Served, uvicorn_url: str, tmp_path: Path
) -> None:
    failed = upload(served.client, bad_part(), "bad.png")
    served.archive.flush()
    url = f"{uvicorn_url}/dashboard#find={failed['result_id']}"
    dom = rendered_dom(url, tmp_path / "profile", expect='id="gallery"')
    gallery = dom.split('id="gallery"', 1)[1].split("</section>", 1)[0]
    thumb = f'src="/v1/results/{failed["result_id"]}/image?overlay=true&amp;max_width=160"'
    assert thumb in gallery
    part = dom.split('id="part"', 1)[1].split("</section>", 1)[0]
    assert 'class="wide open" id="part"' in dom  # the part page opened itself from #find=
    assert "1 part(s) found for " + failed["result_id"] in part
    assert f'src="/v1/results/{failed["result_id"]}/image?overlay=true"' in part  # the full image
    assert 'id="overlay-toggle"' in part and 'data-label="confirmed_defect"' in part
    assert "<td>anomaly</td>" in part  # the defects table
    served_image = served.client.get(f"/v1/results/{failed['result_id']}/image", params={"overlay": "true"})
    assert served_image.status_code == 200
