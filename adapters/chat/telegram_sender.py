"""How outbound messages go out on Telegram, through the Bot API (telegram_api.py).

A reply or a notice is one `sendMessage` per part of its text (split by Telegram's measure,
telegram_text.py), in the chat's topic when it has one; the first part quotes the message it
answers (in a group, so everyone sees whom it answers) and the last carries the buttons. A
button press is answered with `answerCallbackQuery` (its spinner stops), and a keyboard that
was used is taken off its message with `editMessageReplyMarkup`.
"""

from __future__ import annotations

from datetime import datetime

from ...domain.conversation import Outbound, OutboundKind
from ...domain.outbox_commands import Pending
from .delivery import Part
from .delivery_errors import Rejected
from .telegram import InlineKeyboardButton, InlineKeyboardMarkup
from .telegram_api import ReplyParameters, TelegramBotApi
from .telegram_text import split_text

# Editing buttons that are already gone changes nothing: Telegram says so, and that is fine.
NOT_MODIFIED = "message is not modified"


class TelegramSender:
    """Delivers outbound messages to Telegram chats."""

    channel = "telegram"

    def __init__(self, api: TelegramBotApi) -> None:
        self.api = api

    def plan(self, item: Outbound, pending: Pending, now: datetime) -> list[Part]:
        """A part per message of the text (the last with the buttons), or the one call an
        answer to a button press or a keyboard's removal takes."""
        if item.kind is OutboundKind.ACKNOWLEDGE:
            return [Part("acknowledge", item.text)]
        if item.kind is OutboundKind.CLOSE_KEYBOARD:
            return [Part("close")]
        texts = split_text(item.text) or [item.text]
        parts = [Part("text", text) for text in texts]
        if item.choices:
            parts[-1] = Part("buttons", parts[-1].text, item.choices)
        return parts

    async def send(self, item: Outbound, part: Part, first: bool) -> str | None:
        """Make the part's call; the new message's id for a message."""
        to = chat_id(item.address.to)
        if part.kind == "acknowledge":
            assert item.reference is not None
            await self.api.answer_callback_query(item.reference, part.text or None)
            return None
        if part.kind == "close":
            assert item.reference is not None
            try:
                await self.api.edit_message_reply_markup(to, int(item.reference))
            except Rejected as refused:
                if NOT_MODIFIED not in refused.description:
                    raise
            return None
        markup = None
        if part.choices:
            buttons = [InlineKeyboardButton(c.capitalize(), c) for c in part.choices]
            markup = InlineKeyboardMarkup([buttons])
        quoted = None
        if first and item.reply_to is not None:
            # A deleted message is no reason not to answer.
            quoted = ReplyParameters(int(item.reply_to), allow_sending_without_reply=True)
        thread = int(item.address.thread) if item.address.thread is not None else None
        sent = await self.api.send_message(
            to, part.text, reply_markup=markup, message_thread_id=thread, reply_parameters=quoted
        )
        return str(sent.message_id)

    def counts(self, part: Part) -> bool:
        """Messages count against the flood limits; answers and edits do not."""
        return part.kind in ("text", "buttons")

    def group(self, item: Outbound) -> bool:
        """Groups and channels have negative ids."""
        return item.address.to.startswith("-")

    async def aclose(self) -> None:
        """Close the Bot API client."""
        await self.api.aclose()


def chat_id(to: str) -> int | str:
    """A chat address as the Bot API takes it: a number, or an @username."""
    try:
        return int(to)
    except ValueError:
        return to
