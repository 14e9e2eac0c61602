"""Telegram's webhook format: the subset of the Bot API `Update` the bot reads, and the
`sendMessage` call it answers with in the webhook's response body (so no outbound request).

Validated once, here: msgspec decodes the body into these Structs, ignoring the many fields
the bot does not use, and refuses a body whose used fields have the wrong shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .bot import Incoming, Reply

CHANNEL = "telegram"
# Telegram refuses longer messages; a reply is cut to fit rather than lost.
MAX_TEXT = 4096

ChatId = Annotated[int, msgspec.Meta(ge=-(2**52), le=2**52)]  # Telegram: at most 52 bits
# PostgreSQL text cannot hold NUL: one in an event would stall every projection that reads it.
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]


class User(msgspec.Struct, frozen=True):
    """The sender of a message or the presser of a button."""

    id: ChatId
    first_name: Text = ""
    username: Text | None = None


class Chat(msgspec.Struct, frozen=True):
    """The chat a message belongs to: one conversation each."""

    id: ChatId


class Message(msgspec.Struct, frozen=True):
    """A chat message; only text messages become conversation messages."""

    message_id: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    chat: Chat
    sender: User | None = msgspec.field(default=None, name="from")
    text: Text | None = None
    edit_date: int | None = None


class CallbackQuery(msgspec.Struct, frozen=True):
    """A press on an inline keyboard button; ``data`` is the button's callback data."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]
    sender: User = msgspec.field(name="from")
    message: Message | None = None
    data: Text | None = None


class Update(msgspec.Struct, frozen=True):
    """One webhook call: at most one of its optional parts is set."""

    update_id: int
    message: Message | None = None
    edited_message: Message | None = None
    callback_query: CallbackQuery | None = None


class InlineKeyboardButton(msgspec.Struct, frozen=True):
    """A button whose press comes back as a callback_query carrying ``callback_data``."""

    text: str
    callback_data: str


class InlineKeyboardMarkup(msgspec.Struct, frozen=True):
    """Rows of inline buttons under the bot's message."""

    inline_keyboard: list[list[InlineKeyboardButton]]


class SendMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """The Bot API call `sendMessage`, in the webhook-reply form (``method`` names it)."""

    method: Literal["sendMessage"]  # no default: omit_defaults would leave it out
    chat_id: int
    text: str
    reply_markup: InlineKeyboardMarkup | None = None


class NoReply(msgspec.Struct, frozen=True):
    """The answer to an update the bot ignores (a sticker, a photo, a member joining)."""


def incoming(update: Update) -> Incoming | None:
    """The message an update carries, or None if it carries no text the bot reads.

    The message's ``date`` is not used: the server's clock times every message, so that a
    phone's skewed clock or a late retry can neither expire a flow nor reorder its events."""
    if update.callback_query is not None:
        query = update.callback_query
        if not query.data:
            return None
        # Without the message (an old or inline one) the presser's private chat is meant.
        chat_id = query.message.chat.id if query.message else query.sender.id
        return Incoming(
            channel=CHANNEL,
            chat_id=str(chat_id),
            message_id=f"callback:{query.id}",
            text=query.data,
            user_id=str(query.sender.id),
            participant=_name(query.sender),
            choice=True,
        )
    message = update.message or update.edited_message
    if message is None or not message.text:
        return None
    message_id = str(message.message_id)
    if update.edited_message is not None:
        # An edit keeps its message id; the edit time makes it a message of its own, so
        # that it is answered rather than taken for a retry of the original.
        message_id = f"{message_id}:edited:{message.edit_date or update.update_id}"
    return Incoming(
        channel=CHANNEL,
        chat_id=str(message.chat.id),
        message_id=message_id,
        text=message.text,
        user_id=str(message.sender.id) if message.sender else None,
        participant=_name(message.sender) if message.sender else None,
    )


def send_message(chat_id: str, reply: Reply) -> SendMessage:
    """The reply as a `sendMessage` call, with the menu as inline buttons."""
    markup = None
    if reply.choices:
        buttons = [InlineKeyboardButton(c.capitalize(), c) for c in reply.choices]
        markup = InlineKeyboardMarkup([buttons])
    return SendMessage(
        "sendMessage", chat_id=int(chat_id), text=reply.text[:MAX_TEXT], reply_markup=markup
    )


def _name(user: User) -> str:
    return user.username or user.first_name or str(user.id)
