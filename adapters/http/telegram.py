"""Telegram's webhook: an Update in, the bot's reply out as a sendMessage call in the
response body (Telegram's cheapest way to answer)."""

from __future__ import annotations

import structlog
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ..async_engine import AsyncEngine
from ..chat import telegram
from ..chat.bot import ChatBot, Reply, conversation_id_for


@post(
    "/telegram/webhook",
    status_code=200,
    security=[{"telegram": []}],
    tags=["telegram"],
    summary="Telegram Bot API webhook",
)
async def telegram_webhook(
    async_engine: NamedDependency[AsyncEngine],
    bot: NamedDependency[ChatBot],
    data: JSONBody[telegram.Update],
) -> telegram.SendMessage | telegram.NoReply:
    """Answer an Update with a sendMessage call in the response body; an update with no
    text is acknowledged and ignored."""
    message = telegram.incoming(data)
    if message is None:
        return telegram.NoReply()
    chat_key = conversation_id_for(message.channel, message.chat_id)
    structlog.contextvars.bind_contextvars(conversation_id=str(chat_key))
    reply: Reply = await async_engine.run(bot.handle_chat, chat_key, message)
    if reply.conversation_id != chat_key:  # a later generation of the chat's conversation
        structlog.contextvars.bind_contextvars(conversation_id=str(reply.conversation_id))
    return telegram.send_message(message.chat_id, reply)
