"""The station as a Sparkplug B edge node: one device per camera, a DDATA per result.

Messages (topic namespace `spBv1.0/<group>/<type>/<edge node>[/<camera>]`, specification 3.0):

- `NDEATH` is the MQTT will of each session (QoS 1) and carries that session's `bdSeq`; the NBIRTH of the
  session carries the same value. `bdSeq` goes up by one (0–255, wrapping) with each new session. On a
  clean stop the node publishes its NDEATH itself (a will is only sent for a lost connection).
- After each connect: `NBIRTH` (seq 0: bdSeq, `Node Control/Rebirth`, the station's UNS path), then one
  `DBIRTH` per camera with every metric and its latest value; then a `DDATA` per result. `seq` counts every
  message of the node from the NBIRTH, 0–255, wrapping.
- An `NCMD` with `Node Control/Rebirth` true makes the node send its births again (same session, same bdSeq).

The result sink (`__call__`) only appends to a bounded queue: the station's inspection never waits for
the broker. One sender thread owns the sequence counter and publishes everything, so births and data go out
in order; paho's network thread only reports connects, disconnects and commands.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from lineinspect import __version__
from lineinspect.core.clock import utc_now
from lineinspect.core.result import Result, Verdict
from lineinspect.errors import ConfigError
from lineinspect.line.mqtt import MqttSettings, tls_context
from lineinspect.line.sparkplug.payload import DataType, Metric, MetricValue, decode, encode, epoch_ms
from lineinspect.line.sparkplug.settings import SparkplugSettings

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
_WAKE_S = 0.5  # the sender looks at its state at least this often (a missed wake costs at most this)


@dataclass(frozen=True, slots=True)
class BrokerLink:
    """Where the node connects and as whom (the password already read from its environment variable)."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    reconnect_min_delay_s: int = 1
    reconnect_max_delay_s: int = 30


@dataclass(frozen=True, slots=True)
class SparkplugStats:
    connected: bool
    bd_seq: int | None  # the present session's (None: never connected)
    births: int  # NBIRTHs sent (first births and rebirths)
    data_sent: int  # DDATA messages
    dropped_full: int  # results dropped because the queue was full
    not_sent_offline: int  # results waiting when a new birth carried the latest values instead


@dataclass(frozen=True, slots=True)
class Topics:
    group_id: str
    edge_node_id: str

    def node(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device(self, kind: str, camera_id: str) -> str:
        return f"{self.node(kind)}/{camera_id}"


# A camera device's result metrics, in this order (names and data types are fixed by its DBIRTH).
RESULT_METRICS: tuple[tuple[str, DataType], ...] = (
    ("Result/Id", DataType.STRING),
    ("Result/Verdict", DataType.STRING),
    ("Result/Undecided Kind", DataType.STRING),
    ("Result/Reason", DataType.STRING),
    ("Result/Score", DataType.DOUBLE),
    ("Result/Part Id", DataType.STRING),
    ("Result/Trigger Id", DataType.UINT64),
    ("Result/Sequence", DataType.UINT64),
    ("Result/Recipe", DataType.STRING),
    ("Result/Defects Counted", DataType.UINT32),
    ("Result/Decided At", DataType.DATETIME),
    ("Result/Processing ms", DataType.DOUBLE),
    ("Result/Simulated", DataType.BOOLEAN),
)


def result_metrics(result: Result) -> list[Metric]:
    """A result as its camera device's metrics (null where the result has no value), timestamped when decided."""
    timings = result.timings_ms
    values: tuple[MetricValue, ...] = (
        result.result_id,
        result.verdict.value,
        result.undecided_kind.value if result.undecided_kind is not None else None,
        result.reason,
        result.score,
        result.part_id,
        result.trigger_id,
        result.sequence,
        result.recipe_id,
        sum(1 for f in result.findings if f.counts),
        result.decided_at,
        timings.get("end_to_end", timings.get("total")),
        result.simulated,
    )
    at = epoch_ms(result.decided_at)
    return [Metric(name, kind, value, at) for (name, kind), value in zip(RESULT_METRICS, values, strict=True)]


class _Camera:
    """A device's latest result and part counts (owned by the sender thread once queued)."""

    def __init__(self) -> None:
        self.latest: Result | None = None
        self.counts = {v: 0 for v in Verdict}

    def metrics(self) -> list[Metric]:
        counts = [Metric(f"Parts/{v.value.title()}", DataType.UINT64, n) for v, n in self.counts.items()]
        if self.latest is not None:
            return [*result_metrics(self.latest), *counts]
        return [*(Metric(name, kind, None) for name, kind in RESULT_METRICS), *counts]


class SparkplugNode:
    """A result sink publishing Sparkplug B; `start()` connects in the background, `close()` sends NDEATH."""

    def __init__(
        self,
        link: BrokerLink,
        *,
        group_id: str,
        edge_node_id: str,
        camera_ids: Sequence[str],
        station_path: str,
        queue_results: int = 256,
    ) -> None:
        self.link = link
        self.topics = Topics(group_id, edge_node_id)
        self.station_path = station_path
        self._cameras = {c: _Camera() for c in camera_ids}
        self._cond = threading.Condition()
        self._queue: deque[Result] = deque()
        self._queue_max = queue_results
        self._connected = False
        self._birth_due = False
        self._stopping = False
        self._bd_seq_next = 0
        self._will_bd_seq = 0
        self._session_bd_seq: int | None = None
        self._seq = 0  # owned by the sender thread
        self._births = 0
        self._data_sent = 0
        self._dropped_full = 0
        self._not_sent_offline = 0
        self._sender: threading.Thread | None = None
        self._client = self._make_client()

    # -- the result sink -------------------------------------------------------------------------------
    def __call__(self, result: Result) -> None:
        """Queue a camera result for its DDATA (never blocks; the oldest waiting one goes when full)."""
        if result.camera_id not in self._cameras:
            return  # an upload, or a camera of an earlier run's journal that this station no longer has
        with self._cond:
            if len(self._queue) >= self._queue_max:
                self._queue.popleft()
                self._dropped_full += 1
            self._queue.append(result)
            self._cond.notify()

    def stats(self) -> SparkplugStats:
        with self._cond:
            return SparkplugStats(
                self._connected,
                self._session_bd_seq,
                self._births,
                self._data_sent,
                self._dropped_full,
                self._not_sent_offline,
            )

    # -- lifetime ---------------------------------------------------------------------------------------
    def _make_client(self) -> paho.Client:
        link = self.link
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=link.client_id,
            clean_session=True,  # Sparkplug 3.0 with MQTT 3.1.1: every session is a new one, born again
            protocol=paho.MQTTv311,
            reconnect_on_failure=True,
        )
        client.reconnect_delay_set(link.reconnect_min_delay_s, link.reconnect_max_delay_s)
        if link.username is not None:
            client.username_pw_set(link.username, link.password)
        if link.ssl_context is not None:
            client.tls_set_context(link.ssl_context)
            client.tls_insecure_set(link.tls_insecure)
        self._arm_will(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _arm_will(self, client: paho.Client) -> None:
        """The NDEATH of the next session, with its bdSeq (the NBIRTH of that session repeats it)."""
        self._will_bd_seq = self._bd_seq_next
        client.will_set(self.topics.node("NDEATH"), self._death_payload(self._will_bd_seq), qos=1, retain=False)

    @staticmethod
    def _death_payload(bd_seq: int) -> bytes:
        return encode([Metric(BD_SEQ, DataType.UINT64, bd_seq)], timestamp_ms=epoch_ms(utc_now()), seq=None)

    def start(self) -> None:
        if self._sender is not None:
            raise RuntimeError("SparkplugNode already started")
        log.info(
            "Sparkplug B: edge node %s to %s:%d, devices %s",
            self.topics.node("*"),
            self.link.host,
            self.link.port,
            sorted(self._cameras),
        )
        self._sender = threading.Thread(target=self._send_loop, name="sparkplug-sender", daemon=True)
        self._sender.start()
        self._client.connect_async(self.link.host, self.link.port, keepalive=self.link.keepalive_s)
        self._client.loop_start()

    def close(self, timeout_s: float = 2.0) -> None:
        """NDEATH (when connected), disconnect, join the threads (bounded by `timeout_s` each)."""
        sender = self._sender
        if sender is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        sender.join(timeout_s)
        with self._cond:
            connected, bd_seq = self._connected, self._session_bd_seq
        if connected and bd_seq is not None:
            info = self._client.publish(self.topics.node("NDEATH"), self._death_payload(bd_seq), qos=1)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("Sparkplug B: NDEATH not acknowledged on stop: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._sender = None

    # -- paho's network thread ---------------------------------------------------------------------------
    def _on_connect(
        self, client: paho.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        if reason.is_failure:
            log.warning("Sparkplug B: %s:%d refused the connection: %s", self.link.host, self.link.port, reason)
            return
        client.subscribe(self.topics.node("NCMD"), qos=1)
        with self._cond:
            self._session_bd_seq = self._will_bd_seq
            self._bd_seq_next = (self._will_bd_seq + 1) % 256
            self._connected = True
            self._birth_due = True
            self._cond.notify()
        self._arm_will(client)  # for the next session; this one keeps the will it connected with

    def _on_disconnect(
        self, _client: paho.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
        if was and not self._stopping:
            log.warning("Sparkplug B: disconnected from %s:%d (%s)", self.link.host, self.link.port, reason)

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        try:
            command = decode(bytes(message.payload))
        except ValueError as exc:
            log.warning("Sparkplug B: ignored NCMD on %s: %s", message.topic, exc)
            return
        if command.metrics.get(REBIRTH) is True:
            log.info("Sparkplug B: rebirth requested")
            with self._cond:
                self._birth_due = True
                self._cond.notify()
        else:
            log.info("Sparkplug B: NCMD without a rebirth request ignored (metrics %s)", sorted(command.metrics))

    # -- the sender thread --------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._connected and (self._birth_due or self._queue)):
                    self._cond.wait(_WAKE_S)
                if self._stopping:
                    return
                birth, bd_seq = self._birth_due, self._session_bd_seq
                self._birth_due = False
                results = list(self._queue)
                self._queue.clear()
                if birth:
                    self._not_sent_offline += len(results)
            try:
                for result in results:  # the births below carry them when a birth is due
                    camera = self._cameras[result.camera_id or ""]
                    camera.latest = result
                    camera.counts[result.verdict] += 1
                    if not birth:
                        self._publish_data(result, camera)
                if birth and bd_seq is not None:
                    self._publish_births(bd_seq)
            except Exception:  # a broken message must never end the node's thread
                log.exception("Sparkplug B: publishing failed")

    def _publish(self, topic: str, metrics: list[Metric]) -> None:
        payload = encode(metrics, timestamp_ms=epoch_ms(utc_now()), seq=self._next_seq())
        self._client.publish(topic, payload, qos=0)

    def _publish_births(self, bd_seq: int) -> None:
        self._seq = 0
        self._publish(
            self.topics.node("NBIRTH"),
            [
                Metric(BD_SEQ, DataType.UINT64, bd_seq),
                Metric(REBIRTH, DataType.BOOLEAN, False),
                Metric("Properties/Station", DataType.STRING, self.station_path),
                Metric("Properties/Software", DataType.STRING, f"lineinspect {__version__}"),
            ],
        )
        for camera_id, camera in self._cameras.items():
            self._publish(self.topics.device("DBIRTH", camera_id), camera.metrics())
        with self._cond:
            self._births += 1

    def _publish_data(self, result: Result, camera: _Camera) -> None:
        counts = Metric(f"Parts/{result.verdict.value.title()}", DataType.UINT64, camera.counts[result.verdict])
        self._publish(self.topics.device("DDATA", result.camera_id or ""), [*result_metrics(result), counts])
        with self._cond:
            self._data_sent += 1


def broker_link(
    settings: SparkplugSettings,
    station_mqtt: MqttSettings,
    *,
    station_id: str,
    station_dir: Path,
    environ: Mapping[str, str],
) -> BrokerLink:
    """The node's broker: `sparkplug.host` and its credentials, else the station's own broker (`mqtt:`)."""
    client_id = settings.client_id or f"lineinspect-{station_id}-spb"
    timing = {
        "keepalive_s": settings.keepalive_s,
        "reconnect_min_delay_s": settings.reconnect_min_delay_s,
        "reconnect_max_delay_s": settings.reconnect_max_delay_s,
    }
    if settings.host is None:
        tls = station_mqtt.tls
        return BrokerLink(
            station_mqtt.host,
            station_mqtt.port,
            client_id,
            station_mqtt.username,
            station_mqtt.password(environ),
            tls_context(tls, station_dir) if tls is not None else None,
            bool(tls and tls.insecure),
            **timing,
        )
    context = None
    if settings.tls is not None:
        try:
            context = tls_context(settings.tls, station_dir)
        except ConfigError as exc:  # its messages name the mqtt: section's fields
            raise ConfigError(str(exc).replace("mqtt.tls.", "sparkplug.tls.")) from exc
    return BrokerLink(
        settings.host,
        settings.port,
        client_id,
        settings.username,
        settings.password(environ),
        context,
        bool(settings.tls and settings.tls.insecure),
        **timing,
    )
