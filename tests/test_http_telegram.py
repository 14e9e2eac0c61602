"""The Telegram webhook on a real server: whole flows, duplicates, many users at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    SECRET,
    SECRET_HEADER,
    Server,
    button_update,
    client_fixture,
    conversation_of,
    events_stored,
    fixture,
    post_update,
    server_env_fixture,
    server_fixture,
    server_schema_fixture,
    text_update,
)

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.engine import Engine
from voxledger.domain.flow import FlowStatus

PROMPTS = {
    "audio_number": "What is the number of the audio recording?",
    "date": "When was the visit? For example 21.11.2026.",
    "employee": "Who made the visit? Please send the employee's name.",
    "place": "Which place was visited?",
    "zone": "Which zone of the building was visited?",
    "city": "Which city is {place} in?",
    "client_name": "What is the client's name?",
}
MENU = ("interview", "design")


@pytest.fixture
def engine(database_url: str, server_schema: str) -> Iterator[Engine]:
    """An engine of the test's own on the server's schema: to check what was stored."""
    with open_engine(database_url, schema=server_schema) as e:
        yield e


class TelegramChat:
    """One Telegram user writing to the bot through the webhook."""

    def __init__(self, client: httpx.Client, chat_id: int) -> None:
        self.client, self.chat_id, self.next_id = client, chat_id, 1

    def send(self, text: str) -> dict[str, Any]:
        self.next_id += 1
        return self.deliver(text_update(self.chat_id, self.next_id, text))

    def press(self, data: str) -> dict[str, Any]:
        self.next_id += 1
        return self.deliver(button_update(self.chat_id, f"q{self.next_id}", data))

    def deliver(self, update: dict[str, Any]) -> dict[str, Any]:
        response = post_update(self.client, update)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["method"] == "sendMessage" and body["chat_id"] == self.chat_id
        return body


def buttons(body: dict[str, Any]) -> list[str]:
    rows = body.get("reply_markup", {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in rows for button in row]


def test_the_interview_completes_over_the_webhook_with_an_edit_and_an_undo(
    client: httpx.Client, engine: Engine
) -> None:
    chat = TelegramChat(client, 1001)
    menu = chat.send("/start")
    assert buttons(menu) == list(MENU)
    assert chat.press("interview")["text"] == PROMPTS["audio_number"]
    assert chat.send("1042")["text"] == PROMPTS["date"]
    assert chat.send("21.11.2026")["text"] == PROMPTS["employee"]
    assert chat.send("/back")["text"] == PROMPTS["date"]
    assert chat.send("22.11.2026")["text"] == PROMPTS["employee"]
    assert chat.send("Ivan Petrov")["text"] == PROMPTS["place"]
    assert chat.send("Kazan Arena")["text"].startswith("What kind of building is Kazan Arena?")
    assert chat.send("factory")["text"] == PROMPTS["zone"]
    assert chat.send("north wing")["text"] == PROMPTS["client_name"]
    assert chat.send("OOO Romashka")["text"].startswith("Please check the report for audio 1042.")
    assert chat.send("/edit place")["text"] == PROMPTS["place"]
    summary = chat.send("Kazan Expo")["text"]
    assert "Place: Kazan Expo" in summary and "Date: 2026-11-22" in summary
    assert chat.send("yes")["text"] == "Thank you, all done. Your answers are saved."
    state = engine.get_conversation(conversation_of(engine, "1001"))
    assert state.active_flow_id is None
    (flow_started,) = [e for e in engine.history(state.id) if e.type == "FlowBegan"]
    flow = engine.get_flow(flow_started.data["flow_id"])
    assert flow.status is FlowStatus.COMPLETED
    assert flow.answers["place"] == "Kazan Expo" and flow.answers["building_type"] == "industrial"
    assert flow.mode == "interview"


def test_the_design_mode_completes_over_the_webhook_with_an_edit_and_an_undo(
    client: httpx.Client, engine: Engine
) -> None:
    chat = TelegramChat(client, 1002)
    group_start = fixture("group_command.json")  # "/start@VoxledgerBot design"
    group_start["message"]["chat"] = {"id": 1002, "type": "private", "first_name": "Ivan"}
    group_start["message"]["from"]["id"] = 1002
    group_start["message"]["message_id"] = 1  # the chat numbers its messages from 2 on
    assert chat.deliver(group_start)["text"] == PROMPTS["audio_number"]
    for answer in ("7", "1.12.2026", "Oleg", "School 5", "school"):
        chat.send(answer)
    assert chat.send("gym")["text"] == "Which city is School 5 in?"
    assert chat.send("/back")["text"] == PROMPTS["zone"]
    assert chat.send("assembly hall")["text"] == "Which city is School 5 in?"
    assert chat.send("Kazan")["text"].startswith("Please check the report for audio 7.")
    assert chat.send("no")["text"].startswith("What would you like to change?")
    assert chat.send("/edit city")["text"] == "Which city is School 5 in?"
    assert "City: Innopolis" in chat.send("Innopolis")["text"]
    assert chat.send("yes")["text"] == "Thank you, all done. Your answers are saved."
    state = engine.get_conversation(conversation_of(engine, "1002"))
    flows = [e.data["flow_id"] for e in engine.history(state.id) if e.type == "FlowBegan"]
    answers = engine.get_flow(flows[-1]).answers
    assert answers["city"] == "Innopolis" and answers["zone"] == "assembly hall"
    assert "client_name" not in answers


def test_the_same_update_twice_is_recorded_once_and_answered_alike(
    client: httpx.Client, engine: Engine
) -> None:
    chat = TelegramChat(client, 1003)
    chat.press("interview")
    update = text_update(1003, 500, "1042")
    first = chat.deliver(update)
    version = engine.get_conversation(conversation_of(engine, "1003")).version
    second = chat.deliver(update)
    assert second == first and first["text"] == PROMPTS["date"]
    assert engine.get_conversation(conversation_of(engine, "1003")).version == version


def test_the_same_update_sent_at_once_is_recorded_once_and_answered_alike(
    client: httpx.Client, engine: Engine
) -> None:
    chat = TelegramChat(client, 1004)
    chat.press("interview")
    update = text_update(1004, 600, "1042")
    barrier = threading.Barrier(8)

    def deliver(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            barrier.wait()
            return TelegramChat(own, 1004).deliver(update)

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(deliver, range(8)))
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["text"] == PROMPTS["date"]
    state = engine.get_conversation(conversation_of(engine, "1004"))
    assert [m.id for m in state.messages].count("600") == 1
    assert [m.id for m in state.messages].count("600:reply") == 1


def test_twenty_users_writing_at_once_each_finish_their_own_flow(
    client: httpx.Client, engine: Engine
) -> None:
    def conversation(n: int) -> list[str]:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            chat = TelegramChat(own, 2000 + n)
            mode = MENU[n % 2]
            said = [chat.press(mode)["text"]]
            answers = [str(n + 1), f"{n % 28 + 1}.11.2026", f"Employee {n}", f"Place {n}"]
            answers += ["office", f"Zone {n}", f"City {n}" if mode == "design" else f"Client {n}"]
            said += [chat.send(answer)["text"] for answer in answers]
            said.append(chat.send("yes")["text"])
            return said

    with ThreadPoolExecutor(20) as pool:
        transcripts = list(pool.map(conversation, range(20)))
    for n, said in enumerate(transcripts):
        last_question = "Which city is Place {n} in?" if n % 2 else PROMPTS["client_name"]
        assert said[0] == PROMPTS["audio_number"]
        assert said[6] == last_question.format(n=n)
        assert said[-2].startswith(f"Please check the report for audio {n + 1}.")
        assert said[-1] == "Thank you, all done. Your answers are saved."
        state = engine.get_conversation(conversation_of(engine, 2000 + n))
        (began,) = [e for e in engine.history(state.id) if e.type == "FlowBegan"]
        flow = engine.get_flow(began.data["flow_id"])
        assert flow.status is FlowStatus.COMPLETED and flow.mode == MENU[n % 2]
        assert flow.answers["employee"] == f"Employee {n}"
        assert flow.answers["audio_number"] == n + 1
        assert len(state.messages) == 2 * 9  # every message and its reply, once


@pytest.mark.parametrize("headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}])
def test_updates_without_the_right_secret_are_refused_and_record_nothing(
    client: httpx.Client, database_url: str, server_schema: str, headers: dict[str, str]
) -> None:
    before = events_stored(database_url, server_schema)
    response = client.post(
        "/telegram/webhook", json=text_update(1005, 1, "/start"), headers=headers
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "missing or wrong X-Telegram-Bot-Api-Secret-Token"
    assert events_stored(database_url, server_schema) == before


def test_updates_the_bot_does_not_read_are_acknowledged_and_record_nothing(
    client: httpx.Client, database_url: str, server_schema: str
) -> None:
    before = events_stored(database_url, server_schema)
    response = post_update(client, fixture("my_chat_member.json"))
    assert (response.status_code, response.json()) == (200, {})
    assert events_stored(database_url, server_schema) == before


@pytest.mark.parametrize("where", ["text", "first_name", "deep"])
def test_an_update_the_log_cannot_hold_is_acknowledged_and_records_nothing(
    client: httpx.Client, database_url: str, server_schema: str, where: str
) -> None:
    # NUL is refused at every edge; Telegram would redeliver a 4xx or 5xx for ever, so the
    # webhook answers 200 and records nothing (the refusal is in the log).
    update = text_update(1011, 1, "/start")
    if where == "text":
        update["message"]["text"] = "/start\x00"
    elif where == "first_name":
        update["message"]["from"]["first_name"] = "A\x00da"
    before = events_stored(database_url, server_schema)
    if where == "deep":  # nested past any real update: refused before it is decoded
        body = b'{"update_id": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        headers = {**SECRET_HEADER, "Content-Type": "application/json"}
        response = client.post("/telegram/webhook", content=body, headers=headers)
        assert response.status_code == 400 and "nested" in response.json()["detail"]
    else:
        response = post_update(client, update)
        assert (response.status_code, response.json()) == (200, {})
    assert events_stored(database_url, server_schema) == before


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ("no update_id", "body: Object missing required field `update_id`"),
        ("a chat id in words", "body.message.chat.id: Expected `int`, got `str`"),
    ],
)
def test_an_update_with_a_nul_and_another_fault_is_refused_for_the_other(
    client: httpx.Client, database_url: str, server_schema: str, fault: str, named: str
) -> None:
    # The decoder names the first fault it meets; when that is the NUL, what else is wrong
    # still decides: only an update whose one fault is a NUL is acknowledged.
    update = text_update(1012, 1, "/start")
    sender = update["message"].pop("from")
    update["message"] = {"from": {**sender, "first_name": "A\x00da"}, **update["message"]}
    if fault == "no update_id":
        del update["update_id"]
    else:
        update["message"]["chat"]["id"] = "one"
    before = events_stored(database_url, server_schema)
    for params in ({}, {"via": "route"}):  # the chat lane, and Litestar's route
        headers = {**SECRET_HEADER, "Content-Type": "application/json"}
        response = client.post(
            "/telegram/webhook", content=json.dumps(update), headers=headers, params=params
        )
        assert (response.status_code, response.json()["detail"]) == (400, named)
    assert events_stored(database_url, server_schema) == before


def test_a_sticker_where_text_is_expected_gets_a_reply_saying_so(client: httpx.Client) -> None:
    chat = TelegramChat(client, 1008)
    chat.press("interview")
    sticker = fixture("sticker.json")
    sticker["message"]["chat"]["id"] = sticker["message"]["from"]["id"] = 1008
    said = chat.deliver(sticker)["text"]
    assert said == f"I can only read text here, not a sticker.\n{PROMPTS['audio_number']}"


def test_an_edited_answer_changes_its_field_and_the_form_stays_where_it_is(
    client: httpx.Client, engine: Engine
) -> None:
    chat = TelegramChat(client, 1006)
    chat.press("interview")
    chat.deliver(text_update(1006, 101, "1042"))  # the message the fixture edits
    assert chat.send("21.11.2026")["text"] == PROMPTS["employee"]
    edited = fixture("edited_message.json")  # message 101, now "1043"
    edited["edited_message"]["chat"]["id"] = edited["edited_message"]["from"]["id"] = 1006
    said = chat.deliver(edited)["text"]
    assert said == f"Changed Audio number to 1043.\n{PROMPTS['employee']}"
    state = engine.get_conversation(conversation_of(engine, 1006))
    flow = engine.get_flow(state.active_flow_id)  # type: ignore[arg-type]
    assert flow.answers["audio_number"] == 1043 and flow.step == "employee"
    assert "place" not in flow.answers  # nothing written into the step it was at
    # An edit of a message that answered nothing the form holds is ignored.
    version = state.version
    edited["edited_message"].update(message_id=99, edit_date=1795276900, text="/cancel")
    assert post_update(client, edited).json() == {}
    assert engine.get_conversation(state.id).version == version


def test_a_webhook_server_without_a_secret_refuses_every_update(
    server_env: dict[str, str], tmp_path: Any, database_url: str, server_schema: str
) -> None:
    env = {**server_env, "VOXLEDGER_TELEGRAM_SECRET": ""}
    unsecured = Server(env, tmp_path / "server.log").start()
    try:
        before = events_stored(database_url, server_schema)
        response = httpx.post(
            f"{unsecured.url}/telegram/webhook",
            json=text_update(1007, 1, "/start"),
            headers={"X-Telegram-Bot-Api-Secret-Token": ""},
        )
        assert response.status_code == 403
        assert "VOXLEDGER_TELEGRAM_SECRET is not set" in response.json()["detail"]
        assert events_stored(database_url, server_schema) == before
    finally:
        unsecured.stop()
