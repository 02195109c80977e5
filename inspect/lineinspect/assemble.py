"""Turns a station directory's configuration into ready objects.

The CLI and the HTTP app factory call these; nothing else builds models or
Inspectors, so there is one place where objects are wired together.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2

from lineinspect.config import RuntimeSection, StationConfig, load_station
from lineinspect.core.calibration import load_calibrations, warn_small_limits
from lineinspect.core.inspector import Inspector, PlaneCalibration
from lineinspect.core.model import Model, RuntimeOptions
from lineinspect.core.recipe import Recipe
from lineinspect.core.remote import RemoteOutage
from lineinspect.core.result import Result, ResultSink, ResultSinks
from lineinspect.errors import ConfigError, ModelError
from lineinspect.line.archive.archive import ImageArchive
from lineinspect.line.archive.settings import ArchiveSettings
from lineinspect.line.broker import BrokerError, EmbeddedBroker
from lineinspect.line.camera_health import CameraHealth
from lineinspect.line.capture.base import TriggerMode
from lineinspect.line.capture.config import CAMERAS_DIR, CameraConfig, load_cameras
from lineinspect.line.capture.supervisor import CameraSupervisor
from lineinspect.line.changeover import Change, ChangeoverAudit, RecipeBook
from lineinspect.line.commands import StationCommands, required
from lineinspect.line.events import StationAlarm, StationEvents
from lineinspect.line.journal import PartJournal, new_run_id
from lineinspect.line.metrics import StationMetrics
from lineinspect.line.mqtt import MqttSettings, ResultPublisher, StationTopics
from lineinspect.line.outbox import Outbox
from lineinspect.line.plc_trigger.settings import ModbusTriggerSource, PlcTriggerSettings
from lineinspect.line.plc_trigger.trigger import PlcTrigger, SelectRecipe, TriggerInput
from lineinspect.line.reject.tracker import RejectTracker, reset_message
from lineinspect.line.reject.wiring import build_reject_tracker
from lineinspect.line.results_store import ResultStore
from lineinspect.line.shadow import SHADOW_FILE, ShadowError, ShadowRunner, ShadowStore
from lineinspect.line.station import (
    FrameArchive,
    PartEntry,
    PartWorker,
    RejectFeed,
    ResultFanout,
    ResultOutput,
    SkippedParts,
    Station,
)
from lineinspect.line.status import PartCounts, StationStatus, StatusProvider
from lineinspect.line.watch import LinkWatch

if TYPE_CHECKING:  # the HTTP stack is imported only by the commands that serve it
    from fastapi import FastAPI

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
    """Load each model the recipes use (production and shadow), once."""
    models: dict[str, Model] = {}
    for recipe in recipes:
        for name in (recipe.model, recipe.shadow):
            if name is None or name in models:
                continue
            path = model_dir(station_dir, name)
            if not path.is_dir():
                raise ModelError(
                    f"recipe '{recipe.id}': model folder {path} not found "
                    f"(models live in {station_dir / MODELS_DIR}/<name>/ with model.onnx and model.yaml)"
                )
            models[name] = Model.load(path, options)
    return models


def build_inspector(
    station_dir: Path,
    config: StationConfig,
    calibrations: Mapping[str, PlaneCalibration] | None = None,
) -> Inspector:
    """calibrations None: those of the cameras in cameras/*.yaml, with a warning for mm limits under 3 px.

    Each camera's frame plausibility overrides (its `frame:` section and configured size) come from its definition.
    """
    cameras = load_cameras(station_dir)
    if calibrations is None:
        loaded = load_calibrations(station_dir, [c.id for c in cameras])
        warn_small_limits(config.recipes, loaded)
        calibrations = loaded
    # A process-wide setting, made here with the models it shares the cores with (docs/architecture.md, Threads).
    cv2.setNumThreads(config.runtime.opencv_threads)
    # A model on an inference server waits for it within the part's budget at most.
    options = dataclasses.replace(runtime_options(config.runtime), remote_budget_ms=config.budget_ms)
    models = load_models(station_dir, config.recipes, options)
    recipes = {r.id: r for r in config.recipes}
    camera_limits = {c.id: c.frame_limits() for c in cameras}
    return Inspector(models, recipes, config.default_recipe_id, calibrations, camera_limits)


REMOTE_ALARM_SOURCE = "remote"
REMOTE_ALARM_KIND = "inference_server_unreachable"


def report_remote_outages(inspector: Inspector, events: StationEvents) -> Inspector:
    """Each remote model's outages as a station alarm (source `remote.<model>`): raised when its server stops
    answering, cleared when it answers again. Returns the inspector (for the reload loader)."""

    def down(outage: RemoteOutage) -> None:
        message = f"{outage.message}; parts of model '{outage.model_id}' are undecided (rejected) until it answers"
        events.raise_alarm(StationAlarm(f"{REMOTE_ALARM_SOURCE}.{outage.model_id}", REMOTE_ALARM_KIND, message))

    def up(outage: RemoteOutage, message: str) -> None:
        events.clear_alarm(f"{REMOTE_ALARM_SOURCE}.{outage.model_id}", REMOTE_ALARM_KIND, message)

    for model in inspector.models.values():
        if model.remote_outages is not None:
            model.remote_outages.listen(down, up)
    return inspector


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


def _reject_station(
    config: StationConfig, cameras: list[CameraConfig], station_dir: Path, events: StationEvents, run_id: str
) -> RejectFeed | None:
    """The reject tracker (not started) and the camera that feeds it; None without a `reject:` section."""
    if config.reject is None:
        return None
    feeding = _reject_camera(config, cameras)
    if feeding is None:
        log.warning("reject: section present but the station has no camera; nothing will be rejected")
        return None
    tracker = build_reject_tracker(
        config.reject, station_dir, on_alarm=events.reject_alarm, publish=events.reject_event
    )
    return RejectFeed(tracker, feeding.id, run_id=run_id)


ARCHIVE_ALARM_SOURCE = "archive"


def build_archive(station_dir: Path, settings: ArchiveSettings, *, events: StationEvents | None = None) -> ImageArchive:
    """The image archive (its writer thread started); `close()` it. events: the station's alarm table
    (None for `lineinspect serve`: its problems show in the status only). Never raises for a bad folder or
    index: the archive is then `off` with its alarm raised, and the station runs without it."""
    folder = settings.folder if settings.folder.is_absolute() else station_dir / settings.folder
    if events is None:
        return ImageArchive(settings, folder=folder)
    return ImageArchive(
        settings,
        folder=folder,
        on_alarm=lambda kind, message: events.raise_alarm(StationAlarm(ARCHIVE_ALARM_SOURCE, kind, message)),
        on_clear=lambda kind, message: events.clear_alarm(ARCHIVE_ALARM_SOURCE, kind, message),
    )


PLC_TRIGGER_ALARM_SOURCE = "plc_trigger"


def plc_trigger_input(entry: PlcTriggerSettings, field_path: str) -> TriggerInput:
    # Imported here: a station without PLC triggers never loads pymodbus or asyncua for them.
    if isinstance(entry.source, ModbusTriggerSource):
        from lineinspect.line.plc_trigger.modbus import ModbusTriggerInput

        return ModbusTriggerInput(entry.source, field_path=field_path)
    from lineinspect.line.plc_trigger.opcua import OpcUaTriggerInput

    return OpcUaTriggerInput(entry.source, camera_id=entry.camera, field_path=field_path)


def build_plc_triggers(
    config: StationConfig,
    station: Station,
    select_recipe: SelectRecipe | None,
    events: StationEvents,
    *,
    station_dir: Path | None = None,
) -> list[PlcTrigger]:
    """One `PlcTrigger` per `plc_triggers:` entry (not started: `start()` after `station.start()`, `stop()`
    before `station.stop()`). Each names a camera of the station whose trigger mode is software.

    select_recipe: (camera_id, recipe_id), raising to refuse; None: the station's own changeover
    (`RecipeBook.select`, source `plc`: the same rules as HTTP and MQTT). Alarms go to `events` with the
    source `plc_trigger.<camera>`.
    """
    if select_recipe is None:
        select_recipe = partial(_select_by_plc, station.book)
    where = str(station_dir / "station.yaml") if station_dir is not None else "station.yaml"
    triggers: list[PlcTrigger] = []
    for i, entry in enumerate(config.plc_triggers):
        field_path = f"plc_triggers[{i}]"
        supervisor = station.supervisors.get(entry.camera)
        if supervisor is None:
            raise ConfigError(
                f"{where}: {field_path}.camera '{entry.camera}' is not a camera of this station (cameras/"
                f"{entry.camera}.yaml not found); cameras: {sorted(station.supervisors) or 'none'}"
            )
        if supervisor.trigger_mode is not TriggerMode.SOFTWARE:
            camera_file = f"{station_dir / CAMERAS_DIR if station_dir else CAMERAS_DIR}/{entry.camera}.yaml"
            raise ConfigError(
                f"{where}: {field_path}.camera '{entry.camera}' has trigger mode {supervisor.trigger_mode} "
                f"({camera_file} acquisition.trigger.mode); a PLC trigger needs a software-triggered camera. Set "
                "the camera's trigger mode to software, or wire the PLC output to the camera's input line instead"
            )
        source = f"{PLC_TRIGGER_ALARM_SOURCE}.{entry.camera}"

        def on_alarm(kind: str, message: str, source: str = source) -> None:
            events.raise_alarm(StationAlarm(source, kind, message))

        triggers.append(
            PlcTrigger(
                entry,
                plc_trigger_input(entry, f"{field_path}.source"),
                trigger=station.trigger,
                select_recipe=select_recipe,
                on_alarm=on_alarm,
                on_clear=events.clear_alarm,
                alarm_source=source,
                field_path=field_path,
            )
        )
    return triggers


def build_station(
    station_dir: Path,
    config: StationConfig,
    *,
    inspector: Inspector | None = None,
    result_sinks: Sequence[ResultSink] = (),
    archive: FrameArchive | None = None,
) -> Station:
    """Everything `lineinspect run` runs, built but not started (`Station.start()`; `stop()` undoes it all).

    Built top to bottom: broker and outbox, the MQTT publisher, the event channel every later part
    reports through, the run id and part journal, the reject station, the fanout, then per camera its
    skipped parts, supervisor (whose parts enter the journal, then the reject station) and worker.
    With no `mqtt:` section the embedded demo broker is started here (stopped by `Station.stop()`).
    archive: a frame archive of the caller's; None: the station's own from `archive:` in station.yaml (built
    after the event channel it raises alarms through, closed by `Station.stop()`, `station.archive`).
    """
    cameras = load_cameras(station_dir)
    inspector = inspector or build_inspector(station_dir, config)
    for cam in cameras:
        if cam.recipe is not None and cam.recipe not in inspector.recipes:
            raise ConfigError(
                f"{station_dir / CAMERAS_DIR / (cam.id + '.yaml')}: recipe '{cam.recipe}' is not in station.yaml; "
                f"recipes: {sorted(inspector.recipes)}"
            )
    with ExitStack() as undo:  # what was built is closed again if a later step fails
        broker: EmbeddedBroker | None = None
        settings = config.mqtt
        if settings is None:
            broker = start_demo_broker()
            undo.callback(broker.stop)
            settings = MqttSettings(port=broker.port)
        outbox_path = settings.outbox_file if settings.outbox_file.is_absolute() else station_dir / settings.outbox_file
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(outbox_path, max_rows=settings.outbox_max_rows)
        undo.callback(outbox.close)
        publisher = ResultPublisher(
            settings,
            outbox,
            StationTopics(config.station.path),
            client_id=settings.client_id or f"lineinspect-{config.station.id}",
            password=settings.password(os.environ),
            station_dir=station_dir,
        )
        events = StationEvents(publisher)
        report_remote_outages(inspector, events)
        watch = LinkWatch(
            publisher.stats,
            events,
            alarm_after_s=settings.alarm_after_s,
            outbox_max_rows=settings.outbox_max_rows,
            outbox_full_alarm_s=settings.outbox_full_alarm_s,
            where=f"{settings.host}:{settings.port}",
        )
        run_id = new_run_id()
        journal = PartJournal(
            outbox,
            run_id,
            on_alarm=events.station_alarm,
            on_clear=events.clear_alarm,
        )
        reject = _reject_station(config, cameras, station_dir, events, run_id)
        if reject is not None:
            undo.callback(reject.tracker.close)
        owned_archive = None
        if archive is None and config.archive is not None:
            owned_archive = build_archive(station_dir, config.archive, events=events)
            undo.callback(owned_archive.close)
            archive = owned_archive
        book = RecipeBook(
            inspector,
            {cam.id: cam.recipe for cam in cameras},
            load=lambda: report_remote_outages(build_inspector(station_dir, load_station(station_dir)), events),
            audit=ChangeoverAudit(station_dir / "var" / "changeover.jsonl"),
            listener=events,
        )
        undo.callback(book.close)
        commands = StationCommands(lambda answer: publisher.publish_event(publisher.topics.command_response, answer))
        commands.on(
            "recipe",
            lambda body: _outcome(
                book.select(
                    required(body, "camera"), required(body, "recipe"), source="mqtt", request_id=body.get("request_id")
                )
            ),
        )
        commands.on("reload", lambda body: _outcome(book.reload(source="mqtt", request_id=body.get("request_id"))))
        if reject is not None:
            commands.on("reset_alarms", partial(_reset_alarms, reject.tracker))
        publisher.subscribe(publisher.topics.commands, commands.submit)
        shadow = _shadow_runner(station_dir, book)
        if shadow is not None:
            undo.callback(shadow.store.close)
        counts = PartCounts()
        # Camera health from every camera result's frame measures; its alarms go through the event channel.
        health = CameraHealth(
            events,
            settings={cam.id: cam.health for cam in cameras},
            baselines={cam.id: inspector.frame_baseline(cam.recipe) for cam in cameras},
        )
        supervisors: list[CameraSupervisor] = []
        # Where the MES and SCADA also read results (opcua_server, sparkplug): sinks beside the QoS 1 channel.
        outputs = build_result_outputs(
            config,
            station_dir,
            settings,
            run_id=run_id,
            events=events,
            cameras=supervisors,
            camera_ids=[c.id for c in cameras],
        )
        fanout = ResultFanout(
            publisher,
            station_path=config.station.path,
            sinks=ResultSinks([counts.observe, health, *outputs, *result_sinks]),
            run_id=run_id,
            reject=reject,
            archive=archive,
            alarms=events,
        )
        workers = []
        for cam in cameras:
            skipped = SkippedParts(cam.id, fanout, book, max_waiting=config.line.pending_parts_max)
            supervisor = CameraSupervisor.from_config(
                cam,
                on_part=PartEntry(journal, reject if reject is not None and reject.camera_id == cam.id else None),
                on_skipped=skipped.put,
                on_status=events.camera_status,
                selection=partial(book.selection, cam.id),
            )
            supervisors.append(supervisor)
            workers.append(
                PartWorker(
                    supervisor,
                    skipped,
                    book,
                    fanout,
                    budget_ms=config.budget_ms,
                    threads=config.line.inspection_threads,
                    shadow=shadow,
                )
            )
        station = Station(
            station_id=config.station.id,
            station_path=config.station.path,
            publisher=publisher,
            outbox=outbox,
            events=events,
            counts=counts,
            fanout=fanout,
            supervisors=supervisors,
            workers=workers,
            run_id=run_id,
            journal=journal,
            watch=watch,
            book=book,
            commands=commands,
            shadow=shadow,
            tracker=reject.tracker if reject is not None else None,
            line_rate_parts_per_min=config.line.trigger_rate_parts_per_min,
            drain_timeout_s=config.line.drain_timeout_s,
            broker=broker,
            mqtt_address=(settings.host, settings.port),
            archive=owned_archive,
            outputs=outputs,
        )
        undo.pop_all()  # the station owns them now
    return station


OPCUA_SERVER_ALARM_SOURCE = "opcua_server"


class _SinkOutput(ResultOutput, Protocol):
    def __call__(self, result: Result) -> None: ...


def build_result_outputs(
    config: StationConfig,
    station_dir: Path,
    station_mqtt: MqttSettings,
    *,
    run_id: str,
    events: StationEvents,
    cameras: Sequence[CameraSupervisor],
    camera_ids: Sequence[str],
) -> list[_SinkOutput]:
    """The OPC UA server and the Sparkplug B node that station.yaml asks for (not started; each is a result sink
    and a `ResultOutput` of the station). cameras: the station's supervisors (read when the server shows camera
    states, so the list may still be filling). Bad settings raise ConfigError now, before the line starts."""
    outputs: list[_SinkOutput] = []
    if config.opcua_server is not None:
        try:  # asyncua only where a server is configured
            from lineinspect.line.opcua_results.server import OpcUaResultServer
        except ImportError as exc:
            raise ConfigError(f"opcua_server needs asyncua ({exc}): pip install 'lineinspect[plc]'") from exc
        s = config.opcua_server
        outputs.append(
            OpcUaResultServer(
                s,
                files=s.files(station_dir),
                passwords=s.passwords(os.environ),
                station_id=config.station.id,
                station_path=config.station.path,
                run_id=run_id,
                camera_ids=camera_ids,
                camera_states=lambda: {sup.camera_id: sup.status().state for sup in cameras},
                on_alarm=lambda kind, message: events.raise_alarm(
                    StationAlarm(OPCUA_SERVER_ALARM_SOURCE, kind, message)
                ),
                on_clear=lambda kind, message: events.clear_alarm(OPCUA_SERVER_ALARM_SOURCE, kind, message),
            )
        )
    if config.sparkplug is not None:
        from lineinspect.line.sparkplug.node import SparkplugNode, broker_link

        spb = config.sparkplug
        link = broker_link(spb, station_mqtt, station_id=config.station.id, station_dir=station_dir, environ=os.environ)
        outputs.append(
            SparkplugNode(
                link,
                group_id=spb.group_id,
                edge_node_id=spb.edge_node_id or config.station.id,
                camera_ids=camera_ids,
                station_path=config.station.path,
                queue_results=spb.queue_results,
            )
        )
    return outputs


def _select_by_plc(book: RecipeBook, camera_id: str, recipe_id: str) -> None:
    """A PLC product code's recipe switch; a refusal raises, so the trigger raises its alarm."""
    change = book.select(camera_id, recipe_id, source="plc")
    if not change.ok:
        raise ValueError(change.message)


def _shadow_runner(station_dir: Path, book: RecipeBook) -> ShadowRunner | None:
    """Shadow models' runner; a shadow store that cannot be opened costs the shadows, never the line."""
    try:
        return ShadowRunner(lambda: book.current, ShadowStore(station_dir / SHADOW_FILE))
    except ShadowError as exc:
        log.error("shadow models are off: %s", exc)
        return None


def _outcome(change: Change) -> tuple[bool, str]:
    return change.ok, change.message


def _reset_alarms(tracker: RejectTracker, body: Mapping[str, object]) -> tuple[bool, str]:
    """The MQTT command `reset_alarms` (`{"request_id", "operator"?}`): the operator's reset of the reject station."""
    operator = body.get("operator")
    by = f"mqtt ({operator})" if isinstance(operator, str) and operator else "mqtt"
    return True, reset_message(tracker.reset_alarms(by=by))


def build_http_app(
    inspector: Inspector,
    config: StationConfig,
    *,
    api_key: str | None,
    store: ResultStore,
    metrics: StationMetrics,
    status: StatusProvider,
    result_sinks: Sequence[ResultSink],
    station: Station | None = None,
    archive: ImageArchive | None = None,
) -> FastAPI:
    """The HTTP app of `serve` (uploads only) and `run` (a station: adds external triggers).

    archive: the image archive (the station's own, or the one `serve` keeps uploads in): its frames and
    reviews are served, and uploads are kept in it by its rules."""
    from lineinspect.http.app import create_app
    from lineinspect.http.routes.archive import archive_router
    from lineinspect.http.routes.dashboard import dashboard_router
    from lineinspect.http.routes.metrics import metrics_router
    from lineinspect.http.routes.recipes import recipes_router
    from lineinspect.http.routes.reject import reject_router
    from lineinspect.http.routes.results import results_router
    from lineinspect.http.routes.shadow import shadow_router
    from lineinspect.http.routes.status import status_router
    from lineinspect.http.routes.triggers import triggers_router

    if station is not None:
        health = next((s for s in station.fanout.sinks if isinstance(s, CameraHealth)), None)
        if health is not None:
            status = with_camera_health(status, health)
    routers = [
        results_router(store),
        archive_router(archive, store),
        status_router(status),
        metrics_router(metrics, status),
        dashboard_router(),
    ]
    if station is not None:
        modes = {c: s.trigger_mode for c, s in station.supervisors.items()}
        routers.append(triggers_router(station.trigger, modes, run_id=station.run_id))
        routers.append(recipes_router(station.book))
        if station.shadow is not None:
            routers.append(shadow_router(station.shadow.store))
        if station.tracker is not None:
            routers.append(reject_router(station.tracker))
    return create_app(
        inspector,
        config.http,
        station_path=config.station.path,
        api_key=api_key,
        routers=routers,
        result_sinks=result_sinks,
        archive=archive,
    )


def with_camera_health(status: StatusProvider, health: CameraHealth) -> StatusProvider:
    """The station's status with its cameras' health (the watch is a sink of the station's fanout)."""

    def provider() -> StationStatus:
        return dataclasses.replace(status(), camera_health=health.status())

    return provider
