"""A TCP fault proxy for fault tests: put it between an edge and the platform, break the link.

The proxy listens on 127.0.0.1 (a free port unless told otherwise) and forwards every
connection to the target. Its mode can be switched at any time from the test's thread:

=============  ========================================================================
``pass``       forward bytes both ways.
``drop``       close every connection with a FIN (both sides), and every new one at
               once: a cable pulled with the peers told about it.
``reset``      the same with a RST (``SO_LINGER`` 0): a peer that crashed, a firewall.
``blackhole``  keep connections, accept new ones, forward nothing, answer nothing, no
               FIN, no RST: the half-open link only a timeout detects. Leaving it resets
               the connections that lived through it (the far end forgot them, as after
               a NAT or a peer reboot), so only fresh connections carry data again.
``latency``    forward with ``latency_ms`` added in each direction, order kept.
``flap``       alternate ``pass`` for ``up_ms`` and ``drop`` for ``down_ms``; each drop
               phase cuts the live connections.
=============  ========================================================================

It runs its own event loop in its own thread, so synchronous tests that drive
subprocesses can use it, and it always stops cleanly (no thread or socket is left)::

    with FaultProxy(server_port) as proxy:
        edge_config(url=proxy.url)
        proxy.blackhole()
        ...
        proxy.pass_through()
        print(proxy.stats().forwarded)

The counters (:class:`ProxyStats`) let a test say how many times the link broke
(``cut_fin``, ``cut_rst``, ``flaps``) and how many times the client came back
(``reconnects``: connections forwarded after a cut).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 65536
_QUEUE_CHUNKS = 256  # per direction of a delayed connection; the reader waits beyond it
_LINGER_FIN_S = 2.0  # how long a FIN-closed connection is drained before it is aborted
_CALL_TIMEOUT_S = 10.0


class Mode(StrEnum):
    """What the proxy does to connections (see the module docstring)."""

    PASS = "pass"
    DROP = "drop"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    LATENCY = "latency"
    FLAP = "flap"


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """What the proxy saw since it started.

    Attributes:
        mode: the current mode.
        accepted: client connections accepted (in any mode).
        forwarded: client connections joined to the target (they could carry data).
        open: connections open right now.
        cut_fin: connections the proxy closed with a FIN (drop, flap).
        cut_rst: connections the proxy reset (reset, leaving blackhole, target refused).
        blackholed: connections that lived through a blackhole.
        flaps: drop phases entered while flapping.
        reconnects: connections forwarded after the proxy had cut one: the client came back.
        bytes_up: bytes forwarded client → target.
        bytes_down: bytes forwarded target → client.
        swallowed: bytes discarded (blackhole, drop).
    """

    mode: Mode
    accepted: int
    forwarded: int
    open: int
    cut_fin: int
    cut_rst: int
    blackholed: int
    flaps: int
    reconnects: int
    bytes_up: int
    bytes_down: int
    swallowed: int

    @property
    def cut(self) -> int:
        """Connections the proxy cut, with a FIN or a RST."""
        return self.cut_fin + self.cut_rst


@dataclass(slots=True)
class _Counters:
    accepted: int = 0
    forwarded: int = 0
    cut_fin: int = 0
    cut_rst: int = 0
    blackholed: int = 0
    flaps: int = 0
    reconnects: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    swallowed: int = 0


class _Conn:
    """One client connection and (when forwarding) its connection to the target."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client = writer
        self.readers = [reader]
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.eofs = 0
        self.blackholed = False
        self.closed = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class FaultProxy:
    """A TCP proxy whose link can be broken on purpose (see the module docstring).

    Args:
        target_port: where connections go (the platform's port).
        target_host: the target's address.
        host: the address to listen on.
        port: the port to listen on (0: a free one; see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._want_port = port
        self.port = 0
        self._mode = Mode.PASS
        self._latency_s = 0.0
        self._flap_up_s = 0.1
        self._flap_down_s = 0.1
        self._flap_up = True
        self._counters = _Counters()
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flapper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy, for the client's configuration."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        """Start the proxy's thread and listen; returns self.

        Raises:
            OSError: the listening port cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[int] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen(started))
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"faultproxy-{id(self):x}", daemon=True)
        self._thread.start()
        try:
            self.port = started.result(_CALL_TIMEOUT_S)
        except BaseException:
            self._join()
            raise
        return self

    async def _listen(self, started: concurrent.futures.Future[int]) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self._want_port, reuse_address=True
            )
        except OSError as err:
            started.set_exception(err)
            asyncio.get_running_loop().stop()
            return
        started.set_result(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listener and every connection (RST), then end the thread. Idempotent."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                self._call(self._shutdown())
        self._join()

    def _join(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may be closing already
                loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT_S)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._abort(conn, count=False)
        tasks = [t for c in self._conns for t in c.tasks] + list(self._background)
        if self._flapper is not None:
            tasks.append(self._flapper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ modes
    def pass_through(self) -> None:
        """Forward everything (leaving a blackhole resets what lived through it)."""
        self.set_mode(Mode.PASS)

    def drop(self) -> None:
        """Close every connection with a FIN, now and on accept."""
        self.set_mode(Mode.DROP)

    def reset(self) -> None:
        """Reset every connection (RST), now and on accept."""
        self.set_mode(Mode.RESET)

    def blackhole(self) -> None:
        """Forward nothing, answer nothing, close nothing."""
        self.set_mode(Mode.BLACKHOLE)

    def latency(self, ms: float) -> None:
        """Forward with ``ms`` milliseconds added in each direction."""
        self.set_mode(Mode.LATENCY, latency_ms=ms)

    def flap(self, up_ms: float, down_ms: float | None = None) -> None:
        """Alternate pass (``up_ms``) and drop (``down_ms``, default ``up_ms``)."""
        self.set_mode(Mode.FLAP, up_ms=up_ms, down_ms=down_ms)

    def set_mode(
        self,
        mode: Mode | str,
        *,
        latency_ms: float = 0.0,
        up_ms: float = 100.0,
        down_ms: float | None = None,
    ) -> None:
        """Switch to ``mode``; returns once live connections were dealt with."""
        if latency_ms < 0 or up_ms <= 0 or (down_ms is not None and down_ms <= 0):
            raise ValueError("latency must be >= 0 ms and flap phases > 0 ms")
        self._call(
            self._set_mode(
                Mode(mode),
                latency_s=latency_ms / 1000,
                up_s=up_ms / 1000,
                down_s=(up_ms if down_ms is None else down_ms) / 1000,
            )
        )

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        return self._call(self._snapshot())

    async def _snapshot(self) -> ProxyStats:
        c = self._counters
        return ProxyStats(mode=self._mode, open=len(self._conns), **dataclasses.asdict(c))

    async def _set_mode(self, mode: Mode, *, latency_s: float, up_s: float, down_s: float) -> None:
        previous = self._mode
        self._mode = mode
        self._latency_s = latency_s if mode is Mode.LATENCY else 0.0
        if self._flapper is not None and mode is not Mode.FLAP:
            self._flapper.cancel()
            self._flapper = None
        if previous is Mode.BLACKHOLE and mode is not Mode.BLACKHOLE:
            for conn in [c for c in self._conns if c.blackholed]:
                self._abort(conn)
        if mode is Mode.DROP:
            for conn in list(self._conns):
                self._close_fin(conn)
        elif mode is Mode.RESET:
            for conn in list(self._conns):
                self._abort(conn)
        elif mode is Mode.BLACKHOLE:
            for conn in self._conns:
                self._mark_blackholed(conn)
        elif mode is Mode.FLAP:
            self._flap_up_s, self._flap_down_s = up_s, down_s
            if self._flapper is None:
                self._flap_up = True
                self._flapper = asyncio.create_task(self._flap(), name="faultproxy/flap")
        logger.debug("fault proxy %d: %s → %s", self.port, previous, mode)

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(self._flap_up_s)
            self._flap_up = False
            self._counters.flaps += 1
            for conn in list(self._conns):
                self._close_fin(conn)
            await asyncio.sleep(self._flap_down_s)
            self._flap_up = True

    def _effective(self) -> Mode:
        if self._mode is Mode.FLAP:
            return Mode.PASS if self._flap_up else Mode.DROP
        return self._mode

    # ------------------------------------------------------------ connections
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:  # so that stop() can wait for a connect in progress
            self._background.add(me)
            me.add_done_callback(self._background.discard)
        self._counters.accepted += 1
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        mode = self._effective()
        try:
            if mode is Mode.DROP:
                self._close_fin(conn)
                return
            if mode is Mode.RESET:
                self._abort(conn)
                return
            if mode is Mode.BLACKHOLE:
                self._mark_blackholed(conn)
                self._spawn(conn, self._pump(conn, reader, None, up=True))
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                self._abort(conn)  # the target is down: the client sees what it would see
                return
            if conn.closed:  # cut while connecting
                up_writer.transport.abort()
                return
            conn.upstream = up_writer
            conn.readers.append(up_reader)
            self._counters.forwarded += 1
            if self._counters.cut_fin + self._counters.cut_rst:
                self._counters.reconnects += 1
            if conn.blackholed:  # the mode changed to blackhole while connecting
                self._spawn(conn, self._pump(conn, reader, None, up=True))
                self._spawn(conn, self._pump(conn, up_reader, None, up=False))
                return
            self._spawn(conn, self._pump(conn, reader, up_writer, up=True))
            self._spawn(conn, self._pump(conn, up_reader, writer, up=False))
        except Exception:  # a supervisor of its own: one bad connection never stops the proxy
            logger.exception("fault proxy: connection failed")
            self._abort(conn, count=False)

    def _spawn(self, conn: _Conn, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="faultproxy/pump")
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        up: bool,
    ) -> None:
        """Copy one direction; delays go through a bounded, ordered queue."""
        queue: asyncio.Queue[tuple[float, bytes]] | None = None
        sender: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    if not conn.blackholed:
                        self._abort(conn, count=False)
                        return
                    data = b""
                if conn.closed:
                    return
                if conn.blackholed or writer is None:
                    self._counters.swallowed += len(data)
                    if data:
                        continue
                    if up:  # the client gave up: let go of it, silently
                        self._release(conn)
                    return  # the target closed: the client must not learn of it
                if self._latency_s > 0 or queue is not None:
                    if queue is None:
                        queue = asyncio.Queue(_QUEUE_CHUNKS)
                        sender = asyncio.create_task(
                            self._send_delayed(conn, queue, writer, up=up),
                            name="faultproxy/delay",
                        )
                    await queue.put((time.monotonic() + self._latency_s, data))
                    if not data:
                        assert sender is not None
                        await sender
                        return
                    continue
                if not await self._forward(conn, writer, data, up=up) or not data:
                    return
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send_delayed(
        self,
        conn: _Conn,
        queue: asyncio.Queue[tuple[float, bytes]],
        writer: asyncio.StreamWriter,
        *,
        up: bool,
    ) -> None:
        while True:
            due, data = await queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if conn.closed or conn.blackholed:
                self._counters.swallowed += len(data)
                if not data:
                    return
                continue
            if not await self._forward(conn, writer, data, up=up) or not data:
                return

    async def _forward(
        self, conn: _Conn, writer: asyncio.StreamWriter, data: bytes, *, up: bool
    ) -> bool:
        """Write ``data`` (an EOF when empty); False once the connection is gone."""
        try:
            if not data:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                conn.eofs += 1
                if conn.eofs >= 2:  # both ways ended normally
                    self._release(conn)
                return True
            if up:  # counted when handed over, so a mode switch is exact to the byte
                self._counters.bytes_up += len(data)
            else:
                self._counters.bytes_down += len(data)
            writer.write(data)
            await writer.drain()
        except (OSError, RuntimeError):
            self._abort(conn, count=False)
            return False
        return True

    def _release(self, conn: _Conn) -> None:
        """Forget a connection whose peers are done with it."""
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        for w in conn.writers():
            if conn.blackholed:
                w.transport.abort()
            else:
                w.close()

    def _mark_blackholed(self, conn: _Conn) -> None:
        if not conn.blackholed:
            conn.blackholed = True
            self._counters.blackholed += 1

    def _close_fin(self, conn: _Conn) -> None:
        """Close both sides with a FIN; drain what they still send, then let go."""
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        self._counters.cut_fin += 1
        for task in list(conn.tasks):
            task.cancel()
        for w in conn.writers():
            with contextlib.suppress(OSError, RuntimeError):
                if w.can_write_eof() and not w.is_closing():
                    w.write_eof()
        # Closing a socket with unread bytes makes Linux send a RST instead of the FIN
        # already queued: read until the peers close too (or a short while passed).
        task = asyncio.create_task(self._linger(conn), name="faultproxy/linger")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _linger(self, conn: _Conn) -> None:
        async def drain(reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(OSError):
                while await reader.read(_CHUNK):
                    pass

        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LINGER_FIN_S):
                    await asyncio.gather(*(drain(r) for r in conn.readers))
        finally:
            for w in conn.writers():
                w.close()

    def _abort(self, conn: _Conn, *, count: bool = True) -> None:
        """Reset both sides (``SO_LINGER`` 0, then close: the kernel sends a RST)."""
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if count:
            self._counters.cut_rst += 1
        for task in list(conn.tasks):
            task.cancel()
        for w in conn.writers():
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()

    # ------------------------------------------------------------------ calls
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CALL_TIMEOUT_S)
