"""`voxledger serve` as the backend of a real Telegram bot: updates in through the webhook,
every reply out through a local Bot API server that checks each call against the API's rules
and records it; `voxledger telegram poll` for a bot without a public URL; set-webhook and
delete-webhook; an erased user starting afresh."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import Spawn
from fake_telegram import FakeTelegram
from psycopg import sql
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    SECRET,
    SECRET_HEADER,
    VOXLEDGER,
    Server,
    conversation_of,
    events_stored,
    post_update,
    server_env_fixture,
    server_schema_fixture,
)

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.engine import Engine

MENU = "Audio visit report: choose interview or design."
AUDIO = "What is the number of the audio recording?"
DATE = "When was the visit? For example 21.11.2026."


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """The condition's value once it holds (the server and its worker run on their own)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bot_api() -> Iterator[FakeTelegram]:
    """The Bot API server for the module, on the machine's clock (its flood control counts
    real seconds, as the worker's do)."""
    server = FakeTelegram(clock=time.time).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bot_env(server_env: dict[str, str], bot_api: FakeTelegram) -> dict[str, str]:
    return {
        **server_env,
        "VOXLEDGER_TELEGRAM_TOKEN": bot_api.token,
        "VOXLEDGER_TELEGRAM_API_URL": bot_api.url,
    }


@pytest.fixture(scope="module")
def server(bot_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(bot_env, tmp_path_factory.mktemp("server") / "server.log").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: Server, bot_api: FakeTelegram) -> Iterator[httpx.Client]:
    wait_for(
        lambda: any(c.status == 200 for c in bot_api.calls_to("getMe")),
        "the server to learn who the bot is",
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def engine(database_url: str, server_schema: str) -> Iterator[Engine]:
    with open_engine(database_url, schema=server_schema) as e:
        yield e


class User:
    """A Telegram user writing to the bot: each update goes to the webhook as Telegram sends
    it, and what the bot sent arrives at the Bot API server."""

    def __init__(self, client: httpx.Client, api: FakeTelegram, chat_id: int, **chat: Any):
        self.client, self.api, self.chat_id = client, api, chat_id
        api.add_chat(chat_id, **({"first_name": "Ada"} | chat))

    def bot_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.api.messages(self.chat_id) if m["from"]["is_bot"]]

    def deliver(self, update: dict[str, Any]) -> None:
        response = post_update(self.client, update)
        assert (response.status_code, response.json()) == (200, {}), response.text

    def says(self, text: str, *, expect: int = 1, **kw: Any) -> list[dict[str, Any]]:
        """Send a message; the bot's messages it caused."""
        before = len(self.bot_messages())
        self.deliver(self.api.user_sends(self.chat_id, text, **kw))
        return self._new(before, expect)

    def presses(self, message: dict[str, Any], data: str) -> tuple[str, list[dict[str, Any]]]:
        before = len(self.bot_messages())
        query = self.api.user_presses(self.chat_id, message["message_id"], data)
        update = next(
            u
            for u in self.api.pending_updates()
            if "callback_query" in u and u["callback_query"]["id"] == query
        )
        self.deliver(update)
        return query, self._new(before, 1)

    def _new(self, before: int, expect: int) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (m := self.bot_messages()[before:]) and len(m) >= expect and m,
            f"{expect} message(s) from the bot in chat {self.chat_id}",
        )


def test_with_a_token_the_webhook_answers_200_and_the_replies_go_through_the_bot_api(
    client: httpx.Client, bot_api: FakeTelegram, engine: Engine
) -> None:
    user = User(client, bot_api, 7001)
    (menu,) = user.says("/start")
    assert menu["text"].startswith(MENU)
    buttons = menu["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["interview", "design"]
    query, (asked,) = user.presses(menu, "interview")
    assert asked["text"] == AUDIO
    # The press is answered (the spinner stops) and the used keyboard taken off.
    wait_for(lambda: query in bot_api.callback_answers, "the button press to be answered")
    wait_for(
        lambda: "reply_markup" not in bot_api.messages(7001)[1], "the menu to lose its buttons"
    )
    (date,) = user.says("1042")
    assert date["text"] == DATE
    state = engine.get_conversation(conversation_of(engine, 7001))
    wait_for(lambda: not engine.get_conversation(state.id).outbox, "every outcome to be recorded")
    delivered = [e for e in engine.history(state.id) if e.type == "OutboundDelivered"]
    assert len(delivered) == 5  # menu, answer, unbutton, question, question


def decisions_stored(database_url: str, schema: str) -> int:
    """The events in the schema's log less the delivery worker's (how a delivery went),
    which it records on its own time, after the platform has the message."""
    with psycopg.connect(database_url) as conn:
        query = sql.SQL(
            "SELECT count(*) FROM {} WHERE topic NOT IN "
            "('voxledger:Conversation.OutboundDelivered', 'voxledger:Conversation.OutboundFailed',"
            " 'voxledger:Conversation.DeliveryStatusReported')"
        ).format(sql.Identifier(schema, "voxledger_events"))
        row = conn.execute(query).fetchone()
    return row[0] if row else 0


def test_commands_for_another_bot_are_ignored_and_ours_work(
    client: httpx.Client, bot_api: FakeTelegram, database_url: str, server_schema: str
) -> None:
    group = -1002000000001
    user = User(client, bot_api, group, type="supergroup", title="Visits")
    before = decisions_stored(database_url, server_schema)
    user.deliver(bot_api.user_sends(group, "/start@SomeOtherBot", user_id=31))
    assert decisions_stored(database_url, server_schema) == before
    (menu,) = user.says("/start@voxledger_test_bot", user_id=31)
    assert menu["text"].startswith(MENU)
    assert menu["reply_to_message"]["text"] == "/start@voxledger_test_bot"  # whom it answers
    # Another member's chatter is theirs, not an answer to anyone's form.
    before = decisions_stored(database_url, server_schema)
    user.deliver(bot_api.user_sends(group, "interview", user_id=32))
    assert decisions_stored(database_url, server_schema) == before


def test_a_forum_topic_is_answered_in_its_topic(
    client: httpx.Client, bot_api: FakeTelegram
) -> None:
    forum = -1002000000002
    user = User(client, bot_api, forum, type="supergroup", title="Forum", is_forum=True)
    bot_api.add_forum_topic(forum, 5)
    (menu,) = user.says("/start", user_id=41, message_thread_id=5)
    assert menu["message_thread_id"] == 5


def test_the_largest_update_telegram_sends_is_accepted(
    client: httpx.Client, bot_api: FakeTelegram
) -> None:
    user = User(client, bot_api, 7002)
    update = bot_api.user_sends(7002, "😀" * 2048)
    message = update["message"]
    # A reply to a message as long, quoting it: serialised with \u escapes, as the Bot API does.
    message["reply_to_message"] = {**message, "text": "😀" * 2048, "message_id": 1}
    message["quote"] = {"text": "😀" * 2048, "position": 0}
    body = json.dumps(update, ensure_ascii=True).encode()
    assert len(body) > 73_000
    response = client.post(
        "/telegram/webhook",
        content=body,
        headers={**SECRET_HEADER, "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()) == (200, {})
    (menu,) = wait_for(user.bot_messages, "the bot's answer")
    assert menu["text"].startswith("Hello!")


@pytest.mark.parametrize(
    "update",
    [
        {
            "channel_post": {
                "message_id": 1,
                "chat": {"id": -1003, "type": "channel"},
                "date": 1,
                "text": "hi",
            }
        },
        {
            "poll_answer": {
                "poll_id": "1",
                "user": {"id": 5, "is_bot": False, "first_name": "A"},
                "option_ids": [0],
            }
        },
        {
            "my_chat_member": {
                "chat": {"id": 5, "type": "private"},
                "from": {"id": 5, "is_bot": False, "first_name": "A"},
                "date": 1,
            }
        },
    ],
    ids=["channel_post", "poll_answer", "my_chat_member"],
)
def test_updates_the_bot_does_not_process_get_200_and_record_nothing(
    client: httpx.Client, database_url: str, server_schema: str, update: dict[str, Any]
) -> None:
    before = decisions_stored(database_url, server_schema)
    response = post_update(client, {"update_id": 9, **update})
    assert (response.status_code, response.json()) == (200, {})
    assert decisions_stored(database_url, server_schema) == before


def test_an_erased_user_starts_afresh_and_nothing_ties_the_chat_to_what_was_erased(
    client: httpx.Client,
    bot_api: FakeTelegram,
    engine: Engine,
    bot_env: dict[str, str],
    database_url: str,
    server_schema: str,
) -> None:
    chat = 70039171  # digits that appear nowhere else by chance
    user = User(client, bot_api, chat)
    user.says("/start")
    erased = conversation_of(engine, chat)
    wait_for(lambda: not engine.get_conversation(erased).outbox, "the menu's delivery")
    result = subprocess.run(
        [*VOXLEDGER, "erase", str(erased), "--yes", "--json"],
        env=bot_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (menu,) = user.says("/start")  # 200, and a new conversation: not a 409 for ever
    assert menu["text"].startswith(MENU)
    fresh = conversation_of(engine, chat)
    assert fresh != erased
    with psycopg.connect(database_url) as conn:
        pointing = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE conversation_id = %s").format(
                sql.Identifier(server_schema, "voxledger_chats")
            ),
            (erased,),
        ).fetchone()
        states = conn.execute(
            sql.SQL("SELECT state FROM {} WHERE originator_id = %s").format(
                sql.Identifier(server_schema, "voxledger_events")
            ),
            (erased,),
        ).fetchall()
    assert pointing == (0,)
    assert states and not any(str(chat).encode() in bytes(state) for (state,) in states)


# -- long polling, and the webhook's setting ------------------------------------------------------


@pytest.fixture
def poll_api() -> Iterator[FakeTelegram]:
    server = FakeTelegram(clock=time.time).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def poll_env(cli_env: dict[str, str], poll_api: FakeTelegram) -> dict[str, str]:
    return {
        **cli_env,
        "VOXLEDGER_TELEGRAM_TOKEN": poll_api.token,
        "VOXLEDGER_TELEGRAM_API_URL": poll_api.url,
        "VOXLEDGER_TELEGRAM_SECRET": SECRET,
    }


def poller(spawn: Spawn, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return spawn(
        [*VOXLEDGER, "telegram", "poll", "--timeout", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
        text=True,
    )


def test_polling_handles_each_update_once_across_a_restart(
    spawn: Spawn,
    poll_env: dict[str, str],
    poll_api: FakeTelegram,
    tmp_path: Path,
    engine_on_schema: Engine,
) -> None:
    chat = 8001
    poll_api.add_chat(chat, first_name="Ada")

    def said() -> list[str]:
        return [m["text"] for m in poll_api.messages(chat) if m["from"]["is_bot"]]

    first = poller(spawn, poll_env, tmp_path / "poll.log")
    poll_api.user_sends(chat, "/start")
    wait_for(lambda: len(said()) == 1, "the menu")
    poll_api.user_sends(chat, "interview")
    wait_for(lambda: len(said()) == 2, "the first question")
    # Killed once its sends are recorded: a send in flight at the kill may go out twice
    # (delivery is at least once, test_delivery_process.py); this is about updates.
    conversation = conversation_of(engine_on_schema, chat)
    wait_for(
        lambda: not engine_on_schema.pending_outbound(conversation).items, "the sends recorded"
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    poll_api.user_sends(chat, "1042")  # written while the bot was down
    second = poller(spawn, poll_env, tmp_path / "poll.log")
    # A new process starts, takes the lead of delivery and catches up: slow on a busy machine.
    wait_for(lambda: len(said()) == 3, "the answer to what was written meanwhile", timeout=90)
    poll_api.user_sends(chat, "21.11.2026")
    wait_for(lambda: len(said()) == 4, "the next question")
    assert said()[1:] == [AUDIO, DATE, "Who made the visit? Please send the employee's name."]
    wait_for(lambda: not poll_api.pending_updates(), "every update to be confirmed")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    # Each update once: the conversation holds each user message once.
    conversation = engine_on_schema.get_conversation(conversation_of(engine_on_schema, chat))
    users = [m.content for m in conversation.messages if m.role == "user"]
    assert users == ["/start", "interview", "1042", "21.11.2026"]


def test_set_webhook_sends_the_secret_and_the_updates_read_and_polling_then_says_to_delete_it(
    spawn: Spawn, poll_env: dict[str, str], poll_api: FakeTelegram, tmp_path: Path
) -> None:
    url = "https://bot.example.com/telegram/webhook"
    result = subprocess.run(
        [*VOXLEDGER, "telegram", "set-webhook", url], env=poll_env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (call,) = poll_api.calls_to("setWebhook")
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == ["message", "edited_message", "callback_query"]
    refused = subprocess.run(
        [*VOXLEDGER, "telegram", "poll", "--timeout", "1"],
        env=poll_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "voxledger telegram delete-webhook" in refused.stderr
    deleted = subprocess.run(
        [*VOXLEDGER, "telegram", "delete-webhook"], env=poll_env, capture_output=True, text=True
    )
    assert deleted.returncode == 0, deleted.stderr
    assert poll_api.calls_to("deleteWebhook")[-1].status == 200


@pytest.fixture
def engine_on_schema(database_url: str, schema: str) -> Iterator[Engine]:
    with open_engine(database_url, schema=schema) as e:
        yield e
