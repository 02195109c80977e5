"""The broker fixture itself: starts, stops like a crash, comes back on the same port."""

from __future__ import annotations

import socket

from tests.helpers.mosquitto import Mosquitto


def test_broker_comes_back_on_same_port_when_restarted(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    mosquitto.stop()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        raise AssertionError("broker still listening after stop()")
    except OSError:
        pass
    mosquitto.start()
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
