"""The Telegram edge checked with a real client library's own models (aiogram): updates it
builds are read as the bot means them, and every call the delivery worker makes validates as
the Bot API method it names."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiogram import methods
from aiogram.types import (
    CallbackQuery,
    Chat,
    ChatMemberMember,
    ChatMemberUpdated,
    Message,
    PhotoSize,
    Sticker,
    Update,
    User,
)
from conftest import StepClock
from fake_http import ManualClock
from fake_telegram import FakeTelegram
from test_delivery import World

from voxledger.adapters.bootstrap import open_services
from voxledger.adapters.chat import telegram
from voxledger.adapters.chat.channels import ChannelSettings

WHEN = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
ADA = User(id=5550001, is_bot=False, first_name="Ada", username="ada")
PRIVATE = Chat(id=5550001, type="private", first_name="Ada")
FORUM = Chat(id=-1001234567890, type="supergroup", title="Visits", is_forum=True)
BOT = User(id=7000000001, is_bot=True, first_name="Voxledger", username="voxledger_test_bot")


def read(update: Update, bot_username: str | None = "voxledger_test_bot") -> Any:
    """The update as Telegram sends it (aiogram's JSON, by alias), as the bot reads it."""
    raw = update.model_dump_json(exclude_none=True, by_alias=True)
    return telegram.incoming(msgspec.json.decode(raw, type=telegram.Update), bot_username)


def message(text: str | None = None, **parts: Any) -> Message:
    fields = {"message_id": 101, "date": WHEN, "chat": PRIVATE, "from_user": ADA, **parts}
    return Message(text=text, **fields) if text is not None else Message(**fields)


def test_a_text_message_is_the_senders_message_in_its_chat() -> None:
    said = read(Update(update_id=1, message=message("1042")))
    assert (said.chat_id, said.message_id, said.text, said.user_id) == (
        "5550001", "101", "1042", "5550001",
    )  # fmt: skip
    assert not said.group and said.thread is None


def test_a_photo_with_a_caption_is_its_caption_and_without_one_a_photo() -> None:
    photo = [PhotoSize(file_id="f", file_unique_id="u", width=90, height=90)]
    captioned = read(Update(update_id=2, message=message(photo=photo, caption="Kazan Arena")))
    assert (captioned.text, captioned.media) == ("Kazan Arena", None)
    bare = read(Update(update_id=3, message=message(photo=photo)))
    assert (bare.text, bare.media) == ("", "photo")
    sticker = Sticker(
        file_id="s", file_unique_id="su", type="regular", width=512, height=512,
        is_animated=False, is_video=False,
    )  # fmt: skip
    assert read(Update(update_id=4, message=message(sticker=sticker))).media == "sticker"


def test_an_edit_is_a_new_text_of_the_message_it_edits() -> None:
    edited = read(Update(update_id=5, edited_message=message("1043", edit_date=1795276830)))
    assert (edited.edited, edited.text) == ("101", "1043")
    assert edited.message_id.startswith("101:edited:")


def test_a_button_press_answers_to_its_query_and_names_the_message_it_was_under() -> None:
    shown = Message(message_id=102, date=WHEN, chat=PRIVATE, from_user=BOT, text="Choose")
    query = CallbackQuery(
        id="4382", from_user=ADA, chat_instance="-76", message=shown, data="interview"
    )
    pressed = read(Update(update_id=6, callback_query=query))
    assert (pressed.choice, pressed.text, pressed.callback_id) == (True, "interview", "4382")
    assert pressed.keyboard_message == "102"


def test_a_forum_message_belongs_to_its_topic_and_its_sender() -> None:
    topic = message("/start", chat=FORUM, message_thread_id=77, is_topic_message=True, message_id=9)
    said = read(Update(update_id=7, message=topic))
    assert (said.thread, said.group, said.user_id) == ("77", True, "5550001")


def test_commands_naming_another_bot_are_not_read() -> None:
    assert read(Update(update_id=8, message=message("/cancel@SomeOtherBot"))) is None
    assert read(Update(update_id=9, message=message("/cancel@Voxledger_Test_Bot"))) is not None


def test_updates_of_other_kinds_carry_nothing_for_the_bot() -> None:
    member = ChatMemberUpdated(
        chat=PRIVATE,
        from_user=ADA,
        date=WHEN,
        old_chat_member=ChatMemberMember(user=BOT),
        new_chat_member=ChatMemberMember(user=BOT),
    )
    assert read(Update(update_id=10, my_chat_member=member)) is None
    post = Message(message_id=1, date=WHEN, chat=Chat(id=-100, type="channel"), text="news")
    assert read(Update(update_id=11, channel_post=post)) is None


# -- the calls the bot makes ----------------------------------------------------------------------

METHODS = {
    "sendmessage": methods.SendMessage,
    "answercallbackquery": methods.AnswerCallbackQuery,
    "editmessagereplymarkup": methods.EditMessageReplyMarkup,
}


@pytest.fixture
def world(database_url: str, schema: str, clock: StepClock) -> Iterator[tuple[World, FakeTelegram]]:
    server = FakeTelegram(clock=ManualClock()).start()
    server.add_chat(4242, first_name="Ada")
    channels = ChannelSettings(telegram_token=server.token, telegram_api_url=server.url)
    services = open_services(database_url, schema=schema, clock=clock, channels=channels)
    try:
        yield World(services, server.clock), server  # type: ignore[arg-type]
    finally:
        services.close()
        server.stop()


def test_every_call_the_worker_makes_is_a_valid_bot_api_method(
    world: tuple[World, FakeTelegram],
) -> None:
    bot, api = world
    bot.say("/start")
    bot.deliver()
    menu = api.messages(4242)[0]
    query = api.user_presses(4242, menu["message_id"], "interview")
    bot.press("interview", menu["message_id"], query=query)
    bot.say("x")  # refused: the reason, and the question again
    bot.deliver()
    calls = [c for c in api.calls if c.name in METHODS]
    assert {c.name for c in calls} == set(METHODS)
    for call in calls:
        METHODS[call.name].model_validate(call.params)  # raises on a wrong field or type
        assert call.status == 200, call
