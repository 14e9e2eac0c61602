"""Telegram's webhook. With a bot token, every update is answered 200 with an empty body and
the delivery worker sends the replies through the Bot API (the outbox); without one, the
reply comes back in the response body as a sendMessage call (webhook-reply mode).

An update is answered 200 whenever Telegram retrying it could not help: an update of a kind
the bot does not read, a message for another bot, a message the bot refuses. Only a failure
that may pass (the database out of reach: 503; a lost race that kept losing: 409) is not.
"""

from __future__ import annotations

import structlog
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ...domain.errors import Conflict, Unavailable, VoxledgerError
from ..chat import telegram
from ..chat.bot import Reply
from .chat_edge import ChatEdge

log = structlog.get_logger("voxledger.telegram")

# The webhook takes the largest update the Bot API sends (a long text with a reply to
# another, every character \u-escaped) with room to spare, whatever the API's own limit.
WEBHOOK_MAX_BODY = 1024 * 1024


@post(
    "/telegram/webhook",
    status_code=200,
    security=[{"telegram": []}],
    tags=["telegram"],
    summary="Telegram Bot API webhook",
)
async def telegram_webhook(
    chat_edge: NamedDependency[ChatEdge], data: JSONBody[telegram.Update]
) -> telegram.SendMessage | telegram.NoReply:
    """Take an Update: its reply goes out through the outbox (or, without a bot token, in
    this response as a sendMessage call); an update with nothing for the bot is
    acknowledged and ignored."""
    return await answer_update(chat_edge, data)


async def answer_update(
    chat_edge: ChatEdge, update: telegram.Update
) -> telegram.SendMessage | telegram.NoReply:
    """What the webhook does with an update, wherever it was decoded (here, or in the chat
    lane: `lane`)."""
    bot = chat_edge.bot
    message = telegram.incoming(update, chat_edge.identity.username)
    if message is None:
        return telegram.NoReply()
    try:
        reply: Reply = await bot.handle_chat_async(message, chat_edge.async_engine)
    except (Unavailable, Conflict):
        raise  # may pass: Telegram's retry can help
    except VoxledgerError as refused:
        # Telegram would redeliver it for ever, and it would be refused for ever.
        log.warning("telegram.update_refused", update_id=update.update_id, error=str(refused))
        return telegram.NoReply()
    if reply.conversation_id is not None:
        structlog.contextvars.bind_contextvars(conversation_id=str(reply.conversation_id))
        if reply.outbound:
            chat_edge.wake(reply.conversation_id)  # the delivery worker in this process, now
    if bot.delivers(message.channel) or not reply.text:
        return telegram.NoReply()
    return telegram.send_message(message.chat_id, reply, message.thread)
