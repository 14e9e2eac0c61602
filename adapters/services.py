"""The real pieces one serving process holds, as the composition root built them
(`bootstrap.open_services`); the HTTP app and the commands take them from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..domain.engine import Engine
from ..projections.queries import Projections
from ..projections.runner import ProjectionRunner
from .async_engine import AsyncEngine
from .audio.live import LiveStreams
from .store.event_store import EventStore

if TYPE_CHECKING:
    from .chat.bot import ChatBot
    from .chat.channels import ChannelSettings
    from .chat.directory import ChatDirectory


@dataclass(frozen=True, kw_only=True)
class Services:
    """The event store, the engine and its async front, the projection queries, the clock,
    the chat directory, the channels' settings and the voice streams heard now
    (``live_streams.speak`` plays audio on a live call); ``runner(page_size)`` and
    ``bot(flow)`` make a projection runner and a chat bot on them.
    Close it (or use it in ``with``) to release the store."""

    store: EventStore
    engine: Engine
    async_engine: AsyncEngine
    projections: Projections
    runner: Callable[..., ProjectionRunner]
    bot: Callable[..., ChatBot]
    clock: Callable[[], datetime]
    directory: ChatDirectory
    channels: ChannelSettings
    live_streams: LiveStreams = field(default_factory=LiveStreams)

    def close(self) -> None:
        """Write queued snapshots and release the store's connections."""
        self.engine.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
