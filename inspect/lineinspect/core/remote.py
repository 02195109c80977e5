"""Remote inference: a KServe v2 server (Triton, OpenVINO Model Server) runs the model, the station the rest.

A card with `runtime: {remote: ...}` gets a `RemoteSession` instead of an onnxruntime session. It answers
what `Model` asks of a session (`get_inputs`, `get_outputs`, `get_modelmeta`, `run`), so preprocessing, the
adapter, warm-up, the Inspector and the deadline do not know the difference. The station keeps the card's
model.onnx (its sha256 names the file the server runs; its metadata feeds the adapter, e.g. YOLO class
names); at load the server must have the model ready with the card's input (name, shape, FP32) and the file's
outputs, else the load is refused saying which.

A call that fails or takes longer than its timeout raises `RemoteInferenceError`: the Inspector makes that
part `undecided` (kind `inference`) with the message as its reason. The first failure starts an outage (one
error log line, one `RemoteOutages.down`: the station's alarm, once it listens); the first answer after it
ends it. Every part tries the server again, so the station reconnects by itself: gRPC's channel retries its
connection within `GRPC_RECONNECT_MAX_MS`, HTTP opens a new connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lineinspect.core.clock import iso_utc, utc_now
from lineinspect.core.modelcard import ModelCard, RemoteRuntime
from lineinspect.errors import ModelError

log = logging.getLogger(__name__)

# Load-time questions (liveness, readiness, metadata) may take longer than one inference's timeout.
LOAD_TIMEOUT_MS = 5000.0
# gRPC waits this long at most between attempts to reconnect to a server that went away (default: 120 s).
GRPC_RECONNECT_MAX_MS = 1000
# What preprocessing hands the model (`preprocess`: float32), as KServe v2 names it.
INPUT_DATATYPE = "FP32"


class RemoteInferenceError(ModelError):
    """One remote inference failed or answered too late; the part is undecided."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A tensor as onnxruntime's `NodeArg` describes it (what `Model` reads): name, shape, type."""

    name: str
    shape: list[int | str | None]
    type: str


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """The card's model.onnx metadata (`custom_metadata_map`, as onnxruntime's `ModelMetadata`)."""

    custom_metadata_map: dict[str, str]


@dataclass(frozen=True, slots=True)
class RemoteOutage:
    """A server that stopped answering for one model: since when, and why."""

    model_id: str
    server: str
    message: str
    since: datetime = field(default_factory=utc_now)


OutageHook = Callable[[RemoteOutage], None]
RecoveryHook = Callable[[RemoteOutage, str], None]


class RemoteOutages:
    """The outages going on now (one per model), and who hears of them. Thread-safe; hooks never raise here.

    The station builds its models before its alarm table exists, so `listen` may come later: it is told of
    the outages already going on at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, RemoteOutage] = {}
        self._on_down: OutageHook | None = None
        self._on_up: RecoveryHook | None = None

    def listen(self, on_down: OutageHook, on_up: RecoveryHook) -> None:
        with self._lock:
            self._on_down, self._on_up = on_down, on_up
            active = list(self._active.values())
        for outage in active:
            self._call(on_down, outage)

    def down(self, outage: RemoteOutage) -> None:
        with self._lock:
            self._active[outage.model_id] = outage
            hook = self._on_down
        if hook is not None:
            self._call(hook, outage)

    def up(self, model_id: str, message: str) -> None:
        with self._lock:
            outage = self._active.pop(model_id, None)
            hook = self._on_up
        if outage is not None and hook is not None:
            self._call(hook, outage, message)

    @property
    def active(self) -> list[RemoteOutage]:
        with self._lock:
            return list(self._active.values())

    @staticmethod
    def _call(hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("a remote-outage hook failed")


@dataclass(frozen=True, slots=True)
class RemoteStats:
    """A session's counts since load: inferences sent, of which failed or late, and outages begun."""

    calls: int
    failed_calls: int
    outages: int
    down_since: datetime | None


class RemoteSession:
    """One model on one KServe v2 server, behind onnxruntime's session interface. Thread-safe.

    `open` checks the server and builds it; `run` sends one tensor. gRPC: one client (tritonclient's gRPC
    client is thread-safe); HTTP: one client per calling thread (its HTTP client is not).
    """

    def __init__(
        self,
        card: ModelCard,
        remote: RemoteRuntime,
        *,
        timeout_ms: float,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
        metadata: Mapping[str, str],
        outages: RemoteOutages | None = None,
        where: str = "",
    ) -> None:
        self.card = card
        self.remote = remote
        self.timeout_ms = timeout_ms
        self.server = f"{remote.protocol}://{remote.url}"
        version = f" version '{remote.version}'" if remote.version else ""
        self.describes = f"inference server {self.server} model '{remote.model}'{version}"
        self.where = where
        self._inputs = inputs
        self._outputs = outputs
        self._metadata = dict(metadata)
        # Heard by the station's alarm table once it listens (assemble.report_remote_outages).
        self.outages = outages or RemoteOutages()
        self._lock = threading.Lock()
        self._calls = 0
        self._failed = 0
        self._outage_count = 0
        self._down: RemoteOutage | None = None
        self._failed_in_outage = 0
        self._local = threading.local()
        self._clients: list[Any] = []
        self._grpc: Any = None
        self._closed = False

    # --- building ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        onnx_path: Path,
        card: ModelCard,
        *,
        timeout_ms: float,
        outages: RemoteOutages | None = None,
    ) -> RemoteSession:
        """Check the server has the card's model ready with its input, and build the session. ModelError: why not.

        onnx_path: the card's model.onnx (sha256 already checked): its outputs and metadata. timeout_ms: the
        longest one inference may take (the card's `timeout_ms`, capped by the caller at the part's budget).
        """
        remote = card.runtime.remote if card.runtime is not None else None
        if remote is None:
            raise ModelError(f"{onnx_path}: the card has no runtime.remote section")
        card_path = onnx_path.parent / "model.yaml"
        try:
            import tritonclient.grpc
            import tritonclient.http  # noqa: F401
        except ImportError as exc:
            raise ModelError(
                f"{card_path}: runtime.remote needs tritonclient ({exc}); pip install 'lineinspect[remote]'"
            ) from None
        local_inputs, local_outputs, metadata = _describe_file(onnx_path)
        probe = cls(card, remote, timeout_ms=LOAD_TIMEOUT_MS, inputs=[], outputs=[], metadata={}, where=str(card_path))
        try:
            inputs, outputs = probe._check_server(local_inputs, local_outputs)
        finally:
            probe.close()
        return cls(
            card,
            remote,
            timeout_ms=timeout_ms,
            inputs=inputs,
            outputs=outputs,
            metadata=metadata,
            outages=outages,
            where=str(card_path),
        )

    def _check_server(
        self, local_inputs: list[TensorInfo], local_outputs: list[TensorInfo]
    ) -> tuple[list[TensorInfo], list[TensorInfo]]:
        fix = f"(runtime.remote in {self.where})"
        client = self._client()
        try:
            live = bool(client.is_server_live(**self._call_timeout()))
        except Exception as exc:
            raise ModelError(
                f"{self.where}: {self.server} is not reachable ({_why(exc)}); start the inference server "
                f"or fix runtime.remote.url/protocol {fix}"
            ) from None
        if not live:
            raise ModelError(f"{self.where}: {self.server} answers but says it is not live; check the server")
        name, version = self.remote.model, self.remote.version
        try:
            ready = bool(client.is_model_ready(name, version, **self._call_timeout()))
        except Exception as exc:
            ready, why = False, _why(exc)
        else:
            why = "not ready"
        if not ready:
            raise ModelError(
                f"{self.where}: {self.describes} is not ready ({why}); the server has {self._server_models()}. "
                f"Load the model on the server or fix runtime.remote.model/version {fix}"
            )
        try:
            meta = _metadata_dict(client.get_model_metadata(name, version, **self._metadata_kwargs()))
        except Exception as exc:
            raise ModelError(f"{self.where}: {self.describes}: its metadata cannot be read ({_why(exc)})") from None
        inputs = [_tensor(t) for t in meta.get("inputs", [])]
        outputs = [_tensor(t) for t in meta.get("outputs", [])]
        self._check_input(inputs, local_inputs)
        missing = [o.name for o in local_outputs if o.name not in {s.name for s in outputs}]
        if missing:
            raise ModelError(
                f"{self.where}: {self.describes} has outputs {[o.name for o in outputs]} but the card's model.onnx "
                f"has {[o.name for o in local_outputs]} (missing {missing}): the server runs another model than "
                f"the card's; deploy this model.onnx (sha256 {self.card.sha256[:12]}…) on the server"
            )
        # The adapter reads the file's outputs, in the file's order, whatever else the server offers.
        by_name = {o.name: o for o in outputs}
        return inputs, [by_name[o.name] for o in local_outputs]

    def _check_input(self, inputs: list[TensorInfo], local_inputs: list[TensorInfo]) -> None:
        spec = self.card.input
        name = spec.name or (local_inputs[0].name if local_inputs else "")
        server = next((i for i in inputs if i.name == name), None)
        if server is None:
            raise ModelError(
                f"{self.where}: {self.describes} has inputs {[i.name for i in inputs]}, not '{name}' "
                "(the card's input.name, else model.onnx's first input): the server runs another model than the card's"
            )
        if server.type != INPUT_DATATYPE:
            raise ModelError(
                f"{self.where}: {self.describes} input '{name}' is {server.type}; the station sends "
                f"{INPUT_DATATYPE} (the card's input section, preprocessed)"
            )
        want = (
            [spec.channels, spec.height, spec.width]
            if spec.layout == "NCHW"
            else [spec.height, spec.width, spec.channels]
        )
        dims = server.shape
        fits = len(dims) == 4 and all(
            not isinstance(g, int) or g < 0 or g == w for g, w in zip(dims[1:], want, strict=True)
        )
        if not fits:
            raise ModelError(
                f"{self.where}: {self.describes} input '{name}' has shape {dims} but the card says {spec.layout} "
                f"{spec.channels}x{spec.height}x{spec.width} (batch first): the server runs another model than the "
                "card's, or the card's input section is wrong"
            )

    def _server_models(self) -> str:
        try:
            index = self._client().get_model_repository_index(**self._index_kwargs())
        except Exception as exc:
            return f"no model list it would give ({_why(exc)})"
        entries = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({str(e.get("name")) for e in entries if isinstance(e, dict)})
        return f"models {names}" if names else "no models"

    # --- the session interface Model uses ------------------------------------------------------------
    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(dict(self._metadata))

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One inference on the server; RemoteInferenceError when it fails or answers after timeout_ms."""
        t0 = time.monotonic_ns()
        try:
            values = self._infer(output_names, feeds)
        except Exception as exc:
            elapsed_ms = (time.monotonic_ns() - t0) / 1e6
            late = elapsed_ms >= self.timeout_ms * 0.99
            why = f"no answer within {self.timeout_ms:g} ms" if late else _why(exc)
            raise self._failure(why) from None
        elapsed_ms = (time.monotonic_ns() - t0) / 1e6
        if elapsed_ms > self.timeout_ms:
            raise self._failure(f"answered after {elapsed_ms:.0f} ms, past its {self.timeout_ms:g} ms timeout")
        self._success()
        return values

    def _infer(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        client = self._client()
        if self.remote.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            inputs = []
            for name, tensor in feeds.items():
                item = grpcclient.InferInput(name, list(tensor.shape), INPUT_DATATYPE)
                item.set_data_from_numpy(np.ascontiguousarray(tensor, dtype=np.float32))
                inputs.append(item)
            outputs = [grpcclient.InferRequestedOutput(n) for n in output_names]
            result = client.infer(
                self.remote.model,
                inputs,
                model_version=self.remote.version,
                outputs=outputs,
                client_timeout=self.timeout_ms / 1000.0,
            )
        else:
            import tritonclient.http as httpclient

            binary = self.remote.http_binary
            inputs = []
            for name, tensor in feeds.items():
                item = httpclient.InferInput(name, list(tensor.shape), INPUT_DATATYPE)
                item.set_data_from_numpy(np.ascontiguousarray(tensor, dtype=np.float32), binary_data=binary)
                inputs.append(item)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in output_names]
            result = client.infer(self.remote.model, inputs, model_version=self.remote.version, outputs=outputs)
        values = []
        for name in output_names:
            value = result.as_numpy(name)
            if value is None:
                raise RemoteInferenceError(f"the answer has no output '{name}'")
            values.append(value)
        return values

    # --- outages -----------------------------------------------------------------------------------
    def _failure(self, why: str) -> RemoteInferenceError:
        message = f"{self.describes}: {why}"
        with self._lock:
            self._calls += 1
            self._failed += 1
            starts = self._down is None
            if starts:
                self._outage_count += 1
                self._failed_in_outage = 0
                self._down = RemoteOutage(self.card.name, self.server, message)
            self._failed_in_outage += 1
            outage = self._down
        if starts and outage is not None:
            log.error(
                "remote inference for model '%s' stopped: %s; its parts are undecided (rejected) until the server "
                "answers again",
                self.card.name,
                message,
            )
            self.outages.down(outage)
        return RemoteInferenceError(message)

    def _success(self) -> None:
        with self._lock:
            self._calls += 1
            outage, self._down = self._down, None
            failed = self._failed_in_outage
        if outage is None:
            return
        away_s = (utc_now() - outage.since).total_seconds()
        message = (
            f"{self.describes} answers again after {away_s:.1f} s away (since {iso_utc(outage.since, 'seconds')}); "
            f"{failed} inference(s) failed meanwhile"
        )
        log.warning("remote inference for model '%s' is back: %s", self.card.name, message)
        self.outages.up(self.card.name, message)

    def stats(self) -> RemoteStats:
        with self._lock:
            since = self._down.since if self._down is not None else None
            return RemoteStats(self._calls, self._failed, self._outage_count, since)

    # --- clients -----------------------------------------------------------------------------------
    def _call_timeout(self) -> dict[str, float]:
        return {"client_timeout": self.timeout_ms / 1000.0} if self.remote.protocol == "grpc" else {}

    def _metadata_kwargs(self) -> dict[str, Any]:
        return {**self._call_timeout(), "as_json": True} if self.remote.protocol == "grpc" else {}

    def _index_kwargs(self) -> dict[str, Any]:
        return {**self._call_timeout(), "as_json": True} if self.remote.protocol == "grpc" else {}

    def _client(self) -> Any:
        if self._closed:
            raise RemoteInferenceError(f"{self.describes}: the session is closed")
        if self.remote.protocol == "grpc":
            with self._lock:
                if self._grpc is None:
                    self._grpc = _grpc_client(self.remote.url)
                return self._grpc
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.http as httpclient

            timeout_s = self.timeout_ms / 1000.0
            client = httpclient.InferenceServerClient(
                self.remote.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close the connections (a closed session refuses to run)."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
            grpc, self._grpc = self._grpc, None
        for client in [*clients, *([grpc] if grpc is not None else [])]:
            try:
                client.close()
            except Exception:
                log.debug("closing a client of %s failed", self.server, exc_info=True)


def _grpc_client(url: str) -> Any:
    import tritonclient.grpc as grpcclient

    # tritonclient's own defaults, plus a short reconnect backoff: a server back after a restart is used
    # within a second, not after gRPC's default of up to two minutes.
    options = [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", GRPC_RECONNECT_MAX_MS),
    ]
    return grpcclient.InferenceServerClient(url, channel_args=options)


def _describe_file(onnx_path: Path) -> tuple[list[TensorInfo], list[TensorInfo], dict[str, str]]:
    """model.onnx's inputs, outputs and metadata, read by onnxruntime without optimising it (then let go)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"{onnx_path}: onnxruntime cannot read it: {exc}") from exc
    inputs = [TensorInfo(i.name, list(i.shape), i.type) for i in session.get_inputs()]
    outputs = [TensorInfo(o.name, list(o.shape), o.type) for o in session.get_outputs()]
    return inputs, outputs, dict(session.get_modelmeta().custom_metadata_map)


def _metadata_dict(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ModelError(f"unexpected model metadata {type(answer).__name__}")
    return answer


def _tensor(entry: Mapping[str, Any]) -> TensorInfo:
    # -1: a dimension the server lets vary, as onnxruntime's None.
    shape: list[int | str | None] = [int(d) if int(d) >= 0 else None for d in entry.get("shape", [])]
    return TensorInfo(str(entry.get("name", "")), shape, str(entry.get("datatype", "")))


def _why(exc: BaseException) -> str:
    """An exception as one line: tritonclient's message, else the type and text."""
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    text = " ".join(str(text).split())
    return text or type(exc).__name__
