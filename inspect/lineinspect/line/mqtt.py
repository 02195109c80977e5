"""MQTT: results from the outbox to the broker at QoS 1, and the station's retained status.

Topics sit under the station's UNS path (`config.StationSection.path`):
`<prefix>/result` (QoS 1, one message per part), `<prefix>/status` (retained;
`online` on every connect, `offline` on a clean stop, and the same `offline`
as last will when the process or its network dies) and
`<prefix>/camera/<id>/status` (retained).

Delivery: `ResultPublisher.publish_result` stores the result in the `Outbox`
(which stamps the station `sequence`) and returns once it is committed; one
sender thread hands stored rows to paho in sequence order, at most
`max_inflight` unacknowledged at a time, and deletes a row only after its
PUBACK (the PUBACKs it has collected in one commit). Within one process paho
keeps unacknowledged messages in memory and sends them again, in order, after a
reconnect (MQTT 3.1.1 §4.4); the sender holds back newer rows until those are
acknowledged, so the broker sees sequences in order. After a restart the outbox
is the only copy: everything still in it is published again from the oldest.
QoS 1 therefore can deliver a result twice, always with the same `result_id`
and `sequence`; consumers drop duplicates on `result_id` and spot gaps in
`sequence`.

MQTT 3.1.1 is used so any broker works, the embedded demo broker included.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect import __version__
from lineinspect.core.clock import utc_now_iso
from lineinspect.core.result import Result
from lineinspect.errors import ConfigError
from lineinspect.line.outbox import DEFAULT_MAX_ROWS, Outbox

log = logging.getLogger(__name__)

# How often the sender looks at the outbox when nothing woke it (a missed wake costs at most this).
_SENDER_POLL_S = 0.2


class MqttTls(BaseModel):
    """TLS to the broker. Relative paths are taken from the station directory."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(
        None, description="CA certificate(s), PEM, that signed the broker's certificate; default: the system CAs."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate, PEM, for brokers that require one (needs key_file)."
    )
    key_file: Path | None = Field(None, description="Private key, PEM, of cert_file (unencrypted).")
    insecure: bool = Field(
        False,
        description="Skip the check that the broker's certificate names mqtt.host (the certificate is still "
        "checked against the CA). For commissioning on an IP address without a matching certificate only.",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both for a client certificate, or neither")
        return self


class MqttSettings(BaseModel):
    """The MQTT broker the results go to. Absent from station.yaml: the demo's embedded loopback broker."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or IP address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (usually 1883, or 8883 with TLS).")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="MQTT client id; must be unique on the broker and stable across restarts (it names the "
        "persistent session). Default: lineinspect-<station id>.",
    )
    username: str | None = Field(None, description="User name for the broker; default: connect anonymously.")
    password_env: str = Field(
        "LINEINSPECT_MQTT_PASSWORD",
        min_length=1,
        description="Environment variable holding the broker password (secrets never go in station.yaml); "
        "unset: no password is sent.",
    )
    tls: MqttTls | None = Field(None, description="TLS settings; absent: plain TCP.")
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Keep-alive in seconds; a dead link is noticed after about 1.5 times this."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="Time allowed for one connection attempt, s.")
    reconnect_min_delay_s: int = Field(1, ge=1, le=3600, description="First wait before reconnecting, s.")
    reconnect_max_delay_s: int = Field(
        30, ge=1, le=3600, description="Longest wait between reconnect attempts, s (the wait doubles up to this)."
    )
    persistent_session: bool = Field(True, description="Keep the MQTT session across reconnects (clean_session false).")
    max_inflight: int = Field(
        20, ge=1, le=1000, description="Results sent and not yet acknowledged (PUBACK) at any time."
    )
    outbox_file: Path = Field(
        Path("var/outbox.sqlite"),
        description="SQLite file holding results until the broker acknowledges them; relative to the station "
        "directory. One file per station process.",
    )
    outbox_max_rows: int = Field(
        DEFAULT_MAX_ROWS,
        ge=1,
        description="Most results the outbox holds while the broker is unreachable (an alarm is raised at 80 %). "
        "When full, new parts are undecided (rejected) and an alarm is raised; none is silently dropped.",
    )
    alarm_after_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="A broker unreachable, or connected but not acknowledging results, for this long (s) raises "
        "an alarm (broker_unreachable, broker_not_acknowledging); it clears once results are acknowledged again.",
    )
    outbox_full_alarm_s: float = Field(
        3600.0,
        gt=0,
        description="Alarm (outbox_filling) when, at the rate it has grown over the last minute, the outbox "
        "would be full within this many seconds.",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> MqttSettings:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s must not be below reconnect_min_delay_s")
        return self

    def password(self, environ: Mapping[str, str]) -> str | None:
        """The password from `password_env` in `environ` (None when unset or empty)."""
        return environ.get(self.password_env) or None


@dataclass(frozen=True, slots=True)
class StationTopics:
    """The station's topics under its UNS prefix (`<enterprise>/…/lineinspect/<station>`)."""

    prefix: str

    @property
    def result(self) -> str:
        return f"{self.prefix}/result"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def camera_status(self, camera_id: str) -> str:
        return f"{self.prefix}/camera/{camera_id}/status"

    @property
    def alarm(self) -> str:
        """Alarm raised/cleared events (QoS 1, not retained); active alarms also ride on `status`."""
        return f"{self.prefix}/alarm"

    @property
    def changeover(self) -> str:
        """Every recipe changeover and model reload, accepted or refused (QoS 1, not retained)."""
        return f"{self.prefix}/changeover"

    @property
    def commands(self) -> str:
        """Commands to the station: `<prefix>/command/<name>` (recipe, reload), JSON with a `request_id`."""
        return f"{self.prefix}/command/+"

    @property
    def command_response(self) -> str:
        """The answer to each command, with its `request_id`, `ok` and a message (QoS 1, not retained)."""
        return f"{self.prefix}/command/response"

    @property
    def reject_event(self) -> str:
        """What the reject station did or, in dry run, would do (QoS 1, not retained)."""
        return f"{self.prefix}/reject/event"


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters for /metrics and /v1/status."""

    connected: bool
    published: int  # results handed to the broker for the first time by this process
    acked: int  # results acknowledged (PUBACK) and deleted from the outbox
    resent: int  # results sent again after a reconnect
    in_flight: int
    outbox_depth: int
    outbox_alarm: bool
    last_error: str | None
    disconnected_for_s: float | None = None  # None while connected
    oldest_unacked_s: float | None = None  # how long the oldest result in flight has waited for its PUBACK


def tls_context(tls: MqttTls, station_dir: Path) -> ssl.SSLContext:
    """An SSL context for the broker; bad files raise ConfigError naming the field."""

    def resolve(field: str, value: Path) -> Path:
        path = value if value.is_absolute() else station_dir / value
        if not path.is_file():
            raise ConfigError(f"mqtt.tls.{field}: {path} not found")
        return path

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        ca = resolve("ca_file", tls.ca_file)
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt.tls.ca_file: {ca} is not a PEM CA certificate ({exc})") from exc
    if tls.cert_file is not None and tls.key_file is not None:
        cert, key = resolve("cert_file", tls.cert_file), resolve("key_file", tls.key_file)
        try:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"mqtt.tls.cert_file/key_file: {cert} and {key} are not a PEM certificate and its "
                f"unencrypted private key ({exc})"
            ) from exc
    return context


class ResultPublisher:
    """Publishes stored results (QoS 1, in order) and the station's retained status.

    Args:
        settings: broker settings.
        outbox: the station's outbox; the publisher reads and acknowledges it, the caller owns (closes) it.
        topics: the station's topics.
        client_id: MQTT client id (stable across restarts: it names the persistent session).
        password: broker password (from the environment; see `MqttSettings.password`).
        station_dir: base for relative TLS file paths.

    Thread use: `publish_result`, `publish_status`, `publish_camera_status` and
    `stats` may be called from any thread; `start` and `close` from the one that owns it.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        topics: StationTopics,
        *,
        client_id: str,
        password: str | None = None,
        station_dir: Path = Path("."),
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.topics = topics
        self.client_id = client_id
        self._where = f"{settings.host}:{settings.port}"
        self._ssl_context = tls_context(settings.tls, station_dir) if settings.tls is not None else None
        self._client = self._make_client(password)

        self._events: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._state_lock = threading.Lock()  # never held while calling into paho
        self._connected = False
        self._disconnects = 0
        self._last_error: str | None = None
        self._camera_status: dict[str, str] = {}
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        # The station's status as it is now; sent on every connect, never a queued older one.
        self._status: tuple[str, dict[str, Any]] = ("online", {})
        self._disconnected_since_ns: int | None = time.monotonic_ns()
        self._oldest_unacked_ns: int | None = None
        self._closing = False
        self._published = 0
        self._acked = 0
        self._resent = 0
        # Owned by the sender thread only: mid → sequence of results handed to paho and not yet acknowledged.
        self._in_flight: dict[int, int] = {}
        self._sent_ns: dict[int, int] = {}  # mid → when it was handed to paho
        self._in_flight_count = 0
        self._sender: threading.Thread | None = None

    def _make_client(self, password: str | None) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not s.persistent_session,
            protocol=paho.MQTTv311,
            reconnect_on_failure=True,
        )
        # Our window bounds what paho holds; the extra room is for status messages. No paho queue limit:
        # a limit there would make paho refuse messages, and the outbox is the bound.
        client.max_inflight_messages_set(s.max_inflight + 16)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(s.reconnect_min_delay_s, s.reconnect_max_delay_s)
        client.connect_timeout = s.connect_timeout_s
        if s.username is not None:
            client.username_pw_set(s.username, password)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
            client.tls_insecure_set(bool(s.tls and s.tls.insecure))
        client.will_set(self.topics.status, self._status_payload("offline", reason="connection lost"), 1, True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background; a broker that is down now is retried) and sending."""
        if self._sender is not None:
            raise RuntimeError("ResultPublisher already started")
        log.info(
            "MQTT: results to %s as %s under %s (%d waiting in the outbox)",
            self._where,
            self.client_id,
            self.topics.prefix,
            self.outbox.depth(),
        )
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.client_id}", daemon=True)
        self._sender.start()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    def close(self, drain_timeout_s: float = 2.0) -> None:
        """Stop: wait up to `drain_timeout_s` for the outbox to empty, publish `offline`, disconnect.

        What is still unacknowledged stays in the outbox and is sent after the next start.
        """
        if self._sender is None:
            return
        deadline = time.monotonic() + drain_timeout_s
        while self.outbox.depth() > 0 and self._is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._closing = True
        self._events.put(("stop", 0))
        self._sender.join(timeout=10)
        if self._is_connected():
            info = self._client.publish(self.topics.status, self._status_payload("offline", reason="stopped"), 1, True)
            try:
                info.wait_for_publish(timeout=min(2.0, self.settings.connect_timeout_s))
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline status on stop: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._sender = None
        log.info("MQTT: stopped; %d results left in the outbox for the next start", self.outbox.depth())

    # -- what the station calls ------------------------------------------------------------------

    def publish_result(self, result: Result) -> Result:
        """Store `result` durably and queue it for the broker; returns it stamped with its `sequence`.

        Returns once the result is committed to the outbox (not when it reaches the broker).
        Raises OutboxFullError / OutboxError (nothing stored): the part must be treated as undecided.
        """
        stamped = self.outbox.append(result, self.topics.result)
        self._events.put(("wake", 0))
        return stamped

    def publish_status(self, state: str, **fields: Any) -> None:
        """The station's retained status (`online`, `alarm`, …) with extra JSON fields; it is the current one.

        Sent at once while connected; while not, only kept (paho would queue it, and queued older statuses
        would arrive after the one sent on reconnect and leave a stale retained value). Every connect sends
        the latest.
        """
        with self._state_lock:
            self._status = (state, dict(fields))
            connected = self._connected
        if connected:
            self._client.publish(self.topics.status, self._status_payload(state, **fields), 1, True)

    def publish_event(self, topic: str, payload: dict[str, Any]) -> None:
        """An event (alarm, dry-run reject) at QoS 1, not retained and not queued durably: results are
        the durable channel; events that happen while the broker is away are in the log and audit."""
        self._client.publish(topic, json.dumps({"at": utc_now_iso("milliseconds"), **payload}), 1, False)

    def publish_camera_status(self, camera_id: str, state: str, **fields: Any) -> None:
        """Retained status of one camera; like the station's, sent while connected and again after every connect."""
        payload = json.dumps({"state": state, "camera_id": camera_id, "at": utc_now_iso("milliseconds"), **fields})
        with self._state_lock:
            self._camera_status[camera_id] = payload
            connected = self._connected
        if connected:
            self._client.publish(self.topics.camera_status(camera_id), payload, 1, True)

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Hand every message on `topic_filter` to `handler(topic, payload)` on paho's thread (keep it quick);
        subscribed at QoS 1 on every connect. Call before `start`."""
        self._subscriptions[topic_filter] = handler

        def deliver(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            try:
                handler(msg.topic, bytes(msg.payload))
            except Exception:  # a bad handler must not take paho's network thread down
                log.exception("MQTT: handler for %s failed", msg.topic)

        self._client.message_callback_add(topic_filter, deliver)

    def stats(self) -> PublisherStats:
        now = time.monotonic_ns()
        with self._state_lock:
            down, oldest = self._disconnected_since_ns, self._oldest_unacked_ns
            return PublisherStats(
                connected=self._connected,
                published=self._published,
                acked=self._acked,
                resent=self._resent,
                in_flight=self._in_flight_count,
                outbox_depth=self.outbox.depth(),
                outbox_alarm=self.outbox.alarm,
                last_error=self._last_error,
                disconnected_for_s=None if down is None else round((now - down) / 1e9, 3),
                oldest_unacked_s=None if oldest is None else round((now - oldest) / 1e9, 3),
            )

    # -- paho callbacks (paho's network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (4, 5, 134, 135):  # bad user name or password / not authorized
                hint = (
                    f" check mqtt.username ({self.settings.username!r}) and the password in "
                    f"${self.settings.password_env}, and the broker's ACL for client id {self.client_id!r};"
                )
            self._set_error(f"broker {self._where} refused the connection: {reason_code};{hint} retrying")
            return
        with self._state_lock:
            self._connected = True
            self._disconnected_since_ns = None
            self._last_error = None
        log.info("MQTT: connected to %s (session present: %s)", self._where, flags.session_present)
        for topic_filter in self._subscriptions:
            client.subscribe(topic_filter, qos=1)
        # Not from here: paho re-sends what was in flight at the disconnect right after this callback, and an
        # older status among those would land last. The sender thread publishes the current state after them.
        self._events.put(("connected", 0))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._set_error(
            f"cannot connect to MQTT broker {self._where}: {self._diagnose()}; results wait in the outbox "
            f"({self.outbox.depth()} now) and go out once it is reachable. Check mqtt.host, mqtt.port and mqtt.tls"
        )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        with self._state_lock:
            was_connected = self._connected
            self._connected = False
            self._disconnects += 1
            if was_connected:
                self._disconnected_since_ns = time.monotonic_ns()
        if was_connected and not self._closing:
            self._set_error(f"lost the connection to MQTT broker {self._where} ({reason_code}); reconnecting")
        self._events.put(("wake", 0))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        # paho calls this holding its message lock: hand the PUBACK to the sender, never touch our state here.
        self._events.put(("ack", mid))

    # -- sender thread ---------------------------------------------------------------------------

    def _send_loop(self) -> None:
        seen_disconnects = 0
        hold = False  # newer rows wait while paho re-sends what was in flight at a disconnect
        last_handed = 0  # highest sequence handed to paho by this process
        while True:
            try:
                kind, mid = self._events.get(timeout=_SENDER_POLL_S)
                events = [(kind, mid)]
                while True:
                    try:
                        events.append(self._events.get_nowait())
                    except queue.Empty:
                        break
            except queue.Empty:
                events = []
            try:
                stop = False
                acked: list[int] = []
                for kind, mid in events:
                    if kind == "ack":
                        sequence = self._in_flight.pop(mid, None)
                        self._sent_ns.pop(mid, None)
                        if sequence is not None:  # else: a status message
                            acked.append(sequence)
                    elif kind == "connected":
                        self._publish_current()
                    elif kind == "stop":
                        stop = True
                if acked:
                    # Every PUBACK collected so far in one commit, not one fsync each.
                    self.outbox.ack_many(acked)
                    with self._state_lock:
                        self._acked += len(acked)
                if stop:
                    return
                with self._state_lock:
                    connected, disconnects = self._connected, self._disconnects
                if disconnects != seen_disconnects:
                    seen_disconnects = disconnects
                    if self._in_flight:
                        hold = True
                        with self._state_lock:
                            self._resent += len(self._in_flight)
                if hold and not self._in_flight:
                    hold = False
                if connected and not hold:
                    last_handed = self._fill_window(last_handed)
                oldest = min(self._sent_ns.values(), default=None)
                with self._state_lock:
                    self._in_flight_count = len(self._in_flight)
                    self._oldest_unacked_ns = oldest
            except Exception as exc:  # the sender must outlive any one bad moment (disk error, …)
                log.exception("MQTT sender: %s", exc)
                self._set_error(f"MQTT sender: {exc}")
                time.sleep(_SENDER_POLL_S)

    def _fill_window(self, last_handed: int) -> int:
        room = self.settings.max_inflight - len(self._in_flight)
        if room <= 0:
            return last_handed
        for entry in self.outbox.pending(room, after_sequence=last_handed):
            info = self._client.publish(entry.topic, entry.payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # Not taken by paho: leave it in the outbox and try again on the next round.
                self._set_error(f"MQTT publish of sequence {entry.sequence} refused: {paho.error_string(info.rc)}")
                break
            # NO_CONN: paho keeps the message and sends it on reconnect, in order; it is in flight.
            self._in_flight[info.mid] = entry.sequence
            self._sent_ns[info.mid] = time.monotonic_ns()
            last_handed = entry.sequence
            with self._state_lock:
                self._published += 1
        return last_handed

    def _publish_current(self) -> None:
        """Sender thread, after a connect: the station's current status and every camera's latest status."""
        with self._state_lock:
            state, fields = self._status
            cameras = list(self._camera_status.items())
        self._client.publish(self.topics.status, self._status_payload(state, **fields), 1, True)
        for camera_id, payload in cameras:
            self._client.publish(self.topics.camera_status(camera_id), payload, 1, True)

    # -- small parts -----------------------------------------------------------------------------

    def _is_connected(self) -> bool:
        with self._state_lock:
            return self._connected

    def _set_error(self, message: str) -> None:
        with self._state_lock:
            repeated = message == self._last_error
            self._last_error = message
        # Each new problem is logged once; retries of the same one only at debug level.
        log.log(logging.DEBUG if repeated else logging.ERROR, "MQTT: %s", message)

    def _diagnose(self) -> str:
        """Why a connection attempt fails, in words (paho does not pass the exception on)."""
        try:
            with socket.create_connection(
                (self.settings.host, self.settings.port), timeout=self.settings.connect_timeout_s
            ) as sock:
                if self._ssl_context is not None:
                    with self._ssl_context.wrap_socket(sock, server_hostname=self.settings.host):
                        pass
        except ssl.SSLError as exc:
            return f"TLS handshake failed: {exc}"
        except socket.gaierror as exc:
            return f"host name {self.settings.host!r} does not resolve ({exc.strerror})"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
        return "the connection attempt failed"

    def _status_payload(self, state: str, **fields: Any) -> str:
        return json.dumps(
            {
                "state": state,
                "station": self.topics.prefix,
                "version": __version__,
                "at": utc_now_iso("milliseconds"),
                **fields,
            }
        )
