"""Turns a station directory's configuration into ready objects.

The CLI and the HTTP app factory call these; nothing else builds models or
Inspectors, so there is one place where objects are wired together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lineinspect.config import RuntimeSection, StationConfig
from lineinspect.core.calibration import load_calibrations, warn_small_limits
from lineinspect.core.inspector import Inspector, PlaneCalibration
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe
from lineinspect.errors import ConfigError, ModelError
from lineinspect.line.broker import BrokerError, EmbeddedBroker
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.config import CAMERAS_DIR, CameraConfig, load_cameras
from lineinspect.line.capture.supervisor import CameraStatus, CameraSupervisor, SkippedPart
from lineinspect.line.mqtt import MqttSettings, ResultPublisher, StationTopics
from lineinspect.line.outbox import Outbox
from lineinspect.line.reject.alarms import Alarm
from lineinspect.line.reject.tracker import RejectTracker
from lineinspect.line.reject.wiring import build_reject_tracker
from lineinspect.line.station import (
    PartCounts,
    PartWorker,
    RejectFeed,
    ResultFanout,
    ResultSink,
    SkippedSink,
    Station,
)

log = logging.getLogger(__name__)

MODELS_DIR = "models"


def runtime_options(section: RuntimeSection) -> RuntimeOptions:
    return RuntimeOptions(
        providers=tuple(section.providers),
        intra_op_threads=section.intra_op_threads,
        inter_op_threads=section.inter_op_threads,
        allow_spinning=section.allow_spinning,
    )


def model_dir(station_dir: Path, name_or_path: str) -> Path:
    """A recipe's `model`: a folder name under models/, or a path to a model folder."""
    candidate = Path(name_or_path)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate if candidate.is_absolute() else station_dir / candidate
    return station_dir / MODELS_DIR / name_or_path


def model_option(station_dir: Path, value: str) -> Path:
    """A command's `--model`: an existing folder as given, else a model name under the station's models/."""
    given = Path(value)
    folder = given if given.is_dir() else model_dir(station_dir, value)
    if not folder.is_dir():
        raise ModelError(
            f"--model {value}: neither a model folder nor {folder}; "
            "give a folder holding model.onnx and model.yaml, or a model name under the station's models/"
        )
    return folder


def load_models(station_dir: Path, recipes: list[Recipe], options: RuntimeOptions) -> dict[str, Model]:
    """Load each model the recipes use, once."""
    models: dict[str, Model] = {}
    for recipe in recipes:
        if recipe.model in models:
            continue
        path = model_dir(station_dir, recipe.model)
        if not path.is_dir():
            raise ModelError(
                f"recipe '{recipe.id}': model folder {path} not found "
                f"(models live in {station_dir / MODELS_DIR}/<name>/ with model.onnx and model.yaml)"
            )
        models[recipe.model] = Model.load(path, options)
    return models


def build_inspector(
    station_dir: Path,
    config: StationConfig,
    calibrations: Mapping[str, PlaneCalibration] | None = None,
) -> Inspector:
    """calibrations None: those of the cameras in cameras/*.yaml, with a warning for mm limits under 3 px."""
    if calibrations is None:
        loaded = load_calibrations(station_dir, [c.id for c in load_cameras(station_dir)])
        warn_small_limits(config.recipes, loaded)
        calibrations = loaded
    models = load_models(station_dir, config.recipes, runtime_options(config.runtime))
    recipes = {r.id: r for r in config.recipes}
    return Inspector(models, recipes, config.default_recipe_id, calibrations)


def single_model_inspector(path: Path, options: RuntimeOptions, recipe: Recipe | None = None) -> Inspector:
    """An Inspector for one model folder with a default recipe (for `check --model`)."""
    model = Model.load(path, options)
    recipe = recipe or Recipe(id=f"{model.id}-default", model=model.id)
    return Inspector({model.id: model}, {recipe.id: recipe.model_copy(update={"model": model.id})}, recipe.id)


def start_demo_broker(preferred_port: int = 1883) -> EmbeddedBroker:
    """The embedded loopback broker for a station without `mqtt:`; on 1883 when free, else any free port."""
    broker = EmbeddedBroker(port=preferred_port)
    try:
        broker.start()
        return broker
    except BrokerError as exc:
        log.info("embedded MQTT broker: port %d not available (%s); using a free port", preferred_port, exc)
    broker = EmbeddedBroker(port=0)
    broker.start()
    return broker


def _reject_camera(config: StationConfig, cameras: list[CameraConfig]) -> CameraConfig | None:
    """The camera whose parts pass the ejector: the one naming a reject_output, or the only camera."""
    feeding = [c for c in cameras if c.reject_output is not None] or (cameras if len(cameras) == 1 else [])
    if len(feeding) > 1:
        raise ConfigError(
            f"reject: cameras {[c.id for c in feeding]} all feed the reject station; this version tracks the parts "
            "of one camera. Set reject_output on one camera definition only"
        )
    if not feeding and cameras:
        raise ConfigError(
            f"reject: with several cameras ({[c.id for c in cameras]}) set reject_output in the definition of the "
            "camera whose parts pass the ejector"
        )
    return feeding[0] if feeding else None


def build_station(
    station_dir: Path,
    config: StationConfig,
    *,
    inspector: Inspector | None = None,
    result_sinks: Sequence[ResultSink] = (),
    skipped_sinks: Sequence[SkippedSink] = (),
) -> Station:
    """Everything `lineinspect run` runs, built but not started (`Station.start()`; `stop()` undoes it all).

    With no `mqtt:` section the embedded demo broker is started here (stopped by `Station.stop()`).
    """
    cameras = load_cameras(station_dir)
    inspector = inspector or build_inspector(station_dir, config)
    for cam in cameras:
        if cam.recipe is not None and cam.recipe not in inspector.recipes:
            raise ConfigError(
                f"{station_dir / CAMERAS_DIR / (cam.id + '.yaml')}: recipe '{cam.recipe}' is not in station.yaml; "
                f"recipes: {sorted(inspector.recipes)}"
            )
    broker: EmbeddedBroker | None = None
    settings = config.mqtt
    outbox: Outbox | None = None
    tracker: RejectTracker | None = None
    try:
        if settings is None:
            broker = start_demo_broker()
            settings = MqttSettings(port=broker.port)
        outbox_path = settings.outbox_file
        if not outbox_path.is_absolute():
            outbox_path = station_dir / outbox_path
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(outbox_path, max_rows=settings.outbox_max_rows)
        publisher = ResultPublisher(
            settings,
            outbox,
            StationTopics(config.station.path),
            client_id=settings.client_id or f"lineinspect-{config.station.id}",
            password=settings.password(os.environ),
            station_dir=station_dir,
        )
        counts = PartCounts()
        reject: RejectFeed | None = None
        alarm_target: list[Station] = []  # the station exists only after its parts; hooks reach it through this

        def on_reject_alarm(alarm: Alarm) -> None:
            if alarm_target:
                alarm_target[0].on_reject_alarm(alarm)

        def on_alarm(kind: str, message: str) -> None:
            if alarm_target:
                alarm_target[0].on_alarm(kind, message)

        if config.reject is not None:
            feeding = _reject_camera(config, cameras)
            if feeding is None:
                log.warning("reject: section present but the station has no camera; nothing will be rejected")
            else:
                tracker = build_reject_tracker(
                    config.reject,
                    station_dir,
                    on_alarm=on_reject_alarm,
                    publish=lambda event: publisher.publish_event(publisher.topics.reject_event, event),
                )
                reject = RejectFeed(
                    tracker, feeding.id, announce_at_trigger=feeding.trigger_mode is TriggerMode.SOFTWARE
                )
        fanout = ResultFanout(
            publisher,
            station_path=config.station.path,
            counts=counts,
            sinks=result_sinks,
            reject=reject,
            on_alarm=on_alarm,
        )
        status_target: list[Station] = []
        supervisors = []
        workers = []
        for cam in cameras:
            worker_ref: list[PartWorker] = []

            def on_skipped(part: SkippedPart, ref: list[PartWorker] = worker_ref) -> None:
                ref[0].on_skipped(part)

            def on_status(status: CameraStatus) -> None:
                if status_target:
                    status_target[0].on_camera_status(status)

            sup = CameraSupervisor.from_config(cam, on_skipped=on_skipped, on_status=on_status)
            worker = PartWorker(
                sup,
                inspector,
                fanout,
                recipe_id=cam.recipe,
                budget_ms=config.budget_ms,
                threads=config.line.inspection_threads,
                pending_parts_max=config.line.pending_parts_max,
                reject=reject,
                skipped_sinks=skipped_sinks,
            )
            worker_ref.append(worker)
            supervisors.append(sup)
            workers.append(worker)
        station = Station(
            station_id=config.station.id,
            station_path=config.station.path,
            publisher=publisher,
            outbox=outbox,
            supervisors=supervisors,
            workers=workers,
            fanout=fanout,
            reject=reject,
            line_rate_parts_per_min=config.line.trigger_rate_parts_per_min,
            drain_timeout_s=config.line.drain_timeout_s,
            broker=broker,
            mqtt_address=(settings.host, settings.port),
        )
    except BaseException:
        if tracker is not None:
            tracker.close()
        if outbox is not None:
            outbox.close()
        if broker is not None:
            broker.stop()
        raise
    alarm_target.append(station)
    status_target.append(station)
    return station
