"""Remote inference against real KServe v2 servers on loopback through tritonclient.

The station keeps preprocessing, the adapter and the verdict; the server runs the card's model.onnx. Three
paths: HTTP with JSON tensors and gRPC (MLServer), and HTTP with KServe's binary data extension, a card's
default (the `kserve` package's own server; MLServer has no binary extension).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from lineinspect.assemble import REMOTE_ALARM_KIND, report_remote_outages
from lineinspect.core.frame import Frame
from lineinspect.core.inspector import Inspector
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe
from lineinspect.core.result import Result, UndecidedKind
from lineinspect.errors import ModelError
from lineinspect.line.events import StationEvents
from lineinspect.line.mqtt import StationTopics
from tests.helpers.graphs import brightness_anomaly
from tests.helpers.kserve_server import REMOTE_PATHS, KServeServer
from tests.helpers.mosquitto import Mosquitto, free_port
from tests.helpers.station_dir import bad_part, good_part
from tests.helpers.station_runtime import running_station, subscribed, write_line_station
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "sample_images").glob("*/*.png"))
# MLServer answers HTTP in JSON only (no binary extension): a 320x240 anomaly map each way takes a while.
TIMEOUT_MS = {"http": 5000.0, "grpc": 2000.0, "http-binary": 2000.0}
PROTOCOLS = ["http", "grpc"]
PATHS = REMOTE_PATHS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    brightness_anomaly(folder / "bright", size=64)
    brightness_anomaly(folder / "bright32", size=32)
    return folder


def served_files(models_dir: Path) -> dict[str, Path]:
    return {
        "default": ROOT / "models" / "default" / "model.onnx",
        "bright": models_dir / "bright" / "model.onnx",
        "bright32": models_dir / "bright32" / "model.onnx",
    }


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[KServeServer]:
    served = KServeServer(served_files(models_dir))
    try:
        served.start()
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def binary_server(models_dir: Path) -> Iterator[KServeServer]:
    served = KServeServer(served_files(models_dir), server="kserve")
    try:
        served.start()
        yield served
    finally:
        served.close()


def served_for(request: pytest.FixtureRequest, path: str) -> KServeServer:
    """The module's server of that path (its fixture, started once for the module)."""
    return request.getfixturevalue("binary_server" if PATHS[path][0] == "kserve" else "server")


def remote_copy(source: Path, dest: Path, path: str, url: str, model: str, **remote: Any) -> Path:
    """A copy of a model folder whose card sends its tensors to `url` along `path` (a key of PATHS; the station
    keeps model.onnx)."""
    _, protocol, binary = PATHS[path]
    shutil.copytree(source, dest)
    card = yaml.safe_load((dest / "model.yaml").read_text())
    settings = {"url": url, "model": model, "protocol": protocol, "timeout_ms": TIMEOUT_MS[path]}
    # http_binary is left out where it is true: the card's default is what a Triton user writes.
    card["runtime"] = {"remote": {**settings, **({} if binary else {"http_binary": False}), **remote}}
    (dest / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return dest


def load(model_dir: Path) -> Model:
    return Model.load(model_dir, RuntimeOptions(intra_op_threads=1, remote_budget_ms=10_000))


def inspector_of(model: Model) -> Inspector:
    recipe = Recipe(id="r1", model=model.id)
    return Inspector({model.id: model}, {recipe.id: recipe}, recipe.id)


class RecordingPublisher:
    """The MQTT side of the station's alarm table: what it would publish."""

    def __init__(self) -> None:
        self.topics = StationTopics("acme/s1/a1/l1/cell1/lineinspect/test")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: list[str] = []

    def publish_status(self, state: str, **fields: Any) -> None:
        self.states.append(state)

    def publish_event(self, topic: str, payload: dict[str, Any]) -> None:
        self.events.append((topic, payload))

    def publish_camera_status(self, camera_id: str, state: str, **fields: Any) -> None:
        pass

    def alarms(self) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == self.topics.alarm]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_remote_card_gives_the_local_verdicts_on_the_sample_images(
    request: pytest.FixtureRequest, tmp_path: Path, path: str
) -> None:
    served = served_for(request, path)
    protocol = PATHS[path][1]
    local = inspector_of(load(ROOT / "models" / "default"))
    model = load(remote_copy(ROOT / "models" / "default", tmp_path / "default", path, served.url(protocol), "default"))
    remote = inspector_of(model)
    binary_before = served.binary_requests() if served.server == "kserve" else 0
    inferred = 0  # frames the model ran on (an implausible one never reaches it)
    try:
        assert len(SAMPLES) >= 10
        verdicts = []
        for path in SAMPLES:
            frame = Frame(cv2.imread(str(path)), source=str(path))
            here, there = local.inspect(frame), remote.inspect(frame)
            assert there.verdict == here.verdict, f"{path.name}: {there.reason}"
            assert there.score == pytest.approx(here.score, abs=1e-4), path.name
            assert [f.defect.class_name for f in there.findings] == [f.defect.class_name for f in here.findings]
            verdicts.append(here.verdict)
            inferred += "infer" in there.timings_ms
        assert {"pass", "fail"} <= set(verdicts), verdicts
        if served.server == "kserve":  # every tensor went in the binary extension, none as JSON
            assert served.binary_requests() - binary_before == inferred > 10
    finally:
        model.close()


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_parts_are_undecided_with_one_alarm_while_the_server_is_away_and_decided_when_it_is_back(
    models_dir: Path, tmp_path: Path, path: str
) -> None:
    server, protocol, _ = PATHS[path]
    own = KServeServer({"bright": models_dir / "bright" / "model.onnx"}, server=server)
    try:
        own.start()
        model = load(remote_copy(models_dir / "bright", tmp_path / "bright", path, own.url(protocol), "bright"))
        inspector = inspector_of(model)
        publisher = RecordingPublisher()
        report_remote_outages(inspector, StationEvents(publisher))

        def part(good: bool = True) -> Result:
            return inspector.inspect(Frame(good_part() if good else bad_part(), camera_id="cam1"))

        assert part().verdict == "pass" and part(good=False).verdict == "fail"

        own.stop()  # the server dies mid-run
        away = [part(), part(good=False), part()]
        for result in away:
            assert result.verdict == "undecided"
            assert result.undecided_kind is UndecidedKind.INFERENCE
            assert f"inference server {protocol}://{own.url(protocol)} model 'bright'" in result.reason
        raised = [a for a in publisher.alarms() if a["active"]]
        assert len(raised) == 1, "one alarm per outage, not one per part"
        assert raised[0]["source"] == "remote.bright" and raised[0]["kind"] == REMOTE_ALARM_KIND
        assert own.url(protocol) in raised[0]["message"] and "'bright'" in raised[0]["message"]
        assert publisher.states[-1] == "alarm"

        own.start()  # back on the same ports: the station reconnects by itself
        wait_for(lambda: part().verdict == "pass", timeout_s=20, what="results from the server again")
        assert part(good=False).verdict == "fail"
        cleared = [a for a in publisher.alarms() if not a["active"]]
        assert len(cleared) == 1 and "answers again" in cleared[0]["message"]
        assert publisher.states[-1] == "online"
        stats = model.session.stats()  # type: ignore[attr-defined]
        assert stats.outages == 1 and stats.failed_calls >= 3
        model.close()
    finally:
        own.close()


def test_remote_card_is_refused_when_the_server_lacks_the_model(
    server: KServeServer, models_dir: Path, tmp_path: Path
) -> None:
    card = remote_copy(models_dir / "bright", tmp_path / "m", "grpc", server.url("grpc"), "brigth")
    with pytest.raises(ModelError, match=r"model 'brigth' is not ready .*the server has models \[.*'bright'.*\]"):
        load(card)


@pytest.mark.parametrize("path", PATHS)
def test_remote_card_is_refused_when_the_server_input_shape_differs(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path: Path, path: str
) -> None:
    served = served_for(request, path)
    # The server runs a 32x32 export under the name this 64x64 card names.
    card = remote_copy(models_dir / "bright", tmp_path / "m", path, served.url(PATHS[path][1]), "bright32")
    with pytest.raises(
        ModelError, match=r"model 'bright32' input '\w+' has shape \[\w+, 3, 32, 32\] but the card says NCHW 3x64x64"
    ):
        load(card)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_remote_card_is_refused_when_no_server_answers_at_start(
    models_dir: Path, tmp_path: Path, protocol: str
) -> None:
    url = f"127.0.0.1:{free_port()}"
    card = remote_copy(models_dir / "bright", tmp_path / "m", protocol, url, "bright", timeout_ms=500)
    with pytest.raises(ModelError, match=rf"{protocol}://{url} is not reachable .*start the inference server"):
        load(card)


@pytest.mark.slow
def test_a_running_station_rejects_unseen_parts_while_its_inference_server_is_away(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """As the MES sees it: results on MQTT are decided, then undecided with the server named while it is away
    (one alarm on <prefix>/alarm), then decided again once it is back, without restarting the station."""
    expected = write_line_station(tmp_path, mosquitto.port, parts="gb", recipes=[{"id": "part", "model": "remote"}])
    served = tmp_path / "models" / "bright"
    own = KServeServer({"bright": served / "model.onnx"})
    try:
        own.start()
        remote_copy(served, tmp_path / "models" / "remote", "grpc", own.url("grpc"), "bright")
        with subscribed(mosquitto.port) as mes, running_station(tmp_path) as station:

            def results() -> list[dict[str, Any]]:
                return [m.json() for m in mes.received("/result")]

            def part() -> dict[str, Any]:
                seen = len(results())
                station.trigger("cam1")
                mes.wait_until(lambda: len(results()) > seen, 10, "the part's result")
                return results()[-1]

            connected = lambda: station.status().to_payload()["cameras"][0]["state"] == "connected"  # noqa: E731
            wait_for(connected, 10, "camera connected")
            first = [part() for _ in expected]
            assert [r["verdict"] for r in first] == expected, [(r["verdict"], r["reason"], r["image"]) for r in first]
            own.stop()
            away = [part() for _ in expected]
            assert {r["verdict"] for r in away} == {"undecided"}
            assert {r["undecided_kind"] for r in away} == {"inference"}
            assert f"inference server grpc://{own.url('grpc')} model 'bright'" in away[0]["reason"]
            alarms = [m.json() for m in mes.received("/alarm")]
            assert [(a["source"], a["kind"], a["active"]) for a in alarms] == [
                ("remote.bright", REMOTE_ALARM_KIND, True)  # the card's model name
            ]
            own.start()
            back: list[str] = []
            wait_for(lambda: back.append(part()["verdict"]) or back[-1] != "undecided", 30, "decided parts again")
            mes.wait_until(lambda: any(not m.json()["active"] for m in mes.received("/alarm")), 10, "alarm cleared")
    finally:
        own.close()
