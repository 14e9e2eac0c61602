"""How `voxledger serve` runs the app on uvicorn: a client gets a bounded time to send its
request's headers and then its body (uvicorn itself waits for ever, so eight connections
trickling bytes could hold a worker's sockets without end), a stop lets the requests in
flight finish within a bounded time, and a busy server accepts every waiting connection at
once (`Server`)."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h11
import msgspec
import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from ...domain.errors import BadInput

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from .settings import DEFAULT_READ_TIMEOUT

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM

log = structlog.get_logger("voxledger.serve")


class _Corked:
    """A connection's transport whose writes within one turn of the event loop go out as
    one. uvicorn writes a response's head and its body apart: two sends, two TCP segments,
    and a client that wakes for each. One send took a fifth off the no-op webhook's CPU per
    request (298 -> 239 µs) and 6-9% off ours (`voxledger bench --http`'s servers, with
    and without, side by side), as aiohttp found (its pull request 10991)."""

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        held = self._held
        if not held:
            self._loop.call_soon(self.flush)
        held.append(data)

    def flush(self) -> None:
        held = self._held
        if held:
            data = b"".join(held)
            held.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held.clear()
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _OneSendPerTurn:
    """Protocol side of `_Corked`: the connection's transport is corked from the start; a
    WebSocket upgrade hands the socket itself to its protocol."""

    loop: asyncio.AbstractEventLoop
    transport: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.transport = _Corked(transport, self.loop)

    def handle_websocket_upgrade(self, *event: Any) -> None:
        corked = self.transport
        if type(corked) is _Corked:
            corked.flush()
            self.transport = corked.transport
        super().handle_websocket_upgrade(*event)  # type: ignore[misc]


class _Deadlines:
    """The deadlines both parsers share: which one runs (headers, body, or none) and the
    408 for a client past it. ``conn``-free: each parser's protocol says when a phase
    begins and ends."""

    read_timeout_s: float = DEFAULT_READ_TIMEOUT
    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None
    _deadline: float | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    logger: Any

    def _arm(self, phase: str | None) -> None:
        """The deadline of this phase (none for None) runs from now. One timer per
        connection, moved lazily: a request changes phase three times, and cancelling and
        scheduling a timer each time was 1% of a served request's CPU."""
        self._phase = phase
        if phase is None:
            self._deadline = None
            return
        self._deadline = deadline = self.loop.time() + self.read_timeout_s
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._due)

    def _disarm(self) -> None:
        """No deadline any more (the connection is gone or handed over)."""
        self._phase = self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:  # moved on since this timer was set
            self._timer = self.loop.call_at(deadline, self._due)
            return
        assert self._phase is not None
        self._too_slow(self._phase)

    def _too_slow(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # the app answered early: just stop reading
                return
            cycle.disconnected = True  # the app's next read hears the client left
            cycle.message_event.set()
        self.logger.warning("request %s not received within %ss", phase, self.read_timeout_s)
        body = msgspec.json.encode(
            {"error": "request timeout", "detail": f"the request's {phase} came too slowly"}
        )
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()


class PatientProtocol(_OneSendPerTurn, _Deadlines, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol (h11) with deadlines: the headers within
    ``read_timeout_s`` of the request's first byte (or of the connection, for the first
    request), then the whole body within ``read_timeout_s`` more. A client past either gets
    a 408 and the connection is closed."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch(start=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self, *, start: bool = False) -> None:
        """Which deadline applies now: headers, body, or none (idle keep-alive is uvicorn's
        own timeout; a request being answered has nothing more to read)."""
        state = self.conn.their_state
        if state is h11.IDLE:
            pending = bool(self.conn.trailing_data[0])
            phase = "headers" if start or pending or self._phase == "headers" else None
        elif state is h11.SEND_BODY:
            phase = "body"
        else:
            phase = None
        if phase != self._phase:
            self._arm(phase)


if HttpToolsProtocol is not None:

    class PatientHttpToolsProtocol(_OneSendPerTurn, _Deadlines, HttpToolsProtocol):
        """The same deadlines on uvicorn's httptools protocol (the C parser: measured 2.7x
        the requests per second of h11 on a no-op app), told by the parser's callbacks."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm("headers")  # the first request's headers, from the connection on

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._phase != "headers":
                self._arm("headers")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            # An upgrade (a WebSocket) is handed to its own protocol: no body to wait for.
            upgrading = self.parser.should_upgrade()
            self._arm(None if upgrading else "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._arm(None)

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)


def patient_protocol(http: str = "auto", read_timeout_s: float = DEFAULT_READ_TIMEOUT) -> type:
    """uvicorn's HTTP protocol with the read deadlines: httptools where installed (unless
    ``http`` is "h11"), else h11."""
    if http == "httptools" and HttpToolsProtocol is None:
        raise RuntimeError("httptools is not installed")
    base: type = (
        PatientHttpToolsProtocol
        if http != "h11" and HttpToolsProtocol is not None
        else PatientProtocol
    )
    return type("Patient", (base,), {"read_timeout_s": read_timeout_s})


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT,
    loop: str = "auto",
    http: str = "auto",
) -> uvicorn.Config:
    """uvicorn's configuration for the app: the patient protocol with this deadline (on
    httptools unless told "h11"), the event loop (uvloop where installed, unless told
    "asyncio"), uvicorn's own logs left unconfigured (structlog writes one line per request)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=patient_protocol(http, read_timeout_s),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


# -- accepting connections -----------------------------------------------------------------------

# The most connections taken from a listening socket at one wake-up (asyncio's own loop takes
# up to its backlog, 100 by default).
ACCEPT_AT_ONCE = 128
# Out of file descriptors or memory: accepting pauses this long, as asyncio's loop does.
ACCEPT_PAUSE_S = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Server(uvicorn.Server):
    """uvicorn's server, which on the sockets it is given accepts every waiting connection
    at each wake-up of the event loop.

    uvloop (libuv) accepts one connection per turn of the event loop, and a busy server's
    turn answers every request ready on the connections it has: measured on a raw uvloop
    server spending 0.2 ms per request, the 64th of 64 connections a client opened at once
    was accepted 390 ms after the first, and its first request waited as long. Every
    8-s run of `voxledger bench --http` opens its 64 connections afresh, and this start
    alone put the no-op's p99 at 70-330 ms (max 400-500 ms) and added tens of ms to ours.
    Taking them all at once (up to `ACCEPT_AT_ONCE`): the raw server's max 300-400 ms ->
    28-41 ms, p99 58-205 -> 21-22 ms. With several workers each has a listening socket of
    its own (SO_REUSEPORT), so none takes another's connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:  # uvicorn binds the address itself: its own way
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )

        loop = asyncio.get_running_loop()
        self.servers = [  # uvicorn closes them when it stops
            _Acceptor(loop, sock, create_protocol, config.ssl, config.backlog)  # type: ignore[misc]
            for sock in sockets
        ]
        self.started = True


class _Acceptor:
    """Accepts a listening socket's connections for uvicorn's protocol, all that wait at
    each wake-up; stands for asyncio's server in uvicorn's list (which closes it and waits
    for it to close)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: Callable[[], asyncio.Protocol],
        ssl: Any,
        backlog: int,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol = protocol
        self.ssl = ssl
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closed = False
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting (the socket's owner closes it)."""
        if not self._closed:
            self._closed = True
            self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        """Nothing to wait for: closing stops the accepting at once, and uvicorn waits for
        the connections itself."""

    def _accept(self) -> None:
        for _ in range(ACCEPT_AT_ONCE):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none waiting
            except ConnectionAbortedError:
                continue  # the client left before we took it
            except OSError as e:
                if e.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("serve.accept_paused", error=e.strerror, seconds=ACCEPT_PAUSE_S)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_PAUSE_S, self._resume)
                return
            conn.setblocking(False)
            task = self.loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def _resume(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn, ssl=self.ssl)
        except OSError as e:  # the client left (or failed its TLS handshake) meanwhile
            conn.close()
            log.debug("serve.connection_failed", error=str(e))


@contextmanager
def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> Iterator[socket.socket]:
    """A socket bound to the address, not listening yet (the server listens once the app
    is ready: until then it gets no connections); closed at the end. A port that cannot be
    had is the caller's error (BadInput), named."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise BadInput(f"cannot serve on {host}:{port}: {e.strerror}") from None
        sock.set_inheritable(False)
        yield sock
    finally:
        sock.close()
