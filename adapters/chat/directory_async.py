"""The chat directory for the event loop: the lookups of messages that arrive together share
one read (`Batched`).

Every chat message reads its chat's row in the directory (never cached: an erasure takes
effect at the chat's very next message). Each lookup still sees the directory as it is
after it arrived. The reads run in the event loop, on a connection of its own
(`ChatDirectory.current_async`).
"""

from __future__ import annotations

from uuid import UUID

from ..batched import Batched
from .directory import ChatDirectory, ChatKey


class AsyncDirectory:
    """`ChatDirectory.find` and `open` as coroutines whose concurrent calls share reads."""

    def __init__(self, directory: ChatDirectory) -> None:
        self.directory = directory
        self._reads: Batched[tuple[ChatKey, bool], UUID | None] = Batched(directory.current_async)

    @property
    def reads(self) -> int:
        """Statements run (fewer than lookups under load)."""
        return self._reads.calls

    async def find(self, chat: ChatKey) -> UUID | None:
        """The chat's current conversation, or None if it has none."""
        return await self._reads((chat, False))

    async def open(self, chat: ChatKey) -> UUID:
        """The chat's current conversation, or a fresh id reserved for it."""
        found = await self._reads((chat, True))
        assert found is not None
        return found
