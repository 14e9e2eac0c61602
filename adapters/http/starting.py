"""The server before its services exist: a process that starts while the database is
unreachable serves at once and reports that it is not ready, so a plain supervisor sees it
up instead of a crash loop. Once the composition root has built the services and the app,
every request goes to that app (its lifespan run first, as the server would have run it)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
import structlog

from .errors import RETRY_AFTER_S

log = structlog.get_logger("voxledger.http")

Scope = dict[str, Any]


class StartingApp:
    """An ASGI app that answers for the real one until `ready` hands it over: /livez 200,
    /readyz and /healthz 503, everything else 503 with Retry-After."""

    def __init__(self) -> None:
        self.app: Any = None
        self.reason = "connecting to the database"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inner: Lifespan | None = None
        # Whether the server's lifespan began decides who starts the app's: both sides
        # look and act under this lock, so it is started exactly once.
        self._lock = threading.Lock()

    def ready(self, app: Any) -> None:
        """Serve ``app`` from now on (callable from any thread, before or after the
        server started)."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self.app = app  # not serving yet: the server's own lifespan will start it
                return
        asyncio.run_coroutine_threadsafe(self._start(app), loop).result(timeout=60)

    def waiting(self, reason: str) -> None:
        """Why the services are not there yet, for readiness probes."""
        self.reason = reason

    async def _start(self, app: Any) -> None:
        self._inner = Lifespan(app)
        await self._inner.start()
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        app = self.app
        if app is not None:
            await app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        if scope["path"] == "/livez":
            await _answer(send, 200, {"status": "ok"})
        elif scope["path"] in ("/readyz", "/healthz"):
            await _answer(send, 503, {"status": "starting", "database": self.reason})
        else:
            detail = f"the server is starting: {self.reason}"
            await _answer(send, 503, {"error": "unavailable", "detail": detail})

    async def _lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                with self._lock:
                    self._loop = asyncio.get_running_loop()
                    built = self.app  # built before the server started, if at all
                if built is not None:
                    self._inner = Lifespan(built)
                    await self._inner.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._inner is not None:
                    await self._inner.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Lifespan:
    """Runs an app's lifespan protocol on its behalf, as a server would: startup now,
    shutdown on `stop` (also for the in-process benchmark)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup."):
                self._started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await self._messages.put({"type": "lifespan.startup"})
        self._task = asyncio.ensure_future(self.app(scope, self._messages.get, send))
        done = asyncio.ensure_future(self._started.wait())
        await asyncio.wait({self._task, done}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            await self._messages.put({"type": "lifespan.shutdown"})
            await asyncio.wait({self._task}, timeout=30)


async def _answer(send: Any, status: int, body: dict[str, Any]) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": msgspec.json.encode(body)})
