"""The throwaway Mosquitto used by the MQTT and Sparkplug tests."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from shopfloor.testing.mosquitto import Mosquitto, MosquittoNotFound


def test_restart_keeps_the_port_and_stop_frees_it(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.running
    assert mosquitto.port == port
    socket.create_connection((mosquitto.host, port), timeout=1).close()
    mosquitto.stop()
    assert not mosquitto.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((mosquitto.host, port), timeout=1).close()
    mosquitto.stop()  # idempotent


def test_tls_listener_presents_a_certificate_signed_by_the_test_ca(
    make_mosquitto: Callable[..., Mosquitto],
) -> None:
    broker = make_mosquitto(tls=True)
    assert broker.tls is not None
    assert broker.tls_port is not None
    context = ssl.create_default_context(cafile=str(broker.tls.ca_file))
    with (
        socket.create_connection((broker.host, broker.tls_port), timeout=2) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() is not None


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    with pytest.raises(MosquittoNotFound, match="apt-get install mosquitto"):
        Mosquitto(tmp_path, binary=str(tmp_path / "no-such-mosquitto"))
