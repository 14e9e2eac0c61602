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

from .settings import DEFAULT_READ_TIMEOUT

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM


class PatientProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines: the headers within ``read_timeout_s``
    of the request's first byte (or of the connection, for the first request), then the
    whole body within ``read_timeout_s`` more. A client past either gets a 408 and the
    connection is closed."""

    read_timeout_s: float = DEFAULT_READ_TIMEOUT
    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None

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


def server_config(
    app: Any, *, host: str, port: int, read_timeout_s: float = DEFAULT_READ_TIMEOUT
) -> uvicorn.Config:
    """uvicorn's configuration for the app: the patient protocol with this deadline,
    uvicorn's own logs left unconfigured (structlog writes one line per request)."""
    protocol = type("Patient", (PatientProtocol,), {"read_timeout_s": read_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
