"""The Engine for async adapters (anyio): one conversation's commands in order, many at once.

The store is synchronous, so commands run in worker threads, at most as many as the
connection pool serves. Commands to one conversation wait for each other (a lock keyed by
id), so they never race each other into optimistic-concurrency retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import anyio.to_thread

from .engine import Engine


class AsyncEngine:
    """Every public Engine method, as a coroutine with the same arguments."""

    def __init__(self, engine: Engine, *, max_threads: int = 8) -> None:
        self.engine = engine
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._locks: dict[UUID, tuple[anyio.Lock, int]] = {}

    async def start_conversation(self, *args: Any, **kwargs: Any) -> UUID:
        """Open a conversation (no ordering needed: it has no id yet, or a fresh one)."""
        return await self._in_thread(self.engine.start_conversation, *args, **kwargs)

    async def run(
        self, method: Callable[..., Any], conversation_id: UUID, *args: Any, **kwargs: Any
    ) -> Any:
        """Run an Engine method on one conversation, after its earlier commands."""
        async with self._serial(conversation_id):
            return await self._in_thread(method, conversation_id, *args, **kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.engine, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        async def call(conversation_id: UUID, *args: Any, **kwargs: Any) -> Any:
            return await self.run(method, conversation_id, *args, **kwargs)

        call.__doc__ = method.__doc__
        return call

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    @asynccontextmanager
    async def _serial(self, conversation_id: UUID) -> AsyncIterator[None]:
        lock, users = self._locks.get(conversation_id, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            # Forget the lock when nobody waits on it, so idle conversations cost nothing.
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)
