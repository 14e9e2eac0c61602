"""Telegram's update format: the subset of the Bot API `Update` the bot reads, what a message
means to the bot (`incoming`), and the `sendMessage` call it answers with in the webhook's
response body when no bot token is configured (webhook-reply mode; with a token the
delivery worker sends every reply through the Bot API instead).

Validated once, here: msgspec decodes the body into these Structs, ignoring the many fields
the bot does not use, and refuses a body whose used fields have the wrong shape.

What a message means: a caption counts as text; a photo, a sticker or any other media
without one is a message of its kind (the bot says it wants text where it does); a command
addressed to another bot (`/cancel@OtherBot`) is not for this one; an edit is a new text of
the message it edits (bot.py says what that does); in a forum, a message belongs to its
topic; in a group, to its sender (unless the chat shares one form).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .bot import Incoming, Reply, parse_command
from .telegram_text import split_text

CHANNEL = "telegram"
# Telegram refuses longer messages; in webhook-reply mode a reply is cut to fit (the
# delivery worker splits it instead).
MAX_TEXT = 4096
# The updates the bot reads: what setWebhook and getUpdates ask Telegram for.
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
# What a message may hold instead of text, in the order they are looked for.
MEDIA = (
    "photo", "video", "animation", "document", "audio", "voice", "video_note", "sticker",
    "location", "venue", "contact", "poll", "dice", "game", "story", "paid_media",
)  # fmt: skip

ChatId = Annotated[int, msgspec.Meta(ge=-(2**52), le=2**52)]  # Telegram: at most 52 bits
# PostgreSQL text cannot hold NUL: one in an event would stall every projection that reads it.
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]


class BotIdentity:
    """This bot as Telegram knows it: its username, once `getMe` has told it (until then,
    a command naming any bot counts as this one's)."""

    def __init__(self, username: str | None = None) -> None:
        self.username = username


class User(msgspec.Struct, frozen=True):
    """The sender of a message or the presser of a button."""

    id: ChatId
    first_name: Text = ""
    username: Text | None = None


class Chat(msgspec.Struct, frozen=True):
    """The chat a message belongs to."""

    id: ChatId
    type: str = "private"  # private, group, supergroup, channel


class Message(msgspec.Struct, frozen=True):
    """A chat message: its text or caption, or the media it holds instead."""

    message_id: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    chat: Chat
    sender: User | None = msgspec.field(default=None, name="from")
    text: Text | None = None
    caption: Text | None = None
    edit_date: int | None = None
    message_thread_id: int | None = None
    is_topic_message: bool = False
    # Media: only whether it is there matters.
    photo: Any = None
    video: Any = None
    animation: Any = None
    document: Any = None
    audio: Any = None
    voice: Any = None
    video_note: Any = None
    sticker: Any = None
    location: Any = None
    venue: Any = None
    contact: Any = None
    poll: Any = None
    dice: Any = None
    game: Any = None
    story: Any = None
    paid_media: Any = None

    @property
    def media(self) -> str | None:
        """The kind of media it holds, if any."""
        return next((kind for kind in MEDIA if getattr(self, kind) is not None), None)

    @property
    def topic(self) -> str | None:
        """The forum topic it was written in (None: not a forum, or its General topic)."""
        if self.is_topic_message and self.message_thread_id is not None:
            return str(self.message_thread_id)
        return None

    @property
    def in_group(self) -> bool:
        """Whether many people write in its chat."""
        return self.chat.type in ("group", "supergroup")


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
    message_thread_id: int | None = None


class NoReply(msgspec.Struct, frozen=True):
    """The answer to an update the bot ignores (a sticker, a photo, a member joining)."""


def incoming(update: Update, bot_username: str | None = None) -> Incoming | None:
    """The message an update carries, or None if there is nothing in it for this bot (no
    text, caption or media; a command to another bot; an update of another kind).
    ``bot_username`` is this bot's (from getMe); unknown, every command counts as ours.

    The message's ``date`` is not used: the server's clock times every message, so that a
    phone's skewed clock or a late retry can neither expire a flow nor reorder its events."""
    if update.callback_query is not None:
        return _pressed(update.callback_query)
    message = update.message or update.edited_message
    if message is None:
        return None
    text = message.text if message.text is not None else (message.caption or "")
    media = None if text else message.media
    if not text and media is None:
        return None
    if not _for_this_bot(text, bot_username):
        return None
    message_id = str(message.message_id)
    edited = None
    if update.edited_message is not None:
        if media is not None:
            return None  # new media in an old message: nothing to read
        # An edit keeps its message id; the edit time makes it a message of its own.
        edited = message_id
        message_id = f"{message_id}:edited:{message.edit_date or update.update_id}"
    return Incoming(
        channel=CHANNEL,
        chat_id=str(message.chat.id),
        message_id=message_id,
        text=text,
        user_id=str(message.sender.id) if message.sender else None,
        participant=_name(message.sender) if message.sender else None,
        thread=message.topic,
        group=message.in_group,
        platform_message_id=str(message.message_id),
        edited=edited,
        media=media,
    )


def _pressed(query: CallbackQuery) -> Incoming | None:
    """A button press: a menu choice in the chat of the message whose button it was."""
    if not query.data:
        return None
    shown = query.message
    # Without the message (an old or inline one) the presser's private chat is meant.
    chat_id = shown.chat.id if shown else query.sender.id
    return Incoming(
        channel=CHANNEL,
        chat_id=str(chat_id),
        message_id=f"callback:{query.id}",
        text=query.data,
        user_id=str(query.sender.id),
        participant=_name(query.sender),
        choice=True,
        thread=shown.topic if shown else None,
        group=shown.in_group if shown else False,
        callback_id=query.id,
        keyboard_message=str(shown.message_id) if shown else None,
    )


def _for_this_bot(text: str, bot_username: str | None) -> bool:
    """False for a command that names another bot (`/start@OtherBot`)."""
    command = parse_command(text)
    if command is None or command.bot is None or bot_username is None:
        return True
    return command.bot.casefold() == bot_username.casefold()


def send_message(chat_id: str, reply: Reply, thread: str | None = None) -> SendMessage:
    """The reply as a `sendMessage` call, with the menu as inline buttons."""
    markup = None
    if reply.choices:
        buttons = [InlineKeyboardButton(c.capitalize(), c) for c in reply.choices]
        markup = InlineKeyboardMarkup([buttons])
    fits = split_text(reply.text, MAX_TEXT)  # one call only: the first message's worth
    return SendMessage(
        "sendMessage",
        chat_id=int(chat_id),
        text=fits[0] if fits else reply.text[:MAX_TEXT],
        reply_markup=markup,
        message_thread_id=int(thread) if thread is not None else None,
    )


def _name(user: User) -> str:
    return user.username or user.first_name or str(user.id)
