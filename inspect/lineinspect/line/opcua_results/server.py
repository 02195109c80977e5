"""The station's OPC UA server: the MES reads each camera's latest result, shaped after OPC 40100 (Machine Vision).

Address space (namespace `urn:lineinspect:<station id>`, types from `http://opcfoundation.org/UA/MachineVision`
loaded from the plant's `Opc.Ua.MachineVision.NodeSet2.xml`):

    Objects/<station id>                       the station: UnsPath, RunId, SystemState (the worst camera's)
      Cameras/<camera id>                      a VisionSystemType each
        SystemState                            SystemStateDescriptionDataType (SEMI E10 state + description)
        VisionStateMachine                     mandatory in the type; not driven (no job control over OPC UA)
        ResultManagement/Results/LatestResult  ResultType: ResultDataType value and its component variables,
                                               plus Verdict, Reason and UndecidedKind (lineinspect's namespace)

ResultDataType from a result: ResultId = result_id, ResultState 1 (Completed) for pass and fail and 4
(Failed) for undecided, IsSimulated, PartId, InternalRecipeId = recipe id + version, ExternalRecipeId = recipe
id, InternalConfigurationId = model id with its SHA-256, JobId = run id / camera / trigger id (names one
part), CreationTime = decided_at, ProcessingTimes (capture → decision, inspection ms), and ResultContent =
the lineinspect.result/1 JSON, the same payload as the MQTT result channel.

Security: one endpoint, Basic256Sha256 with SignAndEncrypt, user name and password only (no anonymous).

Isolation: the result sink (`__call__`) keeps each camera's latest result in a dict (the latest wins, so
nothing can pile up) and wakes the server's event-loop thread; the inspection never waits for the server.
The server starts in the background; a server that fails (a port in use, a broken certificate) raises the
alarm `opcua_server.server_failed` and the line goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.instantiate_util import instantiate
from asyncua.crypto.permission_rules import User, UserRole

from lineinspect.core.result import Result, Verdict
from lineinspect.line.capture.supervisor import CameraState
from lineinspect.line.event_loop_thread import EventLoopThread
from lineinspect.line.opcua_results.settings import OpcUaServerSettings

log = logging.getLogger(__name__)

MACHINE_VISION_URI = "http://opcfoundation.org/UA/MachineVision"
# Node ids in the MachineVision namespace (its NodeIds.csv): the types the station instantiates.
VISION_SYSTEM_TYPE = 1003
RESULT_TYPE = 2002
# asyncua adds the nodeset's structures (ResultDataType, ...) to its `ua` module when it loads them.
MV: Any = ua
# ResultStateDataType (OPC 40100-1 §12.19): deliberately not an enumeration.
RESULT_COMPLETED = 1
RESULT_FAILED = 4
# Optional parts of VisionSystemType the station does not serve: not offered at all rather than offered empty.
UNSERVED = ("ConfigurationManagement", "RecipeManagement", "SafetyStateManagement")
SERVER_FAILED = "server_failed"

AlarmHook = Callable[[str, str], None]


class SemiE10State(IntEnum):
    """SystemStateDataType (OPC 40100-1 §12.21): the SEMI E10 states."""

    PRODUCTION = 1  # PRD
    STANDBY = 2  # SBY
    ENGINEERING = 3  # ENG
    SCHEDULED_DOWNTIME = 4  # SDT
    UNSCHEDULED_DOWNTIME = 5  # UDT
    NONSCHEDULED = 6  # NST


_CAMERA_STATES = {
    CameraState.CONNECTED: SemiE10State.PRODUCTION,
    CameraState.STARTING: SemiE10State.STANDBY,
    CameraState.FINISHED: SemiE10State.STANDBY,
    CameraState.LOST: SemiE10State.UNSCHEDULED_DOWNTIME,
    CameraState.RECONNECTING: SemiE10State.UNSCHEDULED_DOWNTIME,
    CameraState.STOPPED: SemiE10State.NONSCHEDULED,
}
_ABBREVIATION = {1: "PRD", 2: "SBY", 3: "ENG", 4: "SDT", 5: "UDT", 6: "NST"}


def system_state(camera: CameraState | None) -> tuple[SemiE10State, str]:
    """A camera's SEMI E10 state and its description (`UDT camera lost`); None: the camera is unknown."""
    if camera is None:
        return SemiE10State.UNSCHEDULED_DOWNTIME, "UDT camera unknown"
    state = _CAMERA_STATES[camera]
    return state, f"{_ABBREVIATION[state]} camera {camera.value}"


def station_state(cameras: Sequence[SemiE10State]) -> SemiE10State:
    """The station's state: down when any camera is down, producing when every camera is, else standby."""
    if any(s is SemiE10State.UNSCHEDULED_DOWNTIME for s in cameras):
        return SemiE10State.UNSCHEDULED_DOWNTIME
    if cameras and all(s is SemiE10State.PRODUCTION for s in cameras):
        return SemiE10State.PRODUCTION
    return SemiE10State.STANDBY


class _Accounts:
    """asyncua's user manager: the configured users, read only; anything else is refused."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self._passwords = dict(passwords)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None and password is not None and self._passwords.get(username) == password:
            return User(role=UserRole.User)
        log.warning("OPC UA server: login refused for user %r", username)
        return None


def result_data(result: Result) -> Any:
    """The result as a MachineVision ResultDataType (the types must have been loaded from the nodeset)."""
    total_ms = result.timings_ms.get("end_to_end", result.timings_ms.get("total"))
    sha = result.model_sha256
    return MV.ResultDataType(
        ResultId=MV.ResultIdDataType(Id=result.result_id),
        IsPartial=False,
        IsSimulated=result.simulated,
        ResultState=RESULT_FAILED if result.verdict is Verdict.UNDECIDED else RESULT_COMPLETED,
        PartId=MV.PartIdDataType(Id=result.part_id) if result.part_id else None,
        ExternalRecipeId=MV.RecipeIdExternalDataType(Id=result.recipe_id) if result.recipe_id else None,
        InternalRecipeId=MV.RecipeIdInternalDataType(Id=result.recipe_id or "", Version=result.recipe_version),
        InternalConfigurationId=MV.ConfigurationIdDataType(
            Id=result.model_id or "",
            Hash=bytes.fromhex(sha) if sha else None,
            HashAlgorithm="SHA-256" if sha else None,
        ),
        JobId=MV.JobIdDataType(Id=f"{result.run_id or ''}/{result.camera_id or ''}/{result.trigger_id or ''}"),
        CreationTime=result.decided_at,
        ProcessingTimes=MV.ProcessingTimesDataType(
            StartTime=result.captured_at,
            EndTime=result.decided_at,
            ProcessingDuration=total_ms,
        ),
        ResultContent=[ua.Variant(result.to_json(), ua.VariantType.String)],
    )


class _CameraNodes:
    def __init__(self, system_state: Node, latest: Node, parts: dict[str, Node]) -> None:
        self.system_state = system_state
        self.latest = latest
        self.parts = parts  # browse name → component variable of LatestResult


class OpcUaResultServer:
    """The result sink and its OPC UA server; `start()` serves in the background, `close()` stops it."""

    def __init__(
        self,
        settings: OpcUaServerSettings,
        *,
        files: Mapping[str, Path],
        passwords: Mapping[str, str],
        station_id: str,
        station_path: str,
        run_id: str,
        camera_ids: Sequence[str],
        camera_states: Callable[[], Mapping[str, CameraState]],
        on_alarm: AlarmHook | None = None,
        on_clear: AlarmHook | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = f"opc.tcp://{settings.host}:{settings.port}/{settings.path}"
        self.application_uri = settings.application_uri or f"urn:lineinspect:{station_id}"
        self._files = dict(files)
        self._passwords = dict(passwords)
        self._station_id = station_id
        self._station_path = station_path
        self._run_id = run_id
        self._camera_ids = list(camera_ids)
        self._camera_states = camera_states
        self._on_alarm = on_alarm
        self._on_clear = on_clear
        self._lock = threading.Lock()
        self._latest: dict[str, Result] = {}
        self._loop = EventLoopThread(f"opcua-server-{station_id}")
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Future[None] | None = None
        self._failed: str | None = None
        self.ready = threading.Event()  # set once the server answers

    # -- the result sink ---------------------------------------------------------------------------------
    def __call__(self, result: Result) -> None:
        """Keep the camera's latest result and wake the server (never blocks, never raises on its account)."""
        if result.camera_id not in self._camera_ids:
            return
        with self._lock:
            self._latest[result.camera_id] = result
        wake = self._wake
        if wake is not None:
            self._loop.call_soon(wake.set)

    # -- lifetime ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start serving in the background (the station does not wait for the nodeset to load)."""
        self._loop.start()
        self._loop.call_soon(self._spawn)

    def _spawn(self) -> None:
        self._task = asyncio.ensure_future(self._serve())

    def close(self, timeout_s: float = 5.0) -> None:
        if not self._loop.running:
            return
        stop = self._stop
        if stop is not None:
            self._loop.call_soon(stop.set)
        task = self._task
        if task is not None:
            try:
                self._loop.run(_finished(task, timeout_s), timeout_s + 1.0)
            except Exception as exc:
                log.warning("OPC UA server: not stopped cleanly: %r", exc)
        self._loop.stop()

    # -- the event-loop thread -----------------------------------------------------------------------------
    async def _serve(self) -> None:
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        try:
            server = await self._build()
            async with server:
                nodes = await self._address_space(server)
                log.info("OPC UA server: %s serving cameras %s", self.endpoint, self._camera_ids)
                self.ready.set()
                await self._publish_loop(nodes)
        except Exception as exc:  # the line goes on without the server; the alarm says why
            self._failed = f"OPC UA server {self.endpoint} failed: {exc!r}"
            log.error("%s; results still go to MQTT", self._failed)
            if self._on_alarm is not None:
                self._on_alarm(SERVER_FAILED, f"{self._failed}. Check opcua_server in station.yaml")

    async def _build(self) -> Server:
        server = Server(user_manager=_Accounts(self._passwords))  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"lineinspect {self._station_id}")
        await server.set_application_uri(self.application_uri)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(self._files["certificate_file"]))
        await server.load_private_key(str(self._files["private_key_file"]))
        try:
            await server.import_xml(str(self._files["nodeset_file"]))
            await server.load_data_type_definitions()
        except Exception as exc:
            raise RuntimeError(
                f"opcua_server.nodeset_file {self._files['nodeset_file']} is not the MachineVision NodeSet2 ({exc!r})"
            ) from exc
        return server

    async def _address_space(self, server: Server) -> dict[str, _CameraNodes]:
        mv = await server.get_namespace_index(MACHINE_VISION_URI)
        ns = await server.register_namespace(f"urn:lineinspect:{self._station_id}")
        station = await server.nodes.objects.add_object(ns, self._station_id)
        await station.add_property(ns, "UnsPath", self._station_path)
        await station.add_property(ns, "RunId", self._run_id)
        self._station_state = await station.add_variable(
            ns, "SystemState", _system_state_value(SemiE10State.STANDBY, "SBY station starting")
        )
        folder = await station.add_folder(ns, "Cameras")
        vision_type = ua.NodeId(ua.Int32(VISION_SYSTEM_TYPE), ua.Int16(mv))
        result_type = server.get_node(ua.NodeId(ua.Int32(RESULT_TYPE), ua.Int16(mv)))
        nodes: dict[str, _CameraNodes] = {}
        for camera_id in self._camera_ids:
            camera = await folder.add_object(
                _string_id(camera_id, ns), ua.QualifiedName(camera_id, ns), vision_type, instantiate_optional=True
            )
            for name in UNSERVED:
                await server.delete_nodes([await camera.get_child(f"{mv}:{name}")], recursive=True)
            results = await camera.get_child([f"{mv}:ResultManagement", f"{mv}:Results"])
            created = await instantiate(
                results,
                result_type,
                nodeid=_string_id(f"{camera_id}.LatestResult", ns),
                bname=ua.QualifiedName("LatestResult", ns),
                idx=ns,
                instantiate_optional=True,
            )
            latest = created[0]
            parts: dict[str, Node] = {str((await c.read_browse_name()).Name): c for c in await latest.get_children()}
            for name in ("Verdict", "Reason", "UndecidedKind"):
                parts[name] = await latest.add_variable(ns, name, "")
            nodes[camera_id] = _CameraNodes(await camera.get_child(f"{mv}:SystemState"), latest, parts)
        return nodes

    async def _publish_loop(self, nodes: dict[str, _CameraNodes]) -> None:
        assert self._wake is not None and self._stop is not None
        poll_s = self.settings.state_poll_ms / 1000
        shown_states: dict[str, SemiE10State] = {}
        shown_results: dict[str, str] = {}
        while not self._stop.is_set():
            with self._lock:
                latest = dict(self._latest)
            for camera_id, result in latest.items():
                if shown_results.get(camera_id) != result.result_id:
                    await _write_result(nodes[camera_id], result)
                    shown_results[camera_id] = result.result_id
            states = self._camera_states()
            for camera_id in self._camera_ids:
                state, text = system_state(states.get(camera_id))
                if shown_states.get(camera_id) is not state:
                    await nodes[camera_id].system_state.write_value(_system_state_value(state, text))
                    shown_states[camera_id] = state
            overall = station_state(list(shown_states.values()))
            await self._station_state.write_value(_system_state_value(overall, f"{_ABBREVIATION[overall]} station"))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)


def _string_id(name: str, ns: int) -> ua.NodeId:
    """A readable string node id (`ns=2;s=cam1`): the MES can name the camera's nodes without browsing."""
    return ua.NodeId(ua.String(name), ua.Int16(ns))


async def _finished(task: asyncio.Future[None], timeout_s: float) -> None:
    await asyncio.wait_for(asyncio.shield(task), timeout_s)


def _system_state_value(state: SemiE10State, text: str) -> ua.Variant:
    value = MV.SystemStateDescriptionDataType(State=MV.SystemStateDataType(int(state)), StateDescription=text)
    return ua.Variant(value, ua.VariantType.ExtensionObject)


async def _write_result(nodes: _CameraNodes, result: Result) -> None:
    data = result_data(result)
    await nodes.latest.write_value(ua.Variant(data, ua.VariantType.ExtensionObject))
    fields: dict[str, Any] = {
        "ResultId": data.ResultId,
        "IsPartial": data.IsPartial,
        "IsSimulated": data.IsSimulated,
        "ResultState": ua.Variant(data.ResultState, ua.VariantType.Int32),
        "PartId": data.PartId,
        "ExternalRecipeId": data.ExternalRecipeId,
        "InternalRecipeId": data.InternalRecipeId,
        "InternalConfigurationId": data.InternalConfigurationId,
        "JobId": data.JobId,
        "CreationTime": data.CreationTime,
        "ProcessingTimes": data.ProcessingTimes,
        "Verdict": result.verdict.value,
        "Reason": result.reason,
        "UndecidedKind": result.undecided_kind.value if result.undecided_kind is not None else "",
    }
    for name, value in fields.items():
        node = nodes.parts.get(name)
        if node is None:
            continue
        if value is None:
            await node.write_value(ua.Variant(None, ua.VariantType.Null))
            continue
        if not isinstance(value, ua.Variant):
            structure = dataclasses.is_dataclass(value)
            value = ua.Variant(value, ua.VariantType.ExtensionObject) if structure else ua.Variant(value)
        await node.write_value(value)
