"""The fault proxy breaks a link exactly as each mode says, seen from a real TCP client."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from shopfloor.testing.faultproxy import FaultProxy, Mode
from shopfloor.testing.processes import free_port


class _Echo(socketserver.BaseRequestHandler):
    """Echoes what it gets; ``close-later`` makes it close the connection 0.5 s later."""

    server: EchoServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.server.received.append(data)
            if data == b"close-later":
                time.sleep(0.5)
                sock.close()
                return
            try:
                sock.sendall(data)
            except OSError:
                return


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.received: list[bytes] = []

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="echo")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as running:
        yield running


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and return the first answer (b"" at the end of the stream)."""
    sock.sendall(data)
    return sock.recv(65536)


def exchange_fresh(proxy: FaultProxy, data: bytes) -> bytes:
    """The same over a new connection, closed afterwards."""
    with connect(proxy) as sock:
        return exchange(sock, data)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_pass_forwards_both_ways_and_counts_bytes(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1000
    with connect(proxy) as sock:
        assert roundtrip(sock, payload) == payload
    stats = proxy.stats()
    assert (stats.accepted, stats.forwarded, stats.cut) == (1, 1, 0)
    assert stats.bytes_up == stats.bytes_down == len(payload)
    assert proxy.url == f"http://127.0.0.1:{proxy.port}"


def test_drop_closes_live_and_new_connections_with_a_fin(proxy: FaultProxy) -> None:
    live = connect(proxy)
    assert roundtrip(live, b"hello") == b"hello"
    proxy.drop()
    assert live.recv(10) == b"", "an orderly end of stream (FIN), not a reset"
    live.close()
    with connect(proxy) as fresh:
        assert fresh.recv(10) == b""
    stats = proxy.stats()
    assert stats.cut_fin == 2
    assert stats.cut_rst == 0
    assert stats.forwarded == 1


def test_reset_resets_live_and_new_connections(proxy: FaultProxy) -> None:
    live = connect(proxy)
    assert roundtrip(live, b"hello") == b"hello"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        live.recv(10)
    live.close()
    with pytest.raises(ConnectionResetError):
        exchange_fresh(proxy, b"x")
    assert proxy.stats().cut_rst == 2


def test_blackhole_forwards_nothing_and_never_closes(proxy: FaultProxy, echo: EchoServer) -> None:
    live = connect(proxy, timeout=0.5)
    assert roundtrip(live, b"before") == b"before"
    live.sendall(b"close-later")  # the target closes this connection 0.5 s later
    wait_for(lambda: b"close-later" in echo.received, "the target got it")
    proxy.blackhole()
    received_before = len(echo.received)
    time.sleep(0.8)  # the target closed its side meanwhile; the client must not learn it
    with pytest.raises(TimeoutError):
        live.recv(10)
    live.sendall(b"lost")
    fresh = connect(proxy, timeout=0.5)  # the handshake completes: a half-open link
    fresh.sendall(b"also lost")
    with pytest.raises(TimeoutError):
        fresh.recv(10)
    assert b"lost" not in echo.received
    assert b"also lost" not in echo.received
    assert len(echo.received) <= received_before
    stats = proxy.stats()
    assert stats.blackholed == 2
    assert stats.cut == 0
    assert stats.swallowed >= len(b"lostalso lost")

    proxy.pass_through()  # the far end forgot the old connections
    for sock in (live, fresh):
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        sock.close()
    with connect(proxy) as again:
        assert roundtrip(again, b"back") == b"back"
    assert proxy.stats().reconnects == 1


def test_latency_delays_each_direction_and_keeps_order(proxy: FaultProxy) -> None:
    proxy.latency(150)
    chunks = [f"{i:04d}".encode() for i in range(200)]
    with connect(proxy) as sock:
        started = time.monotonic()
        for chunk in chunks:
            sock.sendall(chunk)
        got = b""
        while len(got) < 800:
            got += sock.recv(65536)
        elapsed = time.monotonic() - started
    assert got == b"".join(chunks), "bytes arrive in the order they were sent"
    assert elapsed >= 0.3, "150 ms there and 150 ms back"
    proxy.pass_through()
    with connect(proxy) as sock:
        assert roundtrip(sock, b"fast") == b"fast"


def test_flap_cuts_with_fins_and_counts_the_clients_return(proxy: FaultProxy) -> None:
    proxy.flap(40, 30)
    eofs = answered = 0
    deadline = time.monotonic() + 20
    while proxy.stats().flaps < 8:
        assert time.monotonic() < deadline, "the proxy flaps"
        with connect(proxy, timeout=2) as sock:
            while True:
                try:
                    data = roundtrip(sock, b"ping")
                except ConnectionResetError:
                    pytest.fail("a flap closes with a FIN, never a reset")
                if data != b"ping":
                    eofs += 1
                    break
                answered += 1
                time.sleep(0.005)
    proxy.pass_through()
    stats = proxy.stats()
    assert stats.mode is Mode.PASS
    assert eofs == stats.cut_fin, "the client saw every cut as an end of stream"
    assert stats.cut_rst == 0
    assert answered > 0
    assert stats.reconnects >= stats.flaps - 1 > 0


def test_a_target_that_is_down_resets_the_client() -> None:
    with FaultProxy(free_port()) as proxy:
        with pytest.raises(ConnectionResetError):
            exchange_fresh(proxy, b"x")
        assert proxy.stats().forwarded == 0


def test_stop_is_clean_and_final(echo: EchoServer) -> None:
    proxy = FaultProxy(echo.port).start()
    held = connect(proxy)
    proxy.blackhole()
    proxy.stop()
    proxy.stop()
    with pytest.raises(RuntimeError):
        proxy.drop()
    with pytest.raises(ConnectionResetError):
        exchange(held, b"x" * 100_000)
    held.close()
    with pytest.raises(ValueError, match="latency must be"):
        FaultProxy(echo.port).set_mode("latency", latency_ms=-1)
