"""Telegram's Update subset and the webhook-reply form, on real update JSON."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import msgspec
import pytest

from voxledger.adapters.chat import telegram
from voxledger.adapters.chat.bot import Reply

FIXTURES = Path(__file__).parent / "fixtures" / "telegram"


def decoded(raw: object) -> telegram.Update:
    return msgspec.json.decode(msgspec.json.encode(raw), type=telegram.Update)


def update(name: str) -> telegram.Update:
    return msgspec.json.decode((FIXTURES / name).read_bytes(), type=telegram.Update)


def test_a_text_message_becomes_an_incoming_message_of_its_chat() -> None:
    message = telegram.incoming(update("message_text.json"))
    assert message is not None
    assert (message.channel, message.chat_id, message.message_id) == ("telegram", "5550001", "101")
    assert (message.text, message.user_id, message.participant) == ("1042", "5550001", "anna_s")
    assert not message.choice


def test_a_group_command_names_the_group_chat() -> None:
    message = telegram.incoming(update("group_command.json"))
    assert message is not None
    assert message.chat_id == "-1001234567890"
    assert message.text == "/start@VoxledgerBot design"
    assert message.participant == "Ivan"


def test_an_edited_message_is_a_message_of_its_own() -> None:
    message = telegram.incoming(update("edited_message.json"))
    assert message is not None
    assert message.message_id == "101:edited:1795276830"
    assert (message.text, message.edited) == ("1043", "101")


def test_a_button_press_is_a_menu_choice_in_the_chat_of_the_buttons() -> None:
    message = telegram.incoming(update("callback_query.json"))
    assert message is not None
    assert message.choice
    assert (message.chat_id, message.text) == ("5550001", "interview")
    assert message.message_id == "callback:4382bfdwdsb323b2d9"
    assert (message.callback_id, message.keyboard_message) == ("4382bfdwdsb323b2d9", "102")


def test_an_update_of_another_kind_carries_no_message() -> None:
    assert telegram.incoming(update("my_chat_member.json")) is None


def test_media_without_a_caption_is_a_message_of_its_kind_with_no_text() -> None:
    message = telegram.incoming(update("sticker.json"))
    assert message is not None
    assert (message.text, message.media) == ("", "sticker")


def test_a_caption_counts_as_text() -> None:
    raw = msgspec.json.decode((FIXTURES / "sticker.json").read_bytes())
    raw["message"].pop("sticker")
    raw["message"]["photo"] = [{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}]
    raw["message"]["caption"] = "Kazan Arena"
    message = telegram.incoming(decoded(raw))
    assert message is not None
    assert (message.text, message.media) == ("Kazan Arena", None)


def test_a_command_for_another_bot_is_not_for_this_one() -> None:
    group = update("group_command.json")  # "/start@VoxledgerBot design"
    assert telegram.incoming(group, "SomeOtherBot") is None
    assert telegram.incoming(group, "voxledgerbot") is not None  # names ignore case
    assert telegram.incoming(group, None) is not None  # not known yet: taken as ours


def test_a_message_in_a_forum_topic_belongs_to_the_topic() -> None:
    raw = msgspec.json.decode((FIXTURES / "group_command.json").read_bytes())
    raw["message"].update(message_thread_id=77, is_topic_message=True)
    message = telegram.incoming(decoded(raw))
    assert message is not None
    assert (message.thread, message.group, message.user_id) == (
        "77",
        True,
        str(raw["message"]["from"]["id"]),
    )


def test_the_reply_is_a_send_message_call_with_the_menu_as_inline_buttons() -> None:
    reply = Reply(
        conversation_id=UUID(int=1), message_id="1", text="Choose", choices=("interview", "design")
    )
    body = msgspec.json.decode(msgspec.json.encode(telegram.send_message("-100", reply)))
    assert body == {
        "method": "sendMessage",
        "chat_id": -100,
        "text": "Choose",
        "reply_markup": {
            "inline_keyboard": [
                [
                    {"text": "Interview", "callback_data": "interview"},
                    {"text": "Design", "callback_data": "design"},
                ]
            ]
        },
    }
    plain = Reply(conversation_id=UUID(int=1), message_id="1", text="x" * 5000)
    body = msgspec.json.decode(msgspec.json.encode(telegram.send_message("5", plain)))
    assert body == {"method": "sendMessage", "chat_id": 5, "text": "x" * 4096}


def test_an_update_with_a_wrong_shape_is_refused_naming_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.message\.chat\.id"):
        msgspec.json.decode(
            b'{"update_id": 1, "message": {"message_id": 1, "chat": {"id": "x"}}}',
            type=telegram.Update,
        )
