"""What the chat routes (the Telegram webhook, the message API) work with, as one dependency.

Litestar resolves the dependencies a handler names in a task group of their own, built for
each request, whenever it names more than one: for the routes every chat message takes,
that cost about a tenth of the server's CPU per message (`voxledger bench --http
--profile`: TaskGroup and CancelScope under `resolve_dependencies`). A handler that names
one dependency gets it handed over as is.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from ..async_engine import AsyncEngine
from ..chat.bot import ChatBot
from ..chat.telegram import BotIdentity
from ..store.event_store import EventStore

Wake = Callable[[UUID], None]  # tells the delivery worker that a conversation has mail


class ChatEdge:
    """The async engine, the chat bot, the store, the bot's identity on Telegram and the
    delivery worker's wake-up, for the routes that take chat messages."""

    __slots__ = ("async_engine", "bot", "identity", "store", "wake")

    def __init__(
        self,
        async_engine: AsyncEngine,
        bot: ChatBot,
        store: EventStore,
        identity: BotIdentity,
        wake: Wake,
    ) -> None:
        self.async_engine = async_engine
        self.bot = bot
        self.store = store
        self.identity = identity
        self.wake = wake
