"""The chat bot, transport aside: menu, commands, the intake flow, duplicates, restarts."""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from itertools import count
from uuid import UUID

import pytest

from voxledger.adapters.bootstrap import open_chat_directory, open_engine
from voxledger.adapters.chat import bot as bot_module
from voxledger.adapters.chat.bot import (
    ChatBot,
    Command,
    Incoming,
    Reply,
    parse_command,
    reply_id,
)
from voxledger.domain.conversation import Role
from voxledger.domain.engine import Engine
from voxledger.domain.flow import FlowStatus

PROMPTS = {
    "audio_number": "What is the number of the audio recording?",
    "date": "When was the visit? For example 21.11.2026.",
    "employee": "Who made the visit? Please send the employee's name.",
    "place": "Which place was visited?",
    "zone": "Which zone of the building was visited?",
    "client_name": "What is the client's name?",
}


class Chat:
    """One user's chat with the bot, numbering the messages as a transport would."""

    def __init__(self, bot: ChatBot, chat_id: str = "4242", channel: str = "telegram") -> None:
        self.bot, self.chat_id, self.channel = bot, chat_id, channel
        self.ids = count(1)

    @property
    def key(self) -> UUID:
        """The chat's conversation now, as the directory says."""
        reply = self.bot.where(self.message("", message_id="-"))
        assert reply.conversation_id is not None
        return reply.conversation_id

    def message(self, text: str, *, message_id: str | None = None, **kw: object) -> Incoming:
        return Incoming(
            channel=self.channel,
            chat_id=self.chat_id,
            message_id=message_id or str(next(self.ids)),
            text=text,
            user_id="7",
            participant="anna",
            **kw,  # type: ignore[arg-type]
        )

    def say(self, text: str, **kw: object) -> Reply:
        return self.bot.handle_chat(self.message(text, **kw))


def bot_on(engine: Engine) -> ChatBot:
    return ChatBot(engine, directory=open_chat_directory(engine.store))  # type: ignore[arg-type]


@pytest.fixture
def chat(engine: Engine) -> Chat:
    return Chat(bot_on(engine))


def test_commands_are_parsed_with_or_without_the_bot_name() -> None:
    assert parse_command("/start") == Command("start", "")
    assert parse_command("  /Edit   date ") == Command("edit", "date")
    assert parse_command("/start@VoxledgerBot design") == Command("start", "design", "VoxledgerBot")
    assert parse_command("1042") is None


def test_a_first_message_starts_the_chats_conversation_and_gets_the_menu(
    chat: Chat, engine: Engine
) -> None:
    reply = chat.say("hello")
    assert reply.conversation_id == chat.key
    assert reply.text.startswith("Hello!\nAudio visit report: choose interview or design.")
    assert reply.choices == ("interview", "design")
    state = engine.get_conversation(chat.key)
    assert state.channel == "telegram"
    assert state.metadata == {"chat_id": "4242", "user_id": "7"}
    assert [(m.id, m.role, m.content) for m in state.messages] == [
        ("1", Role.USER, "hello"),
        ("1:reply", Role.ASSISTANT, reply.text),
    ]


def test_the_interview_runs_to_completion_with_an_edit_and_an_undo(
    chat: Chat, engine: Engine
) -> None:
    assert chat.say("/start").choices == ("interview", "design")
    started = chat.say("interview")
    assert started.text == PROMPTS["audio_number"]
    assert chat.say("1042").text == PROMPTS["date"]
    assert chat.say("31.02.2026").text == f"There is no such date as 31.02.2026.\n{PROMPTS['date']}"
    assert chat.say("21.11.2026").text == PROMPTS["employee"]
    assert chat.say("Ivan Petrov").text == PROMPTS["place"]
    assert chat.say("/back").text == PROMPTS["employee"]  # the undo withdraws the employee
    assert chat.say("Ivan Petrov").text == PROMPTS["place"]
    assert chat.say("Kazan Arena").text.startswith("What kind of building is Kazan Arena?")
    assert chat.say("business centre").text == PROMPTS["zone"]
    assert chat.say("north wing").text == PROMPTS["client_name"]
    summary = chat.say("OOO Romashka").text
    assert summary.startswith("Please check the report for audio 1042.")
    assert "Employee: Ivan Petrov" in summary
    assert chat.say("/edit employee").text == PROMPTS["employee"]
    corrected = chat.say("Anna Sidorova")
    assert "Employee: Anna Sidorova" in corrected.text  # back at the confirmation
    done = chat.say("yes")
    assert done.text == "Thank you, all done. Your answers are saved."
    assert done.flow_id is None
    flow = engine.get_flow(started.flow_id)  # type: ignore[arg-type]
    assert flow.status is FlowStatus.COMPLETED
    assert flow.answers == {
        "audio_number": 1042,
        "date": "2026-11-21",
        "employee": "Anna Sidorova",
        "place": "Kazan Arena",
        "building_type": "office",
        "zone": "north wing",
        "client_name": "OOO Romashka",
    }
    state = engine.get_conversation(chat.key)
    assert state.active_flow_id is None
    # Every chat message and its reply, in order, under the transport's ids.
    user_ids = [m.id for m in state.messages if m.role is Role.USER]
    assert user_ids == [str(i) for i in range(1, len(user_ids) + 1)]
    assert [m.id for m in state.messages if m.role is Role.ASSISTANT] == [
        reply_id(i) for i in user_ids
    ]


def test_the_design_mode_asks_for_the_city_instead_of_the_client(chat: Chat) -> None:
    assert chat.say("design", choice=True).text == PROMPTS["audio_number"]
    for answer in ("7", "1.12.2026", "Oleg", "School 5", "school"):
        chat.say(answer)
    assert chat.say("gym").text == "Which city is School 5 in?"
    assert chat.say("Kazan").text.startswith("Please check the report for audio 7.")


def test_start_while_a_flow_is_active_cancels_it_and_shows_the_menu(
    chat: Chat, engine: Engine
) -> None:
    first = chat.say("/start interview")
    chat.say("1042")
    restarted = chat.say("/start")
    assert restarted.text.startswith("The form in progress was cancelled.\nAudio visit report")
    assert restarted.choices == ("interview", "design")
    assert engine.get_flow(first.flow_id).status is FlowStatus.CANCELLED  # type: ignore[arg-type]
    second = chat.say("/start design")
    assert second.text == PROMPTS["audio_number"]
    assert second.flow_id != first.flow_id


def test_cancel_status_and_edit_say_where_the_flow_stands(chat: Chat) -> None:
    chat.say("interview")
    chat.say("1042")
    status = chat.say("/status").text
    assert status == (
        "Audio visit report (interview mode), at step date.\n"
        f"Answered: audio_number: 1042.\n{PROMPTS['date']}"
    )
    assert chat.say("/edit").text == f"Send /edit and a field: audio_number.\n{PROMPTS['date']}"
    refused = chat.say("/edit place").text
    assert refused.startswith("no answer to edit for 'place' (answered: audio_number)")
    assert refused.endswith(PROMPTS["date"])
    assert chat.say("/frobnicate").text.startswith("Unknown command /frobnicate.")
    cancelled = chat.say("/cancel")
    assert cancelled.text == "Cancelled. Send /start to begin again."
    assert cancelled.choices == ("interview", "design")
    assert chat.say("/status").text.startswith("No form is in progress.\nAudio visit report")


def test_undo_at_the_first_question_explains_and_asks_again(chat: Chat) -> None:
    chat.say("interview")
    assert chat.say("/back").text == (
        f"Nothing to undo: this is the first question.\n{PROMPTS['audio_number']}"
    )


def test_a_menu_button_pressed_during_a_flow_does_not_restart_it(chat: Chat) -> None:
    started = chat.say("interview", choice=True)
    chat.say("1042")
    pressed = chat.say("design", choice=True)
    assert pressed.text.startswith("A form is already in progress")
    assert pressed.text.endswith(PROMPTS["date"])
    assert pressed.flow_id == started.flow_id


def test_a_message_seen_before_gets_its_original_reply_and_records_nothing(
    chat: Chat, engine: Engine
) -> None:
    menu = chat.say("/start", message_id="m1")
    chat.say("interview", message_id="m2")
    answered = chat.say("1042", message_id="m3")
    version = engine.get_conversation(chat.key).version
    again = [chat.say("/start", message_id="m1"), chat.say("1042", message_id="m3")]
    assert [r.text for r in again] == [menu.text, answered.text]
    assert again[0].choices == menu.choices  # the buttons come back too
    assert all(r.duplicate for r in again)
    assert engine.get_conversation(chat.key).version == version
    assert engine.get_flow(answered.flow_id).answers == {"audio_number": 1042}  # type: ignore[arg-type]


def test_a_message_and_everything_it_causes_are_one_save(chat: Chat, engine: Engine) -> None:
    chat.say("hello")
    commits = engine.store.commits  # type: ignore[attr-defined]
    started = chat.say("interview")  # the message, the form's start, the reply: one commit
    assert engine.store.commits == commits + 1  # type: ignore[attr-defined]
    state = engine.get_conversation(chat.key)
    assert [m.id for m in state.messages][-2:] == ["2", "2:reply"]
    assert state.active_flow_id == started.flow_id


def test_the_same_message_in_two_processes_at_once_is_recorded_once(
    database_url: str, schema: str, engine: Engine
) -> None:
    bots = [bot_on(engine), bot_on(open_engine(database_url, schema=schema))]
    Chat(bots[0]).say("interview")
    barrier = threading.Barrier(len(bots))
    replies: list[Reply] = []

    def deliver(bot: ChatBot) -> None:
        barrier.wait()
        replies.append(Chat(bot).say("1042", message_id="twice"))

    threads = [threading.Thread(target=deliver, args=(bot,)) for bot in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bots[1].engine.close()
    assert [r.text for r in replies] == [PROMPTS["date"]] * 2
    assert sorted(r.duplicate for r in replies) == [False, True]
    state = engine.get_conversation(Chat(bots[0]).key)
    assert [m.id for m in state.messages].count("twice") == 1
    assert engine.get_flow(replies[0].flow_id).answers == {"audio_number": 1042}  # type: ignore[arg-type]


def test_an_ended_conversation_continues_in_the_chats_next_conversation(
    chat: Chat, engine: Engine
) -> None:
    first = chat.say("hello").conversation_id
    assert first is not None
    engine.end(first, "idle for a day")
    reply = chat.say("interview")
    assert reply.conversation_id not in (None, first)
    assert reply.text == PROMPTS["audio_number"]
    assert chat.key == reply.conversation_id  # the directory points to the new one


def test_a_flow_idle_past_its_timeout_expires_and_the_bot_says_so(
    chat: Chat, engine: Engine
) -> None:
    started = chat.say("interview")
    later = engine.get_flow(started.flow_id).updated_at + timedelta(minutes=10)  # type: ignore[arg-type]
    expired = chat.say("1042", at=later)
    assert expired.text == "This form expired after a long pause. Send /start to begin again."
    assert expired.choices == ("interview", "design")
    assert engine.get_flow(started.flow_id).status is FlowStatus.EXPIRED  # type: ignore[arg-type]
    state = engine.get_conversation(chat.key)
    assert [m.content for m in state.messages[-2:]] == ["1042", expired.text]


def test_where_tells_a_restarted_terminal_what_to_ask(chat: Chat) -> None:
    here = chat.message("", message_id="-")
    assert chat.bot.where(here).choices == ("interview", "design")  # nothing yet
    chat.say("interview")
    chat.say("1042")
    assert chat.bot.where(here).text == PROMPTS["date"]


def test_a_conversation_by_id_must_exist(engine: Engine) -> None:
    from voxledger.domain.errors import NotFound

    bot = bot_on(engine)
    with pytest.raises(NotFound):
        bot.handle(UUID(int=1), Chat(bot).message("hi"))


# -- edits, media, groups -------------------------------------------------------------------------


def edit(chat: Chat, message_id: str, text: str, when: int = 1) -> Reply:
    return chat.say(text, message_id=f"{message_id}:edited:{when}", edited=message_id)


def test_an_edited_answer_answers_its_field_again_and_the_form_stays_where_it_is(
    chat: Chat, engine: Engine
) -> None:
    started = chat.say("interview")
    chat.say("1042", message_id="m-number")
    chat.say("21.11.2026", message_id="m-date")
    changed = edit(chat, "m-number", "1043")
    assert changed.text == f"Changed Audio number to 1043.\n{PROMPTS['employee']}"
    flow = engine.get_flow(started.flow_id)  # type: ignore[arg-type]
    assert flow.answers == {"audio_number": 1043, "date": "2026-11-21"} and flow.step == "employee"
    refused = edit(chat, "m-date", "31.02.2026")
    assert refused.text.startswith("Date stays 2026-11-21: There is no such date as 31.02.2026.")
    assert engine.get_flow(started.flow_id).answers["date"] == "2026-11-21"  # type: ignore[arg-type]


def test_an_edit_finds_its_field_through_replies_recorded_in_the_nested_form_too(
    chat: Chat, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = chat.say("interview")
    with monkeypatch.context() as before:  # the reply's link as replies recorded it before
        before.setattr(
            bot_module,
            "_link",
            lambda reply, field, message_id: {
                "answer": {"flow": str(reply.flow_id), "field": field, "message": message_id}
            },
        )
        chat.say("1042", message_id="m-number")
    chat.say("21.11.2026", message_id="m-date")
    replies = {m.id: m.metadata for m in engine.get_conversation(chat.key).messages}
    assert "answer" in replies["m-number:reply"] and "answer_field" in replies["m-date:reply"]
    assert edit(chat, "m-number", "1043").recorded
    assert edit(chat, "m-date", "22.11.2026").recorded
    flow = engine.get_flow(started.flow_id)  # type: ignore[arg-type]
    assert flow.answers == {"audio_number": 1043, "date": "2026-11-22"}


def test_a_replys_link_to_its_answer_is_flat_so_the_collector_lets_it_be(
    chat: Chat, engine: Engine
) -> None:
    chat.say("interview")
    chat.say("1042", message_id="m-number")
    engine.store.forget_cached()  # type: ignore[attr-defined]
    (reply,) = [m for m in engine.get_conversation(chat.key).messages if m.id == "m-number:reply"]
    assert all(type(value) is str for value in reply.metadata.values())
    gc.collect()
    assert not gc.is_tracked(reply.metadata)  # a served worker holds one per answer


def test_an_edit_of_anything_but_a_current_answer_records_nothing(
    chat: Chat, engine: Engine
) -> None:
    chat.say("interview", message_id="m-choice")
    chat.say("abc", message_id="m-refused")  # refused: not a number
    chat.say("1042", message_id="m-number")
    chat.say("/back")  # withdraws the number: that message answers nothing any more
    version = engine.get_conversation(chat.key).version
    for message_id in ("m-choice", "m-refused", "m-number", "unknown"):
        assert not edit(chat, message_id, "7").recorded
    assert engine.get_conversation(chat.key).version == version
    chat.say("77", message_id="m-again")
    assert edit(chat, "m-again", "78").recorded  # its answer is the current one


def test_media_where_text_is_expected_gets_a_reply_saying_so(chat: Chat) -> None:
    assert chat.say("", media="photo").text.startswith(
        "I can only read text here, not a photo.\nAudio visit report: choose"
    )
    chat.say("interview")
    said = chat.say("", media="voice")
    assert said.text == f"I can only read text here, not a voice.\n{PROMPTS['audio_number']}"


def test_in_a_group_each_member_keeps_a_form_of_their_own_and_chatter_is_ignored(
    engine: Engine,
) -> None:
    bot = bot_on(engine)

    def member(user: str, text: str) -> Reply:
        return bot.handle_chat(
            Incoming(
                channel="telegram",
                chat_id="-100777",
                message_id=f"{user}-{text}",
                text=text,
                user_id=user,
                group=True,
            )
        )

    assert member("ann", "/start interview").text == PROMPTS["audio_number"]
    assert not member("bob", "1042").recorded  # bob has no form: chatter
    assert member("bob", "/start design").text == PROMPTS["audio_number"]
    assert member("ann", "1042").text == PROMPTS["date"]
    assert member("bob", "7").text == PROMPTS["date"]
    ann, bob = member("ann", "/status").text, member("bob", "/status").text
    assert "audio_number: 1042" in ann and "audio_number: 7" in bob


def test_a_shared_group_keeps_one_form_for_everyone(engine: Engine) -> None:
    bot = ChatBot(engine, directory=open_chat_directory(engine.store), shared_chats={"-100888"})  # type: ignore[arg-type]

    def member(user: str, text: str) -> Reply:
        return bot.handle_chat(
            Incoming(
                channel="telegram",
                chat_id="-100888",
                message_id=f"{user}-{text}",
                text=text,
                user_id=user,
                group=True,
            )
        )

    member("ann", "/start interview")
    assert member("bob", "1042").text == PROMPTS["date"]  # bob answers the shared form
