"""GET /v1/results, /v1/status, /metrics and the dashboard through the real app (real ONNX model for uploads).

The dashboard is also rendered by headless Chromium against a real uvicorn on a loopback port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lineinspect.assemble import build_inspector
from lineinspect.cli import main
from lineinspect.config import HttpSection, load_station
from lineinspect.core.inspector import Inspector
from lineinspect.core.result import UndecidedKind, Verdict
from lineinspect.http.app import create_app
from lineinspect.http.routes.dashboard import dashboard_router
from lineinspect.http.routes.metrics import metrics_router
from lineinspect.http.routes.results import results_router
from lineinspect.http.routes.status import status_router
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.results_store import ResultStore
from lineinspect.line.status import (
    MODE_LINE,
    CameraHealthStatus,
    HealthSample,
    OfflineStatus,
    OutboxStatus,
    RejectStatus,
    StationInfo,
    StationStatus,
)
from tests.helpers.chromium import needs_chromium, rendered_dom, serving
from tests.helpers.line_results import STATION_PATH, T0, finding, line_result
from tests.helpers.station_dir import bad_part, encode, good_part, write_station
from tests.integration.test_http_inspections import assert_error, assert_valid_result
from tests.integration.test_http_serve import read_line_with


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    station_dir = write_station(tmp_path_factory.mktemp("station"))
    return build_inspector(station_dir, load_station(station_dir))


@dataclass
class Observed:
    client: TestClient
    store: ResultStore
    metrics: StationMetrics
    status: OfflineStatus


@pytest.fixture
def observed(inspector: Inspector) -> Iterator[Observed]:
    """The app as `lineinspect serve` wires it."""
    store = ResultStore(":memory:", retain_rows=1000)
    status = OfflineStatus(station_id="teststation", station_path=STATION_PATH)
    metrics = StationMetrics()
    app = create_app(
        inspector,
        HttpSection(),
        station_path=STATION_PATH,
        routers=[results_router(store), status_router(status), metrics_router(metrics, status), dashboard_router()],
        result_sinks=[store.add, metrics.observe_result, status.observe_result],
    )
    with TestClient(app) as client:
        yield Observed(client, store, metrics, status)
    store.close()


def fill(store: ResultStore, start: datetime = T0) -> list[str]:
    """Six camera parts a minute apart from `start`; their ids.

    cam1: p0 pass, p2 fail, p4 undecided; cam2: p1, p3, p5 pass.
    """
    ids = []
    for n in range(6):
        camera = "cam1" if n % 2 == 0 else "cam2"
        verdict = {0: Verdict.PASS, 2: Verdict.FAIL, 4: Verdict.UNDECIDED}.get(n, Verdict.PASS)
        result = line_result(
            camera=camera,
            verdict=verdict,
            defects=(finding("scratch"),) if verdict is Verdict.FAIL else (),
            reason="skipped: camera lost: device removed" if verdict is Verdict.UNDECIDED else None,
            kind=UndecidedKind.CAMERA_LOST,
            decided_at=start + timedelta(minutes=n),
            sequence=n + 1,
            part_id=f"p{n}",
        )
        store.add(result)
        ids.append(result.result_id)
    return ids


def parts(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["part_id"] for r in response.json()["results"]]


def upload(client: TestClient, data: bytes, name: str = "part.png") -> dict[str, Any]:
    response = client.post("/v1/inspections", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


# --- /v1/results -----------------------------------------------------------------------------


def test_results_lists_newest_first_and_filters(observed: Observed) -> None:
    fill(observed.store)
    c = observed.client
    assert parts(c.get("/v1/results")) == ["p5", "p4", "p3", "p2", "p1", "p0"]
    assert parts(c.get("/v1/results", params={"camera": "cam1"})) == ["p4", "p2", "p0"]
    assert parts(c.get("/v1/results", params={"verdict": "fail,undecided"})) == ["p4", "p2"]
    assert parts(c.get("/v1/results", params=[("verdict", "pass"), ("verdict", "fail"), ("camera", "cam1")])) == [
        "p2",
        "p0",
    ]
    window = {"since": "2024-05-01T06:01:00Z", "until": "2024-05-01T08:03:00+02:00"}
    assert parts(c.get("/v1/results", params=window)) == ["p2", "p1"]


def test_results_pages_with_offset_and_next_offset(observed: Observed) -> None:
    fill(observed.store)
    first = observed.client.get("/v1/results", params={"limit": 4}).json()
    assert first["count"] == 4 and first["next_offset"] == 4
    second = observed.client.get("/v1/results", params={"limit": 4, "offset": first["next_offset"]}).json()
    assert [r["part_id"] for r in second["results"]] == ["p1", "p0"]
    assert second["next_offset"] is None
    by_sequence = observed.client.get("/v1/results", params={"before_sequence": 3})
    assert parts(by_sequence) == ["p1", "p0"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"verdict": "rejected"}, "query.verdict.0: String should match pattern"),
        ({"limit": "0"}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": "5000"}, "query.limit: Input should be less than or equal to 1000"),
        ({"limit": "ten"}, "query.limit: Input should be a valid integer"),
        ({"since": "yesterday"}, "query.since: Input should be a valid datetime"),
        ({"since": "2024-05-01T06:00:00"}, "query.since: 2024-05-01T06:00:00 has no time zone; add Z for UTC"),
        ({"source": "plc"}, "query.source: Input should be 'camera' or 'upload' (got 'plc')"),
        ({"offset": "-1"}, "query.offset: Input should be greater than or equal to 0"),
    ],
)
def test_results_refuses_bad_query_parameters_with_a_message(
    observed: Observed, params: dict[str, str], message: str
) -> None:
    assert_error(observed.client.get("/v1/results", params=params), 422, "invalid_request", message)


def test_result_by_id_and_404_for_an_unknown_id(observed: Observed) -> None:
    ids = fill(observed.store)
    found = observed.client.get(f"/v1/results/{ids[2]}")
    assert found.status_code == 200
    assert found.json()["part_id"] == "p2"
    assert_valid_result(found.json())
    assert_error(
        observed.client.get("/v1/results/0b7c0e36-0000-4000-8000-000000000000"),
        404,
        "unknown_result",
        "no result '0b7c0e36-0000-4000-8000-000000000000' is stored here",
    )


def test_summary_gives_yield_and_pareto_for_the_dashboard(observed: Observed) -> None:
    fill(observed.store)
    summary = observed.client.get("/v1/results/summary").json()
    assert summary["by_verdict"] == {"pass": 4, "fail": 1, "undecided": 1}
    assert summary["yield_pct"] == 66.67
    assert [(p["class"], p["parts"]) for p in summary["defect_pareto"]] == [("scratch", 1)]
    recent = observed.client.get("/v1/results/summary", params={"window_min": 60}).json()
    assert recent["total"] == 0  # the filled parts are from 2024
    assert recent["window_min"] == 60
    # Both: where they overlap (the last hour, within a range from 2024 on), not a refusal the OpenAPI cannot state.
    both = observed.client.get("/v1/results/summary", params={"window_min": 60, "since": "2024-05-01T06:00:00Z"})
    assert both.status_code == 200 and both.json()["total"] == 0


def test_uploads_reach_results_metrics_and_status_as_source_upload(observed: Observed) -> None:
    good = upload(observed.client, encode(good_part()), "good.png")
    bad = upload(observed.client, encode(bad_part()), "bad.png")
    listed = observed.client.get("/v1/results", params={"source": "upload"}).json()["results"]
    assert [r["result_id"] for r in listed] == [bad["result_id"], good["result_id"]]
    assert listed[0]["camera_id"] is None and listed[0]["image"]["source"] == "bad.png"
    assert listed[0]["station"] == STATION_PATH
    assert observed.client.get("/v1/results", params={"source": "camera"}).json()["count"] == 0

    status = observed.client.get("/v1/status").json()
    assert status["counts"] == {"pass": 1, "fail": 1, "undecided": 0, "skipped": 0, "late": 0, "outbox_refused": 0}
    assert status["station"]["path"] == STATION_PATH and status["station"]["state"] == "serving"
    assert status["cameras"] == [] and status["broker"] is None

    response = observed.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {
        (s.name, s.labels.get("verdict")): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "lineinspect_parts_total" and s.labels.get("source") == "upload"
    }
    assert values == {("lineinspect_parts_total", "pass"): 1, ("lineinspect_parts_total", "fail"): 1}


def test_status_serves_the_providers_typed_status(inspector: Inspector) -> None:
    status = StationStatus(
        station=StationInfo("s1", STATION_PATH, "running", MODE_LINE, T0),
        outbox=OutboxStatus(depth=0, alarm=False),
        counts={"pass": 3, "fail": 0, "undecided": 0, "skipped": 0, "late": 0, "outbox_refused": 0},
    )
    app = create_app(inspector, HttpSection(), routers=[status_router(lambda: status)])
    with TestClient(app) as client:
        served = client.get("/v1/status").json()
    assert served == status.to_payload()
    assert served["station"]["started_at"] == "2024-05-01T06:00:00Z"
    assert served["outbox"] == {"depth": 0, "alarm": False} and served["broker"] is None and served["alarms"] == []


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_is_served_and_needs_nothing_from_the_internet(observed: Observed) -> None:
    response = observed.client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Live verdicts" in response.text and "Defect Pareto" in response.text
    # No CDN, web font or remote script: the station has no internet. (The SVG namespace is a name, never fetched.)
    page = response.text.replace('"http://www.w3.org/2000/svg"', "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    root = observed.client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/dashboard"


@pytest.fixture
def served(observed: Observed) -> Iterator[str]:
    """The same app on a real uvicorn, 127.0.0.1, a free port, in a thread (stopped and joined after)."""
    with serving(observed.client.app) as url:  # type: ignore[arg-type]
        yield url


@needs_chromium
def test_dashboard_renders_the_stored_verdicts_in_a_real_browser(
    observed: Observed, served: str, tmp_path: Path
) -> None:
    fill(observed.store, datetime.now(UTC) - timedelta(minutes=10))  # inside the page's default window
    dom = rendered_dom(f"{served}/dashboard", tmp_path / "profile", expect="<tbody>")
    ticker = dom.split('id="ticker"', 1)[1].split("</table>", 1)[0]
    shown = re.findall(
        r'<tr data-result-id="[^"]+" data-verdict="(\w+)"><td>[^<]*</td><td>(\w+)</td><td>(\w+)</td>', ticker
    )
    assert [(part, camera, verdict) for verdict, camera, part in shown] == [
        ("p5", "cam2", "pass"),
        ("p4", "cam1", "undecided"),
        ("p3", "cam2", "pass"),
        ("p2", "cam1", "fail"),
        ("p1", "cam2", "pass"),
        ("p0", "cam1", "pass"),
    ]
    rejects = dom.split('id="rejects"', 1)[1].split("</table>", 1)[0]
    assert "skipped: camera lost: device removed" in rejects and ">scratch<" in rejects
    assert 'id="yield">66.7 %<' in dom
    banner = re.search(r'<div id="banner"[^>]*>([^<]*)</div>', dom)
    assert banner is not None and banner.group(1) == "", banner


def health_status(now: datetime) -> StationStatus:
    """A line with a dry-run reject station, cam1 drifting out of focus (a warning), cam2 seeing implausible frames."""
    samples = tuple(
        HealthSample(
            now - timedelta(seconds=30 - n),
            {"focus": 1200.0 - 15 * n, "mean_level": 100.0, "contrast": 40.0 + (n % 3), "noise": 2.0},
        )
        for n in range(30)
    )
    baseline = {"focus": 1200.0, "mean_level": 100.0, "contrast": 40.0, "noise": 2.0}
    drifting = CameraHealthStatus(
        camera_id="cam1",
        frames=30,
        implausible_total=0,
        implausible_in_row=0,
        implausible_alarm=False,
        drift_alarm=True,
        drift_warn_share=0.25,
        averages={"focus": 830.0, "mean_level": 100.0, "contrast": 41.0, "noise": 2.0},
        baseline=baseline,
        drift_shares={"focus": -0.3083, "mean_level": 0.0, "contrast": 0.025, "noise": 0.0},
        history=samples,
    )
    blind = replace(
        drifting,
        camera_id="cam2",
        implausible_total=4,
        implausible_in_row=4,
        implausible_alarm=True,
        drift_alarm=False,
        drift_shares={},
        history=samples[:5],
    )
    return StationStatus(
        station=StationInfo("s1", STATION_PATH, "running", MODE_LINE, now),
        outbox=OutboxStatus(depth=0, alarm=False),
        reject=RejectStatus({"fired": 3, "missed": 0, "late": 0, "errors": 0}, (), backend="dry_run", mode="timed"),
        counts={"pass": 3, "fail": 0, "undecided": 0, "skipped": 0, "late": 0, "outbox_refused": 0},
        camera_health=(drifting, blind),
    )


@needs_chromium
def test_dashboard_shows_camera_health_trends_and_a_dry_run_reject_in_a_real_browser(
    inspector: Inspector, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    status = health_status(now)
    store = ResultStore(":memory:", retain_rows=100)
    # A folder camera's part without a part id: the page names it by its file name, not the server's path.
    store.add(replace(line_result(decided_at=now), image_source="/srv/station/sample_images/good/part007.png"))
    app = create_app(
        inspector,
        HttpSection(),
        station_path=STATION_PATH,
        routers=[results_router(store), status_router(lambda: status), dashboard_router()],
    )
    try:
        with serving(app) as url:
            dom = rendered_dom(f"{url}/dashboard", tmp_path / "profile", expect="<tbody>")
    finally:
        store.close()
    ticker = dom.split('id="ticker"', 1)[1].split("</table>", 1)[0]
    assert "<td>part007.png</td>" in ticker and "/srv/station" not in ticker
    reject = re.search(r'<tr id="reject-health"><td>reject</td><td class="(\w+)">([^<]*)</td><td>([^<]*)</td>', dom)
    assert reject is not None and reject.groups()[:2] == ("warn", "dry run"), reject
    assert reject.group(3).startswith("switches nothing")

    section = dom.split('id="camera-health"', 1)[1]
    cam1, cam2 = section.split('data-camera="cam1"', 1)[1].split('data-camera="cam2"', 1)
    assert '<div class="cam state-warn"' in section and "warning: drifting from its taught baseline" in cam1
    focus = cam1.split('data-measure="focus"', 1)[1].split("</tr>", 1)[0]
    assert focus.startswith(' data-drift="warn"') and "drift -31 %" in focus
    points = re.search(r'<polyline points="([^"]+)" class="trend warn">', focus)
    assert points is not None and len(points.group(1).split()) == 30  # one point per sample in the history
    assert 'class="band"' in focus and 'class="baseline"' in focus  # the taught baseline and its ±25 % band
    contrast = cam1.split('data-measure="contrast"', 1)[1].split("</tr>", 1)[0]
    assert contrast.startswith(' data-drift="ok"') and "drift +3 %" in contrast
    assert '<div class="cam state-alarm"' in dom and "ALARM: 4 implausible frames in a row" in cam2


# --- lineinspect serve -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def start_serve(station_dir: Path, *extra: str) -> tuple[str, subprocess.Popen[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "inspect"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "lineinspect.cli", "serve", "--station-dir", str(station_dir), "--port", "0"]
    proc = subprocess.Popen([*command, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = read_line_with(proc, "serving on", 60)
    except BaseException:
        stop_serve(proc)
        raise
    return line.split("serving on ", 1)[1].split()[0], proc


def stop_serve(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def test_serve_keeps_upload_results_in_its_results_db_across_a_restart(tmp_path: Path) -> None:
    station_dir = write_station(tmp_path / "station")
    url, proc = start_serve(station_dir, "--results-db", "results.db")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            posted = client.post("/v1/inspections", files={"file": ("bad.png", encode(bad_part()))}).json()
            assert client.get("/v1/status").json()["counts"]["fail"] == 1
            assert 'lineinspect_parts_total{camera="",recipe="part",source="upload",verdict="fail"} 1.0' in (
                client.get("/metrics").text
            )
            assert client.get("/dashboard").status_code == 200
    finally:
        stop_serve(proc)
    assert proc.returncode == 0
    assert (station_dir / "results.db").is_file()

    url, proc = start_serve(station_dir, "--results-db", "results.db")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            listed = client.get("/v1/results").json()["results"]
            assert [r["result_id"] for r in listed] == [posted["result_id"]]
            assert client.get("/v1/status").json()["counts"]["fail"] == 0  # counts are since this start
    finally:
        stop_serve(proc)


def test_serve_exits_2_when_the_results_db_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station_dir = write_station(tmp_path / "station")
    (station_dir / "results").mkdir()
    assert main(["serve", "--station-dir", str(station_dir), "--port", "0", "--results-db", "results"]) == 2
    assert f"results store {station_dir / 'results'} is a folder; give a file path" in capsys.readouterr().err
