"""How `voxledger serve` runs the app on uvicorn: a client gets a bounded time to send its
request's headers and then its body (uvicorn itself waits for ever, so eight connections
trickling bytes could hold a worker's sockets without end), and a stop lets the requests in
flight finish within a bounded time."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import msgspec
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from .settings import DEFAULT_READ_TIMEOUT

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM


class _Deadlines:
    """The deadlines both parsers share: which one runs (headers, body, or none) and the
    408 for a client past it. ``conn``-free: each parser's protocol says when a phase
    begins and ends."""

    read_timeout_s: float = DEFAULT_READ_TIMEOUT
    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    logger: Any

    def _arm(self, phase: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        if phase is not None:
            self._timer = self.loop.call_later(self.read_timeout_s, self._too_slow, phase)

    def _too_slow(self, phase: str) -> None:
        self._timer = None
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


class PatientProtocol(_Deadlines, H11Protocol):
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
        self._arm(None)
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

    class PatientHttpToolsProtocol(_Deadlines, HttpToolsProtocol):
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
            self._arm(None)
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None)
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
