"""The local Bot API server enforces Telegram's rules: raw HTTP calls in the forms the real
server takes (query, form, JSON), its limits, its flood control and its error wording."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fake_telegram import FakeTelegram

PRIVATE = 100
GROUP = -4001
FORUM = -1009876543210


@pytest.fixture
def telegram(telegram_api: FakeTelegram) -> FakeTelegram:
    telegram_api.add_chat(PRIVATE, first_name="Ada", username="ada")
    telegram_api.add_chat(GROUP, title="Team")
    telegram_api.add_chat(FORUM, title="Forum", is_forum=True)
    telegram_api.add_forum_topic(FORUM, 12)
    return telegram_api


@pytest.fixture
def http(telegram: FakeTelegram) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{telegram.url}/bot{telegram.token}", timeout=10) as client:
        yield client


def answer(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    body = response.json()
    assert body.get("ok") is (response.status_code == 200)
    return response.status_code, body


def error(response: httpx.Response) -> tuple[int, str]:
    status, body = answer(response)
    assert body["error_code"] == status
    return status, body["description"]


def test_parameters_come_from_the_query_a_form_or_json_and_method_names_ignore_case(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    sends = [
        lambda: http.get("/sendMessage", params={"chat_id": PRIVATE, "text": "one"}),
        lambda: http.post("/SENDMESSAGE", data={"chat_id": str(PRIVATE), "text": "two"}),
        lambda: http.post("/sendmessage", json={"chat_id": PRIVATE, "text": "three"}),
        lambda: http.post(
            "/sendMessage", files={"chat_id": (None, str(PRIVATE)), "text": (None, "four")}
        ),
    ]
    texts = []
    for send in sends:
        telegram.clock.advance(1)  # one message a second keeps within flood control
        texts.append(answer(send())[1]["result"]["text"])
    assert texts == ["one", "two", "three", "four"]


def test_json_values_that_are_not_strings_arrive_as_their_json_text(http: httpx.Client) -> None:
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    as_object = http.post(
        "/sendMessage", json={"chat_id": PRIVATE, "text": "x", "reply_markup": markup}
    )
    as_string = http.post(
        "/sendMessage",
        json={"chat_id": str(PRIVATE), "text": "y", "reply_markup": json.dumps(markup)},
    )
    for response in (as_object, as_string):
        assert answer(response)[1]["result"]["reply_markup"] == markup


def test_unknown_methods_wrong_tokens_and_other_paths_are_refused(telegram: FakeTelegram) -> None:
    with httpx.Client(base_url=telegram.url) as client:
        assert error(client.post(f"/bot{telegram.token}/sendPigeon")) == (404, "Not Found")
        assert error(client.post("/bot123:nope/getMe")) == (401, "Unauthorized")
        assert error(client.get("/favicon.ico")) == (404, "Not Found")


def test_get_me_describes_the_bot(http: httpx.Client, telegram: FakeTelegram) -> None:
    _, body = answer(http.get("/getMe"))
    assert body["result"]["id"] == int(telegram.token.split(":")[0])
    assert body["result"]["is_bot"] is True
    assert {"first_name", "username", "can_join_groups"} <= set(body["result"])


def test_sent_messages_are_full_message_objects_dated_by_the_servers_clock(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    telegram.clock.advance(42)
    _, body = answer(http.post("/sendMessage", json={"chat_id": "@ada", "text": "hi"}))
    message = body["result"]
    assert message["date"] == int(telegram.clock())
    assert message["chat"] == {
        "id": PRIVATE,
        "first_name": "Ada",
        "username": "ada",
        "type": "private",
    }
    assert message["from"]["is_bot"] is True and message["message_id"] == 1


@pytest.mark.parametrize(
    "text, accepted",
    [
        ("x" * 4096, True),
        ("x" * 4097, False),
        ("😀" * 2048, True),  # 4096 UTF-16 units
        ("😀" * 2048 + "x", False),
        ("  " + "x" * 4096 + "\n\n", True),  # trimmed before it is measured
    ],
)
def test_text_length_is_counted_in_utf16_units_after_trimming(
    http: httpx.Client, text: str, accepted: bool
) -> None:
    response = http.post("/sendMessage", json={"chat_id": PRIVATE, "text": text})
    if accepted:
        assert response.status_code == 200
    else:
        assert error(response) == (400, "Bad Request: message is too long")


def test_length_is_measured_after_entities_are_parsed(http: httpx.Client) -> None:
    html = "<b>" + "x" * 4096 + "</b>"
    ok = http.post("/sendMessage", json={"chat_id": PRIVATE, "text": html, "parse_mode": "HTML"})
    message = answer(ok)[1]["result"]
    assert message["entities"] == [{"type": "bold", "offset": 0, "length": 4096}]
    empty = http.post(
        "/sendMessage", json={"chat_id": PRIVATE, "text": "<i> </i>", "parse_mode": "HTML"}
    )
    assert error(empty) == (400, "Bad Request: message text is empty")


@pytest.mark.parametrize(
    "text, mode, plain, entities",
    [
        (
            "<b>bold</b> &amp; <a href='https://x.org'>link</a>",
            "HTML",
            "bold & link",
            [
                {"type": "bold", "offset": 0, "length": 4},
                {"type": "text_link", "offset": 7, "length": 4, "url": "https://x.org"},
            ],
        ),
        (
            "😀 *bold* _it_ `co\\`de` \\. [a](https://x.org/\\))",
            "MarkdownV2",
            "😀 bold it co`de . a",
            [
                {"type": "bold", "offset": 3, "length": 4},
                {"type": "italic", "offset": 8, "length": 2},
                {"type": "code", "offset": 11, "length": 5},
                {"type": "text_link", "offset": 19, "length": 1, "url": "https://x.org/)"},
            ],
        ),
    ],
)
def test_entities_are_parsed_with_utf16_offsets(
    http: httpx.Client, text: str, mode: str, plain: str, entities: list[dict[str, Any]]
) -> None:
    body = {"chat_id": PRIVATE, "text": text, "parse_mode": mode}
    message = answer(http.post("/sendMessage", json=body))[1]["result"]
    assert message["text"] == plain
    assert message["entities"] == entities


@pytest.mark.parametrize(
    "text, mode, description",
    [
        (
            "1.5",
            "MarkdownV2",
            "Character '.' is reserved and must be escaped with the preceding '\\'",
        ),
        ("*open", "MarkdownV2", "Can't find end of Bold entity at byte offset 0"),
        ("<blink>x</blink>", "HTML", 'Unsupported start tag "blink" at byte offset 0'),
        ("<b>x</i>", "HTML", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
    ],
)
def test_markup_errors_are_worded_as_telegram_words_them(
    http: httpx.Client, text: str, mode: str, description: str
) -> None:
    response = http.post(
        "/sendMessage", json={"chat_id": PRIVATE, "text": text, "parse_mode": mode}
    )
    assert error(response) == (400, f"Bad Request: can't parse entities: {description}")
    unknown = http.post(
        "/sendMessage", json={"chat_id": PRIVATE, "text": "x", "parse_mode": "BBCode"}
    )
    assert error(unknown) == (400, "Bad Request: unsupported parse_mode")


@pytest.mark.parametrize(
    "params, description",
    [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": PRIVATE}, "Bad Request: message text is empty"),
        ({"chat_id": 555, "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": "@nobody", "text": "x"}, "Bad Request: chat not found"),
        (
            {"chat_id": PRIVATE, "text": "x", "reply_markup": "{"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            {"chat_id": PRIVATE, "text": "x", "reply_markup": "[]"},
            "Bad Request: object expected as reply markup",
        ),
        (
            {"chat_id": PRIVATE, "text": "x", "reply_markup": {"inline_keyboard": [{"text": "a"}]}},
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an '
            "Array of Arrays",
        ),
        (
            {
                "chat_id": PRIVATE,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a"}]]},
            },
            "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in "
            "the inline keyboard",
        ),
        (
            {
                "chat_id": PRIVATE,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"callback_data": "a"}]]},
            },
            "Bad Request: can't parse inline keyboard button: Can't find field \"text\"",
        ),
        (
            {
                "chat_id": PRIVATE,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "d" * 65}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {"chat_id": PRIVATE, "text": "x", "reply_parameters": {"chat_id": 1}},
            'Bad Request: can\'t find field "message_id"',
        ),
    ],
)
def test_send_message_enforces_its_parameters(
    http: httpx.Client, params: dict[str, Any], description: str
) -> None:
    assert error(http.post("/sendMessage", json=params)) == (400, description)


def test_callback_data_may_use_all_64_bytes(http: httpx.Client) -> None:
    markup = {"inline_keyboard": [[{"text": "a", "callback_data": "é" * 32}]]}
    response = http.post(
        "/sendMessage", json={"chat_id": PRIVATE, "text": "x", "reply_markup": markup}
    )
    assert response.status_code == 200


def test_message_thread_id_is_for_forum_topics_only(http: httpx.Client) -> None:
    def send(chat: int, thread: int) -> httpx.Response:
        return http.post(
            "/sendMessage", json={"chat_id": chat, "text": "x", "message_thread_id": thread}
        )

    in_topic = answer(send(FORUM, 12))[1]["result"]
    assert in_topic["message_thread_id"] == 12 and in_topic["is_topic_message"] is True
    for chat, thread in ((FORUM, 13), (FORUM, 1), (GROUP, 12), (PRIVATE, 12)):
        assert error(send(chat, thread)) == (400, "Bad Request: message thread not found")


def test_a_chat_gets_a_small_burst_then_about_one_message_a_second(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    def send() -> int:
        return http.post("/sendMessage", json={"chat_id": PRIVATE, "text": "x"}).status_code

    assert [send() for _ in range(4)] == [200, 200, 200, 429]
    refused = http.post("/sendMessage", json={"chat_id": PRIVATE, "text": "x"})
    assert refused.json()["parameters"] == {"retry_after": 1}
    assert refused.headers["Retry-After"] == "1"
    telegram.clock.advance(1)
    assert [send(), send()] == [200, 429]


def test_a_group_gets_twenty_messages_a_minute(http: httpx.Client, telegram: FakeTelegram) -> None:
    for _ in range(20):
        telegram.clock.advance(1.5)
        assert http.post("/sendMessage", json={"chat_id": GROUP, "text": "x"}).status_code == 200
    telegram.clock.advance(1.5)
    status, description = error(http.post("/sendMessage", json={"chat_id": GROUP, "text": "x"}))
    assert status == 429 and description.startswith("Too Many Requests: retry after ")
    retry_after = int(description.rsplit(" ", 1)[1])
    assert 1 <= retry_after <= 60
    telegram.clock.advance(retry_after)
    assert http.post("/sendMessage", json={"chat_id": GROUP, "text": "x"}).status_code == 200


def test_the_bot_gets_thirty_messages_a_second_over_all_chats(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    for chat in range(1, 32):
        telegram.add_chat(chat, first_name=f"user {chat}")
    codes = [
        http.post("/sendMessage", json={"chat_id": chat, "text": "x"}).status_code
        for chat in range(1, 32)
    ]
    assert codes == [200] * 30 + [429]


def test_get_updates_confirms_below_the_offset_clamps_the_limit_and_can_keep_the_last_n(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    ids = [telegram.user_sends(PRIVATE, f"m{n}")["update_id"] for n in range(5)]
    got = answer(http.post("/getUpdates", json={"limit": 0}))[1]["result"]
    assert [u["update_id"] for u in got] == ids
    one = answer(http.post("/getUpdates", json={"offset": ids[1], "limit": 1}))[1]["result"]
    assert [u["update_id"] for u in one] == [ids[1]]
    assert [u["update_id"] for u in telegram.pending_updates()] == ids[1:]
    last_two = answer(http.post("/getUpdates", json={"offset": -2}))[1]["result"]
    assert [u["update_id"] for u in last_two] == ids[3:]


def test_allowed_updates_filters_what_telegram_queues_afterwards(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    answer(http.post("/getUpdates", json={"allowed_updates": ["callback_query"]}))
    telegram.user_sends(PRIVATE, "dropped: messages are not wanted")
    assert telegram.pending_updates() == []
    answer(http.post("/getUpdates", json={"allowed_updates": []}))  # empty: the default set
    telegram.user_sends(PRIVATE, "kept")
    assert len(telegram.pending_updates()) == 1


def test_a_second_long_poll_ends_the_first_with_a_conflict(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    answers: dict[str, httpx.Response] = {}

    def poll(name: str) -> None:
        with httpx.Client(base_url=f"{telegram.url}/bot{telegram.token}", timeout=60) as client:
            answers[name] = client.post("/getUpdates", json={"timeout": 50})

    first = threading.Thread(target=poll, args=("first",))
    second = threading.Thread(target=poll, args=("second",))
    first.start()
    try:
        assert wait_until(lambda: telegram.long_polling)
        second.start()
        first.join(timeout=30)
        assert wait_until(lambda: telegram.long_polling)
        update = telegram.user_sends(PRIVATE, "for the poller still waiting")
    finally:
        first.join(timeout=30)
        if second.is_alive() or second.ident is not None:
            second.join(timeout=30)
    assert error(answers["first"]) == (
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot "
        "instance is running",
    )
    assert answer(answers["second"])[1]["result"] == [update]


def wait_until(condition: Callable[[], bool], attempts: int = 1000) -> bool:
    """Whether ``condition`` becomes true within a bounded number of short waits."""
    pause = threading.Event()
    for _ in range(attempts):
        if condition():
            return True
        pause.wait(0.01)
    return False


@pytest.mark.parametrize(
    "params, description",
    [
        (
            {"url": "http://bot.example.org/hook"},
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
        ),
        (
            {"url": "https://bot.example.org:8080/hook"},
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
        (
            {"url": "https://bot.example.org/hook", "secret_token": "not allowed!"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": "https://bot.example.org/hook", "secret_token": "s" * 257},
            "Bad Request: secret token is too long",
        ),
    ],
)
def test_set_webhook_enforces_https_ports_and_the_secret_tokens_alphabet(
    http: httpx.Client, params: dict[str, Any], description: str
) -> None:
    assert error(http.post("/setWebhook", json=params)) == (400, description)


def test_webhook_lifecycle_answers_with_telegrams_descriptions(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    hook = {"url": "https://bot.example.org:8443/hook", "secret_token": "A-z_09"}
    assert answer(http.post("/setWebhook", json=hook))[1]["description"] == "Webhook was set"
    # A second setWebhook within the same second meets flood control.
    assert error(http.post("/setWebhook", json={**hook, "url": "https://b.example.org/"}))[0] == 429
    telegram.clock.advance(1)
    assert answer(http.post("/setWebhook", json=hook))[1]["description"] == "Webhook is already set"
    status, conflict = error(http.post("/getUpdates"))
    assert status == 409 and conflict.startswith("Conflict: can't use getUpdates method")
    info = answer(http.get("/getWebhookInfo"))[1]["result"]
    assert info["url"] == hook["url"] and info["pending_update_count"] == 0
    assert answer(http.post("/deleteWebhook"))[1]["description"] == "Webhook was deleted"
    assert answer(http.post("/deleteWebhook"))[1]["description"] == "Webhook is already deleted"


def test_callback_queries_must_be_known_answered_once_and_briefly(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    answer(http.post("/sendMessage", json={"chat_id": PRIVATE, "text": "q"}))
    query = telegram.user_presses(PRIVATE, 1, "yes")
    long_text = {"callback_query_id": query, "text": "x" * 201}
    assert error(http.post("/answerCallbackQuery", json=long_text)) == (
        400,
        "Bad Request: MESSAGE_TOO_LONG",
    )
    ok = {"callback_query_id": query, "text": "x" * 200, "show_alert": True}
    assert answer(http.post("/answerCallbackQuery", json=ok))[1]["result"] is True
    expired = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    assert error(http.post("/answerCallbackQuery", json=ok)) == (400, expired)
    assert error(http.post("/answerCallbackQuery", json={"callback_query_id": "1"})) == (
        400,
        expired,
    )


def test_only_the_bots_own_messages_can_be_edited(
    http: httpx.Client, telegram: FakeTelegram
) -> None:
    telegram.user_sends(PRIVATE, "mine, not the bot's")
    edit = {"chat_id": PRIVATE, "message_id": 1, "text": "changed"}
    assert error(http.post("/editMessageText", json=edit)) == (
        400,
        "Bad Request: message can't be edited",
    )
    missing = {**edit, "message_id": 9}
    assert error(http.post("/editMessageText", json=missing)) == (
        400,
        "Bad Request: message to edit not found",
    )
