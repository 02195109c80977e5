"""A real EMQX Neuron gateway as a test peer, built by `make neuron` into a cache folder outside the checkout.

`NeuronPeer` runs the cached binary from its own working folder (Neuron opens
config/, persistence/ and logs/ relative to its cwd) with its REST API on a free
loopback port, and configures it through that API the way a plant commissions
it: MQTT north apps on the test's Mosquitto and Modbus TCP south nodes with a
group of coil tags each, the apps subscribed to the groups. Nodes persist in the
working folder, so `start()` after `kill()` brings the same gateway back.

Only one Neuron runs per machine (it flocks /tmp/neuron.pid); every wait is
bounded and `close()` always kills the process.

`neuron_binary_or_skip()` skips a test, saying which path is missing and which
log to read, where the vendored sources or the built binary are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mosquitto import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
VENDOR_DIR = REPO_ROOT.parent / "shared" / "vendor" / "neuron"
CACHE_ENV = "LINEINSPECT_NEURON_CACHE"  # the Makefile's NEURON_CACHE, handed to pytest

# Neuron's REST codes for the tags of a group (include/neuron/tag.h, neu_type_e).
TAG_TYPE_BIT = 11
TAG_READ = 1
TAG_READ_WRITE = 3
NODE_RUNNING = 3  # node/state "running": NEU_NODE_RUNNING_STATE_RUNNING
LINK_CONNECTED = 1  # node/state "link": NEU_NODE_LINK_STATE_CONNECTED


def neuron_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lineinspect" / "neuron")


def neuron_binary_or_skip() -> Path:
    """The built Neuron binary; skips the test (naming what is missing) where there is none."""
    if not (VENDOR_DIR / "build.sh").is_file():
        pytest.skip(
            f"{VENDOR_DIR} is absent (no Neuron sources to build): the real-Neuron tests skip; "
            "tests/integration/test_reject_neuron.py still checks the protocol"
        )
    cache = neuron_cache()
    binary = cache / "build" / "neuron"
    if not binary.is_file():
        pytest.skip(
            f"Neuron is not built: {binary} is missing. `make neuron` builds it (NEURON_CACHE={cache}); "
            f"if it failed, read {cache}/build.log and the step logs in {cache}/logs/"
        )
    return binary


@dataclass(frozen=True)
class CoilTag:
    """A BIT tag on a Modbus coil; `coil` is the 0-based protocol address (ModbusPlc's numbering)."""

    name: str
    coil: int
    writable: bool = True

    def rest_body(self) -> dict[str, Any]:
        # `1!0000NN`: unit 1, area 0 (coils), PLC address NN; with address_base 1 that is protocol address NN - 1.
        return {
            "name": self.name,
            "address": f"1!{self.coil + 1:06d}",
            "attribute": TAG_READ_WRITE if self.writable else TAG_READ,
            "type": TAG_TYPE_BIT,
        }


@dataclass(frozen=True)
class SouthNode:
    """A Modbus TCP south node with one group of coil tags."""

    node: str
    group: str
    modbus_port: int
    tags: tuple[CoilTag, ...]
    expect_link: bool = True  # False: a PLC that is not there (the node runs, its link stays down)


@dataclass(frozen=True)
class NorthApp:
    """An MQTT north app; write topics None: Neuron's defaults /neuron/<name>/write/req|resp.

    `subscribes_groups` False: the app is subscribed to no group (Neuron 2.15 still serves its writes and reads).
    """

    name: str
    write_request_topic: str | None = None
    write_response_topic: str | None = None
    subscribes_groups: bool = True


@dataclass
class NeuronPeer:
    """One Neuron: `start()` runs it, `configure()` adds the apps and nodes, `wait_ready()` waits until it serves."""

    binary: Path
    work_dir: Path
    broker_host: str
    broker_port: int
    norths: tuple[NorthApp, ...]
    souths: tuple[SouthNode, ...]
    rest_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _token: str | None = None

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    # --- process ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Run Neuron from its working folder and wait (bounded) until its REST API answers and a login works."""
        if not (self.work_dir / "config").exists():
            self._prepare_work_dir()
        out = (self.work_dir / "neuron.out").open("ab")
        try:
            self.process = subprocess.Popen([str(self.binary)], cwd=self.work_dir, stdout=out, stderr=out)
        finally:
            out.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Neuron exited at start with code {self.process.returncode} (255: another Neuron runs on this "
                    f"machine and holds /tmp/neuron.pid): {self.output_tail()}"
                )
            try:
                self._token = None
                self._token = str(self._call("POST", "login", {"name": "admin", "pass": "0000"})["token"])
                return
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Neuron's REST API on 127.0.0.1:{self.rest_port} did not answer a login within "
                        f"{timeout_s} s: {self.output_tail()}"
                    ) from None
                time.sleep(0.05)

    def _prepare_work_dir(self) -> None:
        build = self.binary.parent
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "persistence"):
            (self.work_dir / sub).mkdir(exist_ok=True)
        shutil.copytree(build / "config", self.work_dir / "config")
        # A symlink: Neuron cuts --plugin_dir to 63 characters, and ./plugins is its default.
        (self.work_dir / "plugins").symlink_to(build / "plugins")
        settings_file = self.work_dir / "config" / "neuron.json"
        settings = json.loads(settings_file.read_text())
        settings.update(ip="127.0.0.1", port=self.rest_port)  # no command-line flag sets the REST port
        settings_file.write_text(json.dumps(settings, indent=1))

    def kill(self) -> None:
        """SIGKILL, as a crashed or powered-off gateway."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def close(self, timeout_s: float = 8.0) -> None:
        """SIGTERM (Neuron takes about 5 s to exit), SIGKILL after `timeout_s`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        self.kill()

    def output_tail(self, chars: int = 1500) -> str:
        text = ""
        for path in (self.work_dir / "neuron.out", self.log_dir / "neuron.log"):
            if path.exists():
                text += f"\n--- {path}\n" + path.read_text(errors="replace")[-chars:]
        return text or "(no output)"

    # --- REST ---------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}/api/v2/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"Neuron REST {method} {path} {body}: HTTP {exc.code} {exc.read()!r}") from exc
        if answer.get("error", 0) != 0:
            raise RuntimeError(f"Neuron REST {method} {path} {body}: error {answer['error']}")
        return dict(answer)

    def add_south(self, south: SouthNode) -> None:
        self._call("POST", "node", {"name": south.node, "plugin": "Modbus TCP"})
        params = {
            "connection_mode": 0,  # Neuron is the client
            "host": "127.0.0.1",
            "port": south.modbus_port,
            "timeout": 1000,
            "interval": 20,
            "check_header": 0,
            "device_degrade": 0,
            "max_retries": 0,
            "retry_interval": 0,
            "endianess": 1,
            "endianess_64": 1,
            "address_base": 1,
        }
        self._call("POST", "node/setting", {"node": south.node, "params": params})
        self._call("POST", "group", {"node": south.node, "group": south.group, "interval": 1000})
        self._call(
            "POST", "tags", {"node": south.node, "group": south.group, "tags": [t.rest_body() for t in south.tags]}
        )

    def configure(self) -> None:
        """Each north app on the broker, each south node, the apps that subscribe groups subscribed to each group."""
        for north in self.norths:
            self.add_north(north)
        for south in self.souths:
            self.add_south(south)
            for north in self.norths:
                if north.subscribes_groups:
                    self.subscribe(north, south)

    def add_north(self, north: NorthApp) -> None:
        """An MQTT north app on the broker (values-format JSON, QoS 0, no offline cache)."""
        self._call("POST", "node", {"name": north.name, "plugin": "MQTT"})
        params: dict[str, Any] = {
            "client-id": f"neuron-{north.name}",
            "qos": 0,
            "format": 0,  # values-format (JSON); with protobuf Neuron drops JSON write requests unanswered
            "offline-cache": False,
            "host": self.broker_host,
            "port": self.broker_port,
            "username": "",
            "password": "",
            "ssl": False,
        }
        if north.write_request_topic is not None:
            params["write-req-topic"] = north.write_request_topic
        if north.write_response_topic is not None:
            params["write-resp-topic"] = north.write_response_topic
        self._call("POST", "node/setting", {"node": north.name, "params": params})

    def subscribe(self, north: NorthApp, south: SouthNode) -> None:
        topic = f"/neuron/{north.name}/{south.node}/{south.group}"
        self._call(
            "POST",
            "subscribe",
            {"app": north.name, "driver": south.node, "group": south.group, "params": {"topic": topic}},
        )

    def read_tags(self, south: SouthNode) -> dict[str, dict[str, Any]]:
        """The group's tags as Neuron last read them from the PLC: name → {"name", "value"} or {"name", "error"}."""
        answer = self._call("POST", "read", {"node": south.node, "group": south.group})
        return {str(tag["name"]): tag for tag in answer.get("tags", [])}

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until every node runs and is linked (an absent PLC's node: runs) and the first app answers
        a group read over MQTT."""
        want_link = {**{n.name: True for n in self.norths}, **{s.node: s.expect_link for s in self.souths}}
        deadline = time.monotonic() + timeout_s
        states: dict[str, Any] = {}
        while not all(
            name in states
            and states[name]["running"] == NODE_RUNNING
            and (not link or states[name]["link"] == LINK_CONNECTED)
            for name, link in want_link.items()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Neuron nodes not running/linked within {timeout_s} s: {states}{self.output_tail()}"
                )
            time.sleep(0.05)
            states = {s["node"]: s for s in self._call("GET", "node/state").get("states", [])}
        self._wait_answering(deadline)

    def _wait_answering(self, deadline: float) -> None:
        # An app's link is up a moment before it has subscribed its request topics; a request then is lost.
        app, south = self.norths[0].name, self.souths[0]
        answered = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"neuron-peer-probe-{self.rest_port}")
        client.on_message = lambda *_: answered.set()
        client.connect(self.broker_host, self.broker_port)
        client.loop_start()
        try:
            client.subscribe(f"neuron/{app}/read/resp")
            body = json.dumps({"uuid": "neuron-peer-probe", "node": south.node, "group": south.group})
            while not answered.wait(0.1):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Neuron's app {app} did not answer a read in time{self.output_tail()}")
                client.publish(f"neuron/{app}/read/req", body)
        finally:
            client.disconnect()
            client.loop_stop()

    def restart(self) -> None:
        """Start again after `kill()`; the apps and nodes come back from the persistence folder."""
        self.start()
        self.wait_ready()


@contextmanager
def running_neuron(
    binary: Path,
    work_dir: Path,
    *,
    broker_host: str,
    broker_port: int,
    norths: tuple[NorthApp, ...],
    souths: tuple[SouthNode, ...],
) -> Iterator[NeuronPeer]:
    """A started, configured and serving Neuron; stopped (killed at the latest) on exit."""
    peer = NeuronPeer(binary, work_dir, broker_host, broker_port, norths, souths)
    try:
        peer.start()
        peer.configure()
        peer.wait_ready()
        yield peer
    finally:
        peer.close()
