"""EMQX Neuron reject backend: tag writes and reads through Neuron's MQTT north app.

Write: `{"uuid", "node", "group", "tag", "value"}` on the north app's Write
Request Topic (default `/neuron/<app>/write/req`); Neuron answers
`{"uuid", "error": 0}` on the Write Response Topic (default
`/neuron/<app>/write/resp`). Read: `{"uuid", "node", "group"}`, answered with
`{"uuid", "tags": [{"name", "value"} | {"name", "error"}]}`. The read topics are
fixed by Neuron and differ between releases: Neuron's MQTT docs and older
releases use `/neuron/<app>/read/req|resp`, Neuron 2.15 (checked against the
real gateway, tests/integration/test_reject_neuron_real.py) subscribes
`neuron/<app>/read/req` and answers on `neuron/<app>/read/resp`, without the
leading slash. Unless `read_request_topic` is set, a read goes to both and the
first answer counts. A read Neuron refuses (unknown node or group) is answered
`{"uuid", "error"}` on the *write* response topic. A missing answer or a
non-zero error raises ActuatorError naming the code's meaning where known.

A write's `error: 0` says less than it seems: Neuron's Modbus driver answers
once the request is on the wire, before the PLC's reply, so a write the PLC
refuses (a wrong coil address) is answered 0 too. The start-up read therefore
refuses an output tag the PLC refuses to read, and warns about other tags
Neuron cannot read from the PLC.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from lineinspect.line.reject.actuator import ActuatorError, InputStates, Output, VerdictCode
from lineinspect.line.reject.settings import NeuronBackend

log = logging.getLogger(__name__)

PLC_REFUSED_READ = 3000  # Neuron's "plugin read failure": the PLC answered the read with an error

# Neuron error codes a reject write meets (from Neuron's published error-code list).
NEURON_ERRORS: dict[int, str] = {
    1001: "Neuron internal error",
    1002: "request body invalid",
    1003: "request parameter invalid",
    2003: "node not exist (check reject.backend.node)",
    2006: "node not ready",
    2008: "node not running (start the south node in Neuron)",
    2106: "group not exist (check reject.backend.group)",
    2201: "tag not exist (check the *_tag names in reject.backend)",
    3000: "plugin read failure (the PLC refused the read: check the tag's address)",
    3001: "plugin write failure (the PLC refused the write)",
    3002: "plugin disconnected (Neuron cannot reach the PLC)",
    3004: "tag not allowed to write (make the tag writable in Neuron)",
    3007: "tag type mismatch",
    3020: "tag value out of range",
}


def neuron_error_meaning(code: int) -> str:
    return NEURON_ERRORS.get(code, "see Neuron's error-code list")


class NeuronActuator:
    def __init__(self, settings: NeuronBackend, *, client_id: str | None = None) -> None:
        self._s = settings
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"lineinspect-reject-{uuid.uuid4().hex[:8]}"
        )
        user = os.environ.get(settings.username_env) if settings.username_env else None
        if user:
            password = os.environ.get(settings.password_env) if settings.password_env else None
            self._client.username_pw_set(user, password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._subscribed = threading.Event()
        self._started = False
        self._tags = settings.output_addresses()
        self._inputs = settings.input_addresses()
        self._read_requests, self._read_responses = _read_topics(settings)

    @property
    def describe(self) -> str:
        return f"neuron app {self._s.app} via mqtt {self._s.host}:{self._s.port} node {self._s.node}/{self._s.group}"

    # paho callbacks (its network thread) ------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            return
        # Subscribing here makes a reconnect resubscribe.
        client.subscribe([(topic, 1) for topic in (self._s.write_response, *self._read_responses)])

    def _on_subscribe_done(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        with self._lock:
            waiter = self._waiting.get(str(body.get("uuid")))
        if waiter is not None:
            waiter[1].append(body)
            waiter[0].set()

    # requests ---------------------------------------------------------------------------------------
    def _request(
        self, what: str, topics: tuple[str, ...], response_topics: tuple[str, ...], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish the request on each of `topics` and return the first answer carrying its uuid."""
        request_id = str(uuid.uuid4())
        done = threading.Event()
        answers: list[dict[str, Any]] = []
        with self._lock:
            self._waiting[request_id] = (done, answers)
        try:
            payload = json.dumps({"uuid": request_id, **body})
            for topic in topics:
                info = self._client.publish(topic, payload, qos=0)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise ActuatorError(
                        f"{self.describe}: {what}: cannot publish to {topic} ({mqtt.error_string(info.rc)}); "
                        "the MQTT broker is not connected"
                    )
            if not done.wait(self._s.response_timeout_ms / 1000.0):
                also = f" (nor on {', '.join(response_topics[1:])})" if len(response_topics) > 1 else ""
                raise ActuatorError(
                    f"{self.describe}: {what}: Neuron did not answer on {response_topics[0]} within "
                    f"{self._s.response_timeout_ms} ms{also} (reject.backend.response_timeout_ms). Check that the "
                    f"north app '{self._s.app}' is running and connected to this broker, that its Upload Format "
                    "is a JSON one (not protobuf) and that its request/response topics match reject.backend"
                )
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        return answers[0]

    def _write_tag(self, tag: str, value: int | bool) -> None:
        body = {"node": self._s.node, "group": self._s.group, "tag": tag, "value": int(value)}
        answer = self._request(
            f"writing tag {tag}={int(value)}", (self._s.write_request,), (self._s.write_response,), body
        )
        error = answer.get("error", 0)
        if error != 0:
            code = int(error) if isinstance(error, int | float) else -1
            raise ActuatorError(
                f"{self.describe}: writing tag {tag}={int(value)} failed: Neuron error {error} "
                f"({neuron_error_meaning(code)})"
            )

    def check_reachable(self) -> None:
        self._client.on_subscribe = self._on_subscribe_done
        try:
            self._client.connect(self._s.host, self._s.port, keepalive=30)
        except OSError as exc:
            raise ActuatorError(
                f"{self.describe}: cannot connect to the MQTT broker ({exc}). Check reject.backend.host and "
                "reject.backend.port"
            ) from exc
        self._client.loop_start()
        self._started = True
        if not self._subscribed.wait(self._s.response_timeout_ms / 1000.0):
            raise ActuatorError(f"{self.describe}: the broker did not confirm the subscription to Neuron's responses")
        # A read of the group proves that the north app answers and that node and group exist, without
        # switching anything.
        self._check_readable(self._read_group("checking the gateway"))

    def _check_readable(self, answer: dict[str, Any]) -> None:
        """Each mapped tag the group read could not get from the PLC. Neuron would answer writes to it with 0
        whether the PLC takes them or not, so an output tag the PLC refuses to read (error 3000: a wrong address,
        as a Modbus backend's read-back finds) is refused now rather than passing bad parts silently; any other
        read error is logged."""
        errors = {
            str(entry["name"]): entry["error"]
            for entry in answer.get("tags", [])
            if isinstance(entry, dict) and "name" in entry and "error" in entry
        }
        outputs = [tag for tag in self._tags.values() if tag is not None]
        for tag in dict.fromkeys(outputs + list(self._inputs.values())):
            if tag in errors:
                code = int(errors[tag]) if isinstance(errors[tag], int | float) else -1
                if code == PLC_REFUSED_READ and tag in outputs:
                    raise ActuatorError(
                        f"{self.describe}: the PLC refuses to read output tag {tag} (Neuron error {code}: "
                        f"{neuron_error_meaning(code)}); Neuron would answer writes to it with 0 whether the PLC "
                        "takes them or not. Fix the tag's address in Neuron's south node"
                    )
                log.warning(
                    "%s: tag %s reads with Neuron error %s (%s); Neuron answers writes to it with error 0 once "
                    "they are sent, whether the PLC takes them or not",
                    self.describe,
                    tag,
                    errors[tag],
                    neuron_error_meaning(code),
                )

    def _read_group(self, what: str) -> dict[str, Any]:
        body = {"node": self._s.node, "group": self._s.group}
        answer = self._request(what, self._read_requests, self._read_responses, body)
        error = answer.get("error", 0)
        if error:
            code = int(error) if isinstance(error, int | float) else -1
            raise ActuatorError(f"{self.describe}: {what}: Neuron error {error} ({neuron_error_meaning(code)})")
        return answer

    def set_output(self, output: Output, on: bool) -> None:
        tag = self._tags[output]
        if tag is None:
            raise ActuatorError(f"{self.describe}: no tag mapped for {output.value}; set it in reject.backend")
        self._write_tag(tag, on)

    def write_verdict(self, code: VerdictCode, part_number: int) -> None:
        if self._s.part_number_tag is not None:
            self._write_tag(self._s.part_number_tag, part_number & 0xFFFFFFFF)
        assert self._s.verdict_tag is not None
        self._write_tag(self._s.verdict_tag, int(code))

    def read_inputs(self) -> InputStates:
        if not self._inputs:
            return InputStates()
        answer = self._read_group("reading inputs")
        by_tag: dict[str, Any] = {}
        for entry in answer.get("tags", []):
            if isinstance(entry, dict) and "name" in entry:
                if "error" in entry:
                    raise ActuatorError(
                        f"{self.describe}: reading tag {entry['name']}: Neuron error {entry['error']} "
                        f"({neuron_error_meaning(int(entry['error']))})"
                    )
                by_tag[str(entry["name"])] = entry.get("value")
        values: dict[str, bool] = {}
        for name, tag in self._inputs.items():
            if tag not in by_tag:
                raise ActuatorError(f"{self.describe}: tag {tag} ({name}) missing from group {self._s.group}")
            values[name] = bool(by_tag[tag])
        return InputStates(**values)

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False


def _read_topics(settings: NeuronBackend) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(request topics, response topics) of a group read; both spellings unless the settings name them."""
    if settings.read_request_topic is not None or settings.read_response_topic is not None:
        return (settings.read_request,), (settings.read_response,)
    documented = (settings.read_request, settings.read_response)  # /neuron/<app>/read/req|resp
    neuron_2_15 = tuple(topic.removeprefix("/") for topic in documented)
    return (documented[0], neuron_2_15[0]), (documented[1], neuron_2_15[1])
