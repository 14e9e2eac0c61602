"""A TCP proxy between a client and PostgreSQL that can lose a commit's answer.

It reads the frontend/backend protocol's message frames (a type byte and an int32 length;
the untyped start-up messages first) so that it knows where a transaction ends. Armed, it
acts on the next Sync that follows an Execute (an extended-protocol statement, as psycopg
sends every append) or the next COMMIT sent as a simple Query:

- ``"after"``: forward it, let the server run it to the end (its CommandComplete and
  ReadyForQuery arrive), relay none of that, and close both sides: the commit happened and
  the client never hears of it;
- ``"before"``: close both sides without forwarding it: nothing commits.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import Literal

import psycopg.conninfo

Cut = Literal["after", "before"]
_STARTUP_CODES = {80877103, 80877104}  # SSLRequest and GSSENCRequest: answered by one byte


class PostgresProxy:
    """A proxy on 127.0.0.1 in a thread of its own; use it in ``with`` (it stops after)."""

    def __init__(self, database_url: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        self._info = info
        self._host = str(info.get("host") or "localhost")
        self._port = int(info.get("port") or 5432)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy")
        self._server: asyncio.AbstractServer | None = None
        self._armed: Cut | None = None
        self._lock = threading.Lock()
        self.cuts = 0
        self.port = 0

    @property
    def url(self) -> str:
        """A URL that reaches the same database through the proxy."""
        info = {**self._info, "host": "127.0.0.1", "port": str(self.port)}
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items()})

    def cut(self, when: Cut) -> None:
        """Lose the next transaction's end: its answer (``after``) or itself (``before``)."""
        with self._lock:
            self._armed = when

    def _take(self) -> Cut | None:
        with self._lock:
            armed, self._armed = self._armed, None
            return armed

    def __enter__(self) -> PostgresProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=30)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self._host}/.s.PGSQL.{self._port}")
        return await asyncio.open_connection(self._host, self._port)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        server_r, server_w = await self._open_upstream()
        held = asyncio.Event()  # set when the server's answer is to be held back
        finished = asyncio.Event()

        async def downstream() -> None:
            buffer = b""
            while data := await server_r.read(65536):
                if not held.is_set():
                    client_w.write(data)
                    await client_w.drain()
                    continue
                buffer += data  # held: wait for the transaction's ReadyForQuery
                while len(buffer) >= 5:
                    kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    buffer = buffer[1 + length :]
                    if kind == b"Z":
                        finished.set()
                        return
            finished.set()

        async def upstream() -> None:
            typed, executed = False, False
            while True:
                if not typed:
                    header = await client_r.readexactly(8)
                    length, code = struct.unpack("!ii", header)
                    body = await client_r.readexactly(length - 8)
                    typed = code not in _STARTUP_CODES
                    server_w.write(header + body)
                    await server_w.drain()
                    continue
                header = await client_r.readexactly(5)
                kind, length = header[:1], struct.unpack("!i", header[1:5])[0]
                body = await client_r.readexactly(length - 4)
                if kind == b"E":
                    executed = True
                ends = (kind == b"S" and executed) or (
                    kind == b"Q" and body.strip(b"\0 ;").upper() in (b"COMMIT", b"END")
                )
                if kind == b"S":
                    executed = False
                armed = self._take() if ends else None
                if armed == "before":
                    self.cuts += 1
                    return
                if armed == "after":
                    held.set()
                    server_w.write(header + body)
                    await server_w.drain()
                    await finished.wait()
                    self.cuts += 1
                    return
                server_w.write(header + body)
                await server_w.drain()

        relay = asyncio.ensure_future(downstream())
        try:
            await upstream()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for writer in (client_w, server_w):
                writer.transport.abort()  # both sides lose the connection at once
            relay.cancel()
