"""Serving workers that hand each chat's messages to one of them: the chat's own.

With several workers the kernel spreads connections, not chats, over them, and Telegram
sends any chat's updates over any of its connections: a chat's messages alternated between
the workers, and each message read what the other worker had written since (its catch-up
read, the events decoded and folded again; a form begun in the other worker loaded in a
thread). Two workers served no more than one: 2,330 updates/s at 0.62 ms of server CPU per
message, against 0.40 ms in one worker (`voxledger bench --http --workers 2`). Two servers
of one worker each, each sent chats of its own, served 3,360 at 0.46 ms: what a chat kept
by one worker is worth.

So each chat (and each conversation of the message API) has an owner, a worker picked by a
hash of its key, and a worker that reads a message for another's chat hands it over on a
Unix socket and relays the answer. The owner answers it as the lane answers its own (the
same functions, the same exception handlers). Affinity is only for speed: the store stays
correct with any worker writing any conversation (a lost race runs again on fresh state),
so a message whose owner cannot be reached (not started yet, restarting) is answered where
it arrived. One that was handed over and lost with its owner's connection is answered 503
(it may have been recorded; the client's retry is recognised as a message seen before).

The sockets live in a folder only this user can enter (the supervisor's temporary folder):
a connection there is a worker of the same server, trusted as the worker that took the
request from the network (which has checked its credentials)."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import msgspec
import structlog

from ...domain.errors import Unavailable

log = structlog.get_logger("voxledger.serve")

# What a request handed over is: a chat's message (`lane`), or a live call's (`voice_workers`).
WEBHOOK_ROUTE = 0
MESSAGES_ROUTE = 1
SPEECH_ROUTE = 2
HEARS_ROUTE = 3
# How long a worker that could not be reached is not tried again (its messages are
# answered where they arrive meanwhile).
RETRY_AFTER_S = 1.0
# A frame's header: the payload's length and the request's number.
_HEAD = struct.Struct("!II")
_MAX_FRAME = 64 * 1024 * 1024  # far above any body a route takes


class PeerRequest(msgspec.Struct, array_like=True, frozen=True):
    """A request the lane took, for its owner: the route, the body as received, and the
    message route's conversation and idempotency key."""

    route: int
    body: bytes
    conversation_id: str | None = None
    idempotency_key: str | None = None


class PeerAnswer(msgspec.Struct, array_like=True, frozen=True):
    """The owner's answer: status (0: not one the lane takes; the app answers it where it
    arrived), headers and body, and the conversation it concerned (for the request log)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    conversation_id: str | None = None


Answerer = Callable[[PeerRequest], Awaitable[PeerAnswer]]
DECLINED = PeerAnswer(0, [], b"")

_ENCODER = msgspec.msgpack.Encoder()
_REQUEST_DECODER = msgspec.msgpack.Decoder(PeerRequest)
_ANSWER_DECODER = msgspec.msgpack.Decoder(PeerAnswer)


class PeerLost(Unavailable):
    """The owner's connection closed before it answered."""


class Peers:
    """One worker's view of the others: which worker owns a key, how to ask it, and the
    socket on which it answers the others (`start`, `close`; run by `serving`)."""

    def __init__(self, index: int, count: int, folder: str) -> None:
        self.index = index
        self.count = count
        self.folder = folder
        self._answerers: dict[int, Answerer] = {}
        self._links: dict[int, _Link] = {}
        self._connecting: dict[int, asyncio.Future[_Link | None]] = {}
        self._not_before: dict[int, float] = {}
        self._server: asyncio.AbstractServer | None = None
        self._answering: set[_Answering] = set()
        self._next_id = 0

    def path(self, index: int) -> str:
        """Where worker ``index`` answers."""
        return os.path.join(self.folder, f"worker-{index}.sock")

    def owner(self, key: bytes) -> int:
        """The worker that serves this key (the same in every worker and every run)."""
        return zlib.crc32(key) % self.count

    def answer_with(self, answer: Answerer, *routes: int) -> None:
        """What this worker does with the requests of these routes the others hand it (a
        request of a route nobody answers is declined)."""
        for route in routes:
            self._answerers[route] = answer

    async def ask_others(self, request: PeerRequest) -> dict[int, PeerAnswer]:
        """The other workers' answers to the request, by worker, asked all at once; those
        that declined it (or could not be reached) left out. Raises `PeerLost` if none
        answered and a worker's connection closed before it did (it may have been the one
        to answer)."""
        others = [k for k in range(self.count) if k != self.index]
        answers = await asyncio.gather(
            *(self.ask(k, request) for k in others), return_exceptions=True
        )
        answered = {
            k: answer
            for k, answer in zip(others, answers, strict=True)
            if isinstance(answer, PeerAnswer) and answer.status
        }
        if not answered:
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
        return answered

    async def ask(self, owner: int, request: PeerRequest) -> PeerAnswer | None:
        """The owner's answer to the request; None if it cannot be reached now (nothing was
        sent: answer it here). Raises `PeerLost` if the owner's connection closed before
        it answered."""
        link = self._links.get(owner)
        if link is None or link.closed:
            link = await self._link(owner)
            if link is None or link.closed:  # closed as it came: nothing sent yet
                return None
        self._next_id = ident = (self._next_id + 1) & 0xFFFFFFFF
        answered = asyncio.get_running_loop().create_future()
        link.pending[ident] = answered
        link.send(ident, _ENCODER.encode(request))
        try:
            payload: bytes = await answered
        finally:
            link.pending.pop(ident, None)
        return _ANSWER_DECODER.decode(payload)

    async def _link(self, owner: int) -> _Link | None:
        """A connection to the owner (one per owner, shared by every request), or None if
        it cannot be had now."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_before.get(owner, 0.0):
            return None
        connecting = self._connecting.get(owner)
        if connecting is not None:
            return await asyncio.shield(connecting)
        connecting = self._connecting[owner] = loop.create_future()
        link: _Link | None = None
        try:
            _, link = await loop.create_unix_connection(_Link, self.path(owner))
            self._links[owner] = link
        except OSError as error:
            self._not_before[owner] = loop.time() + RETRY_AFTER_S
            log.info("serve.peer_unreachable", peer=owner, error=str(error))
        finally:
            connecting.set_result(link)
            del self._connecting[owner]
        return link

    async def start(self) -> None:
        """Answer the other workers on this worker's socket."""
        path = self.path(self.index)
        with suppress(FileNotFoundError):
            os.unlink(path)  # left by a worker of the same number that died
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Answering(self), path)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop answering: no new connections, the requests being answered finished (those
        still running after ``timeout_s`` cancelled), every connection closed."""
        if self._server is not None:
            self._server.close()
            self._server = None
        answering = list(self._answering)
        if answering:
            try:
                await asyncio.wait_for(asyncio.gather(*(a.finish() for a in answering)), timeout_s)
            except TimeoutError:
                for connection in answering:
                    connection.abort()
        for link in self._links.values():
            link.close()
        self._links.clear()
        with suppress(FileNotFoundError):
            os.unlink(self.path(self.index))

    async def _answered(self, payload: bytes) -> bytes:
        """The answer to one frame another worker sent."""
        request = _REQUEST_DECODER.decode(payload)
        answer = self._answerers.get(request.route)
        return _ENCODER.encode(await answer(request) if answer is not None else DECLINED)


class _Framed(asyncio.Protocol):
    """Frames on a stream: a header (length, request number), then the payload."""

    def __init__(self) -> None:
        self.transport: Any = None  # a stream transport (uvloop's is not asyncio's class)
        self.closed = False
        self._buffer = bytearray()
        self._out: list[bytes] = []  # frames to write at the end of this turn of the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _HEAD.size:
            size, ident = _HEAD.unpack_from(buffer)
            if size > _MAX_FRAME:
                self.close()
                return
            end = _HEAD.size + size
            if len(buffer) < end:
                return
            payload = bytes(buffer[_HEAD.size : end])
            del buffer[:end]
            self.frame(ident, payload)

    def frame(self, ident: int, payload: bytes) -> None:
        raise NotImplementedError

    def send(self, ident: int, payload: bytes) -> None:
        """Write a frame, with the others sent in this turn of the loop: the answers of a
        shared commit go out in one write, not one each."""
        if self.transport is None or self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out += (_HEAD.pack(len(payload), ident), payload)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Link(_Framed):
    """This worker's connection to another: the requests sent, by number, awaiting their
    answers."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def frame(self, ident: int, payload: bytes) -> None:
        answered = self.pending.pop(ident, None)
        if answered is not None and not answered.done():
            answered.set_result(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for answered in self.pending.values():
            if not answered.done():
                answered.set_exception(
                    PeerLost("the worker serving this chat stopped before it answered")
                )
        self.pending.clear()


class _Answering(_Framed):
    """Another worker's connection to this one: each request answered in a task of its
    own (its own context: what one binds for its log stays with it)."""

    def __init__(self, peers: Peers) -> None:
        super().__init__()
        self.peers = peers
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peers._answering.add(self)

    def frame(self, ident: int, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(ident, payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, ident: int, payload: bytes) -> None:
        try:
            answer = await self.peers._answered(payload)
        except Exception:  # the answerer answers every error; this is a defect
            log.exception("serve.peer_answer_failed")
            self.close()  # the asking worker's requests on it fail: 503
            return
        self.send(ident, answer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.peers._answering.discard(self)

    async def finish(self) -> None:
        """Answer what was asked (no more is read), then close."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        while self.tasks:
            await asyncio.wait(list(self.tasks))
        self.close()

    def abort(self) -> None:
        """Stop answering at once."""
        for task in self.tasks:
            task.cancel()
        self.close()
