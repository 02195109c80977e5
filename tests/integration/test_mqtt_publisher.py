"""Results to a real Mosquitto: broker outages, a killed station, last will, TLS and passwords, bad settings."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import lineinspect
from lineinspect.errors import ConfigError
from lineinspect.line.mqtt import MqttSettings, MqttTls, ResultPublisher, StationTopics
from lineinspect.line.outbox import Outbox
from tests.helpers.certs import make_tls_files
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.results import make_result
from tests.helpers.subscriber import Subscriber, assert_complete_in_order
from tests.helpers.waiting import wait_for

PREFIX = "acme/plant1/area1/line1/cell1/lineinspect/station1"
TOPICS = StationTopics(PREFIX)
REPO = Path(__file__).resolve().parents[2]
# Broker settings that keep a test short: reconnect every second.
FAST = {"reconnect_min_delay_s": 1, "reconnect_max_delay_s": 1, "keepalive_s": 5, "connect_timeout_s": 2}
# Mosquitto that saves sessions at once, so a SIGKILLed broker comes back with the subscriber's subscription
# (the test checks our publisher, not the broker's own crash durability). `user root`: keep file access when
# the tests run as root (ignored otherwise).
SAVE_SESSIONS = ["autosave_interval 1", "autosave_on_changes true", "user root"]


@contextmanager
def broker(**kwargs: object) -> Iterator[Mosquitto]:
    b = Mosquitto(**kwargs)  # type: ignore[arg-type]
    b.start()
    try:
        yield b
    finally:
        b.close()


@contextmanager
def subscriber(port: int) -> Iterator[Subscriber]:
    sub = Subscriber(port, f"{PREFIX}/#").start()
    try:
        yield sub
    finally:
        sub.close()


@contextmanager
def publisher(
    settings: MqttSettings, outbox_path: Path, station_dir: Path = Path("."), password: str | None = None
) -> Iterator[ResultPublisher]:
    with Outbox(outbox_path) as outbox:
        pub = ResultPublisher(
            settings, outbox, TOPICS, client_id="lineinspect-station1", password=password, station_dir=station_dir
        )
        pub.start()
        try:
            yield pub
        finally:
            pub.close()


def test_every_result_arrives_in_order_when_broker_is_killed_mid_run(tmp_path: Path) -> None:
    with broker(extra_lines=SAVE_SESSIONS) as mosquitto, subscriber(mosquitto.port) as sub:
        settings = MqttSettings(port=mosquitto.port, **FAST)  # type: ignore[arg-type]
        with publisher(settings, tmp_path / "outbox.sqlite") as pub:
            stored = []
            for part in range(100):  # 20 parts/s for 5 s; the broker is away from 1.5 s to 4.5 s
                if part == 30:
                    mosquitto.stop()
                if part == 90:
                    assert pub.outbox.depth() >= 55, "results did not wait in the outbox during the outage"
                    assert not pub.stats().connected
                    mosquitto.start()
                stored.append(pub.publish_result(make_result(part)))
                time.sleep(0.05)  # the line's pace (20 parts/s), not a wait for something to happen
            wait_for(lambda: pub.outbox.depth() == 0, 15, "outbox did not drain")
            wait_for(lambda: len({s for s, _ in sub.results()}) >= 100, 10, "not every result arrived")
            stats = pub.stats()
        assert [r.sequence for r in stored] == list(range(1, 101))
        assert_complete_in_order(sub.results(), 100)
        assert {rid for _, rid in sub.results()} == {r.result_id for r in stored}
        assert stats.acked == 100
        assert stats.outbox_depth == 0


def test_results_wait_in_outbox_when_broker_is_down_at_start(tmp_path: Path) -> None:
    with broker(extra_lines=SAVE_SESSIONS) as mosquitto:
        with subscriber(mosquitto.port):
            pass  # the broker now holds (and has saved) the subscriber's persistent session
        mosquitto.stop()
        settings = MqttSettings(port=mosquitto.port, **FAST)  # type: ignore[arg-type]
        with publisher(settings, tmp_path / "outbox.sqlite") as pub:
            for part in range(10):
                pub.publish_result(make_result(part))
            wait_for(lambda: pub.stats().last_error is not None, 5, "no error reported")
            error = pub.stats().last_error or ""
            assert f"cannot connect to MQTT broker 127.0.0.1:{mosquitto.port}: Connection refused" in error
            assert "results wait in the outbox" in error
            assert pub.outbox.depth() == 10
            mosquitto.start()
            with subscriber(mosquitto.port) as sub:
                wait_for(lambda: len(sub.results()) >= 10, 10, "results did not arrive after the broker came")
                assert_complete_in_order(sub.results(), 10)
            assert pub.stats().connected
            assert pub.stats().last_error is None


def _station_process(
    port: int, outbox: Path, count: int, rate_hz: float = 20, linger_s: float = 0
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(lineinspect.__file__).parents[1]), str(REPO)]))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.outbox_process", "--port", str(port), "--outbox", str(outbox),
         "--prefix", PREFIX, "--count", str(count), "--rate-hz", str(rate_hz), "--linger-s", str(linger_s)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


class StationOutput:
    """Reads a station process's stdout lines on a thread (bounded by the process's life)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), name="station-stdout")
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.strip())

    def stored(self) -> dict[int, str]:
        return {int(p[1]): p[2] for p in (line.split() for line in self.lines) if p[0] == "stored"}

    def join(self) -> None:
        self._thread.join(timeout=10)


def test_nothing_decided_is_lost_when_station_is_killed_mid_run(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite"
    with broker(extra_lines=SAVE_SESSIONS) as mosquitto, subscriber(mosquitto.port) as sub:
        first = _station_process(mosquitto.port, outbox, count=1000)
        out1 = StationOutput(first)
        try:
            wait_for(lambda: len(out1.stored()) >= 30, 15, "station did not store 30 results")
            mosquitto.stop()  # results now pile up in the outbox only
            stored_before = len(out1.stored())
            wait_for(lambda: len(out1.stored()) >= stored_before + 20, 10, "station stopped storing")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            out1.join()
        decided = out1.stored()
        mosquitto.start()
        sub.wait_until(lambda: sub.subscribed >= 2, 10, "subscriber did not come back")
        second = _station_process(mosquitto.port, outbox, count=10, rate_hz=50)
        out2 = StationOutput(second)
        try:
            assert second.wait(30) == 0
        finally:
            if second.poll() is None:
                second.kill()
                second.wait(5)
            out2.join()
        assert "drained" in out2.lines
        decided.update(out2.stored())
        last = max(decided)
        wait_for(lambda: len({s for s, _ in sub.results()}) >= last, 10, "not every result arrived")
        assert_complete_in_order(sub.results(), last)
        arrived = dict(sub.results())
        assert all(arrived[seq] == rid for seq, rid in decided.items()), "a stored result arrived with another id"
        assert min(out2.stored()) == max(out1.stored()) + 1 or not out1.stored()
    with Outbox(outbox) as reopened:
        assert reopened.depth() == 0


def test_status_is_retained_online_then_offline_when_station_is_killed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    station = _station_process(mosquitto.port, tmp_path / "outbox.sqlite", count=0, linger_s=30)
    try:
        with subscriber(mosquitto.port) as sub:
            sub.wait_until(
                lambda: any(m.json()["state"] == "online" for m in sub.received("/status")), 15, "no online status"
            )
            station.send_signal(signal.SIGKILL)
            station.wait(10)
            sub.wait_until(
                lambda: sub.received("/status")[-1].json()["state"] == "offline", 5, "no last will after the kill"
            )
            assert sub.received("/status")[-1].json()["reason"] == "connection lost"
    finally:
        if station.poll() is None:
            station.kill()
        station.wait(5)
        assert station.stdout is not None
        station.stdout.close()
    with subscriber(mosquitto.port) as late:  # a consumer that connects later sees the retained state
        late.wait_until(lambda: bool(late.received("/status")), 5, "no retained status")
        [status] = late.received("/status")
        assert status.retain
        assert status.json()["state"] == "offline"


def test_status_is_online_on_clean_start_and_offline_stopped_on_clean_stop(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with subscriber(mosquitto.port) as sub:
        settings = MqttSettings(port=mosquitto.port, **FAST)  # type: ignore[arg-type]
        with publisher(settings, tmp_path / "outbox.sqlite") as pub:
            sub.wait_until(lambda: bool(sub.received("/status")), 5, "no status")
            online = sub.received("/status")[-1].json()
            assert online["state"] == "online"
            assert online["station"] == PREFIX
            assert online["version"] == lineinspect.__version__
            pub.publish_camera_status("cam1", "grabbing", fps=12.5)
            sub.wait_until(lambda: bool(sub.received("/camera/cam1/status")), 5, "no camera status")
            assert sub.received("/camera/cam1/status")[-1].json()["fps"] == 12.5
        sub.wait_until(lambda: sub.received("/status")[-1].json()["state"] == "offline", 5, "no offline status")
        assert sub.received("/status")[-1].json()["reason"] == "stopped"


# -- TLS and passwords -------------------------------------------------------------------------------


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """Mosquitto with TLS (a CA made here) and a password file; no anonymous access."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (package mosquitto)")
    tls = make_tls_files(tmp_path / "tls")
    passwd = tmp_path / "tls" / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "station1", "s3cret"], check=True, timeout=10)
    lines = [f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
             f"password_file {passwd}", "user root"]  # fmt: skip
    with broker(allow_anonymous=False, extra_lines=lines) as b:
        yield b, tls.ca_cert


def test_results_arrive_over_tls_with_user_and_password(tmp_path: Path, secured_broker: tuple[Mosquitto, Path]) -> None:
    mosquitto, ca = secured_broker
    settings = MqttSettings(
        host="localhost", port=mosquitto.port, username="station1", tls=MqttTls(ca_file=Path("tls/ca.pem")), **FAST
    )  # type: ignore[arg-type]
    assert ca == tmp_path / "tls" / "ca.pem"
    with publisher(settings, tmp_path / "outbox.sqlite", station_dir=tmp_path, password="s3cret") as pub:
        pub.publish_result(make_result(1))
        wait_for(lambda: pub.stats().acked == 1, 10, "result not acknowledged over TLS")
        assert pub.stats().last_error is None


def test_wrong_password_is_reported_with_what_to_check(tmp_path: Path, secured_broker: tuple[Mosquitto, Path]) -> None:
    mosquitto, ca = secured_broker
    settings = MqttSettings(port=mosquitto.port, username="station1", tls=MqttTls(ca_file=ca), **FAST)  # type: ignore[arg-type]
    with publisher(settings, tmp_path / "outbox.sqlite", password="wrong") as pub:
        pub.publish_result(make_result(1))
        wait_for(lambda: pub.stats().last_error is not None, 5, "no error reported")
        error = pub.stats().last_error or ""
        assert f"broker 127.0.0.1:{mosquitto.port} refused the connection" in error
        assert "check mqtt.username ('station1') and the password in $LINEINSPECT_MQTT_PASSWORD" in error
        assert pub.outbox.depth() == 1  # kept for when the password is fixed


def test_broker_certificate_from_another_ca_is_reported(tmp_path: Path, secured_broker: tuple[Mosquitto, Path]) -> None:
    mosquitto, _ = secured_broker
    other_ca = make_tls_files(tmp_path / "other", ca_name="some other CA").ca_cert
    settings = MqttSettings(port=mosquitto.port, username="station1", tls=MqttTls(ca_file=other_ca), **FAST)  # type: ignore[arg-type]
    with publisher(settings, tmp_path / "outbox.sqlite", password="s3cret") as pub:
        wait_for(lambda: pub.stats().last_error is not None, 5, "no error reported")
        assert "TLS handshake failed" in (pub.stats().last_error or "")
        assert "certificate verify failed" in (pub.stats().last_error or "")


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        (MqttTls(ca_file=Path("missing/ca.pem")), "mqtt.tls.ca_file: .*missing/ca.pem not found"),
        (MqttTls(ca_file=Path("station.yaml")), "mqtt.tls.ca_file: .*station.yaml is not a PEM CA certificate"),
        (
            MqttTls(cert_file=Path("station.yaml"), key_file=Path("station.yaml")),
            "mqtt.tls.cert_file/key_file: .* are not a PEM certificate and its unencrypted private key",
        ),
    ],
)
def test_bad_tls_files_are_refused_naming_the_field(tmp_path: Path, tls: MqttTls, message: str) -> None:
    (tmp_path / "station.yaml").write_text("station: {id: s1}\n")
    with Outbox(tmp_path / "outbox.sqlite") as outbox, pytest.raises(ConfigError, match=message):
        ResultPublisher(MqttSettings(tls=tls), outbox, TOPICS, client_id="x", station_dir=tmp_path)
