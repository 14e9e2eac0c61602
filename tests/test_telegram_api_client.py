"""The Telegram Bot API client against the local Bot API server, over real HTTP: typed
results, the protocol on the wire, and every failure as RetryAfter, Transient or Rejected."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from fake_http import DropConnection, HttpRequest, HttpResponse, LocalHttpServer
from fake_telegram import FakeTelegram, Fault

from voxledger.adapters.chat.delivery_errors import (
    DeliveryError,
    Rejected,
    RetryAfter,
    Transient,
)
from voxledger.adapters.chat.telegram import InlineKeyboardButton, InlineKeyboardMarkup
from voxledger.adapters.chat.telegram_api import ReplyParameters, TelegramBotApi
from voxledger.domain.errors import VoxledgerError

CHAT = 4242
KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", "yes")]])


def run(server: FakeTelegram, scenario: Callable[[TelegramBotApi], Awaitable[Any]]) -> Any:
    """Run ``scenario`` with a client pointed at the local server."""

    async def main() -> Any:
        async with TelegramBotApi(server.token, base_url=server.url, timeout=5.0) as bot:
            return await scenario(bot)

    return anyio.run(main)


def failure(server: FakeTelegram, call: Callable[[TelegramBotApi], Awaitable[Any]]) -> Exception:
    """The delivery error ``call`` raises against the server."""

    async def scenario(bot: TelegramBotApi) -> Exception:
        with pytest.raises(DeliveryError) as caught:
            await call(bot)
        return caught.value

    return run(server, scenario)


@pytest.fixture
def telegram(telegram_api: FakeTelegram) -> FakeTelegram:
    telegram_api.add_chat(CHAT, first_name="Ada")
    return telegram_api


def test_get_me_returns_the_bot_the_token_belongs_to(telegram: FakeTelegram) -> None:
    me = run(telegram, lambda bot: bot.get_me())
    assert me.id == int(telegram.token.split(":")[0])
    assert me.is_bot and me.username == "voxledger_test_bot" and me.first_name == "Voxledger"


def test_send_message_returns_the_recorded_message_with_increasing_ids_and_the_servers_date(
    telegram: FakeTelegram,
) -> None:
    async def scenario(bot: TelegramBotApi) -> list[Any]:
        first = await bot.send_message(CHAT, "Hello", reply_markup=KEYBOARD)
        telegram.clock.advance(5)
        second = await bot.send_message(CHAT, "Again")
        return [first, second]

    first, second = run(telegram, scenario)
    assert (first.message_id, second.message_id) == (1, 2)
    assert second.date == first.date + 5 == int(telegram.clock())
    assert first.chat.id == CHAT and first.chat.type == "private"
    assert first.sender is not None and first.sender.is_bot and first.text == "Hello"
    assert telegram.messages(CHAT)[0]["reply_markup"] == {
        "inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]
    }


def test_calls_are_json_posts_to_the_bot_path_with_only_the_parameters_given(
    telegram: FakeTelegram,
) -> None:
    telegram.add_chat(-1001234567890, title="Forum", is_forum=True)
    telegram.add_forum_topic(-1001234567890, 7)

    async def scenario(bot: TelegramBotApi) -> None:
        sent = await bot.send_message(-1001234567890, "In a topic", message_thread_id=7)
        await bot.send_message(
            -1001234567890,
            "A reply",
            reply_parameters=ReplyParameters(sent.message_id),
            reply_markup=KEYBOARD,
        )

    run(telegram, scenario)
    first, second = telegram.calls_to("sendMessage")
    assert first.params == {"chat_id": -1001234567890, "text": "In a topic", "message_thread_id": 7}
    assert second.params["reply_parameters"] == {"message_id": 1}
    assert second.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]
    }
    # A reply lands in the topic of the message it answers.
    assert telegram.messages(-1001234567890)[1]["message_thread_id"] == 7
    assert all(call.status == 200 for call in telegram.calls)


def test_flood_control_reaches_the_caller_as_retry_after_with_telegrams_seconds(
    telegram: FakeTelegram,
) -> None:
    async def scenario(bot: TelegramBotApi) -> RetryAfter:
        for n in range(telegram.per_chat_burst):
            await bot.send_message(CHAT, f"burst {n}")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(CHAT, "one too many")
        telegram.clock.advance(caught.value.seconds)
        await bot.send_message(CHAT, "after waiting as told")
        return caught.value

    refused = run(telegram, scenario)
    assert refused.seconds == 1 and refused.retryable
    assert "Too Many Requests: retry after 1" in str(refused)
    assert [c.status for c in telegram.calls_to("sendMessage")] == [200, 200, 200, 429, 200]


def test_a_429s_retry_after_value_reaches_the_caller_unchanged(telegram: FakeTelegram) -> None:
    telegram.fail_next(Fault.too_many_requests(37), chat_id=CHAT)
    refused = failure(telegram, lambda bot: bot.send_message(CHAT, "hi"))
    assert isinstance(refused, RetryAfter) and refused.seconds == 37


def test_server_errors_and_the_proxys_gateway_pages_are_transient(telegram: FakeTelegram) -> None:
    for status in (500, 502, 503, 504):
        telegram.fail_next(Fault.server_error(status), chat_id=CHAT)
        error = failure(telegram, lambda bot: bot.send_message(CHAT, "hi"))
        assert isinstance(error, Transient) and error.retryable, status
        assert str(status) in str(error)


def test_a_dropped_connection_is_transient_and_the_message_may_have_arrived(
    telegram: FakeTelegram,
) -> None:
    telegram.fail_next(Fault.drop_connection(), chat_id=CHAT)
    error = failure(telegram, lambda bot: bot.send_message(CHAT, "hi"))
    assert isinstance(error, Transient) and error.may_have_arrived


def test_a_refused_connection_is_transient_and_nothing_arrived() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> Transient:
        async with TelegramBotApi("1:x", base_url=f"http://127.0.0.1:{port}") as bot:
            with pytest.raises(Transient) as caught:
                await bot.get_me()
            return caught.value

    error = anyio.run(main)
    assert not error.may_have_arrived and "ConnectError" in str(error)


def serve(handler: Callable[[HttpRequest], Awaitable[HttpResponse | DropConnection]]) -> Any:
    """A server answering every request with ``handler``, for answers Telegram should never
    give."""
    return LocalHttpServer(handler).start()


def call_against(server: LocalHttpServer, timeout: float = 5.0) -> Exception:
    async def main() -> Exception:
        async with TelegramBotApi("1:x", base_url=server.url, timeout=timeout) as bot:
            with pytest.raises(DeliveryError) as caught:
                await bot.send_message(1, "hi")
            return caught.value

    try:
        return anyio.run(main)
    finally:
        server.stop()


def test_a_server_that_does_not_answer_in_time_is_transient() -> None:
    async def silent(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(30)
        return HttpResponse(200, b"{}")

    error = call_against(serve(silent), timeout=0.2)
    assert isinstance(error, Transient) and error.may_have_arrived
    assert "ReadTimeout" in str(error)


@pytest.mark.parametrize(
    "status, body",
    [
        (200, b"<html>maintenance</html>"),
        (200, b'{"ok": true, "result": {"message_id": "not a number"}}'),
        (200, b'{"result": 1}'),
        (200, b'{"ok": false, "error_code": 200, "description": "odd"}'),
        (302, b""),
    ],
)
def test_malformed_answers_are_transient(status: int, body: bytes) -> None:
    async def odd(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status, body)

    error = call_against(serve(odd))
    assert isinstance(error, Transient)
    assert "malformed answer" in str(error)


def test_a_4xx_that_is_not_a_bot_api_answer_is_rejected_with_the_http_status() -> None:
    async def proxy(request: HttpRequest) -> HttpResponse:
        return HttpResponse(403, b"<html>denied</html>", "text/html")

    error = call_against(serve(proxy))
    assert isinstance(error, Rejected) and error.code == 403


def test_unknown_chats_blocked_users_and_bad_tokens_are_rejected_with_telegrams_words(
    telegram: FakeTelegram,
) -> None:
    telegram.add_chat(777, first_name="Bob")
    telegram.block(777)
    unknown = failure(telegram, lambda bot: bot.send_message(999, "hi"))
    blocked = failure(telegram, lambda bot: bot.send_message(777, "hi"))
    assert isinstance(unknown, Rejected) and not unknown.retryable
    assert (unknown.code, unknown.description) == (400, "Bad Request: chat not found")
    assert isinstance(blocked, Rejected)
    assert (blocked.code, blocked.description) == (403, "Forbidden: bot was blocked by the user")

    async def wrong_token() -> Rejected:
        async with TelegramBotApi("123:wrong", base_url=telegram.url) as bot:
            with pytest.raises(Rejected) as caught:
                await bot.get_me()
            return caught.value

    refused = anyio.run(wrong_token)
    assert (refused.code, refused.description) == (401, "Unauthorized")


def test_injected_chat_faults_are_rejections_for_that_chat_only(telegram: FakeTelegram) -> None:
    telegram.add_chat(5, first_name="Eve")
    telegram.fail_next(Fault.chat_not_found(), chat_id=CHAT)
    telegram.fail_next(Fault.blocked_by_user(), chat_id=CHAT)

    async def scenario(bot: TelegramBotApi) -> list[int]:
        codes = []
        await bot.send_message(5, "another chat is not affected")
        for _ in range(2):
            with pytest.raises(Rejected) as caught:
                await bot.send_message(CHAT, "hi")
            codes.append(caught.value.code)
        await bot.send_message(CHAT, "the faults are used up")
        return codes

    assert run(telegram, scenario) == [400, 403]


@pytest.mark.parametrize(
    "send, description",
    [
        (lambda bot: bot.send_message(CHAT, "x" * 4097), "Bad Request: message is too long"),
        (lambda bot: bot.send_message(CHAT, "   "), "Bad Request: message text is empty"),
        (
            lambda bot: bot.send_message(
                CHAT,
                "hi",
                reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Go", "é" * 33)]]),
            ),
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            lambda bot: bot.send_message(CHAT, "hi", message_thread_id=3),
            "Bad Request: message thread not found",
        ),
        (
            lambda bot: bot.send_message(CHAT, "hi", reply_parameters=ReplyParameters(99)),
            "Bad Request: message to be replied not found",
        ),
        (
            lambda bot: bot.send_message(CHAT, "<b>hi", parse_mode="HTML"),
            "Bad Request: can't parse entities: "
            'Can\'t find end tag corresponding to start tag "b"',
        ),
    ],
)
def test_requests_breaking_the_apis_rules_are_rejected(
    telegram: FakeTelegram, send: Callable[[TelegramBotApi], Awaitable[Any]], description: str
) -> None:
    error = failure(telegram, send)
    assert isinstance(error, Rejected)
    assert (error.code, error.description) == (400, description)


def test_editing_replaces_text_and_buttons_and_an_identical_edit_is_rejected(
    telegram: FakeTelegram,
) -> None:
    async def scenario(bot: TelegramBotApi) -> Rejected:
        sent = await bot.send_message(CHAT, "Choose", reply_markup=KEYBOARD)
        telegram.clock.advance(3)
        edited = await bot.edit_message_text(CHAT, sent.message_id, "Chosen", reply_markup=KEYBOARD)
        assert edited.text == "Chosen" and edited.edit_date == int(telegram.clock())
        stripped = await bot.edit_message_reply_markup(CHAT, sent.message_id)
        assert stripped.message_id == sent.message_id
        with pytest.raises(Rejected) as caught:
            await bot.edit_message_text(CHAT, sent.message_id, "Chosen")
        return caught.value

    refused = run(telegram, scenario)
    assert refused.description.startswith("Bad Request: message is not modified")
    assert "reply_markup" not in telegram.messages(CHAT)[0]


def test_a_button_press_is_answered_once(telegram: FakeTelegram) -> None:
    async def scenario(bot: TelegramBotApi) -> Rejected:
        sent = await bot.send_message(CHAT, "Choose", reply_markup=KEYBOARD)
        query_id = telegram.user_presses(CHAT, sent.message_id, "yes")
        (update,) = await bot.get_updates(timeout=0)
        assert update.callback_query is not None and update.callback_query.id == query_id
        assert await bot.answer_callback_query(query_id, text="Noted", show_alert=True)
        with pytest.raises(Rejected) as caught:
            await bot.answer_callback_query(query_id, text="again")
        return caught.value

    refused = run(telegram, scenario)
    assert refused.description == (
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    )
    (answer,) = telegram.callback_answers.values()
    assert answer == {"text": "Noted", "show_alert": True, "url": ""}


def test_deleting_a_message_removes_it_and_a_second_delete_is_rejected(
    telegram: FakeTelegram,
) -> None:
    async def scenario(bot: TelegramBotApi) -> Rejected:
        sent = await bot.send_message(CHAT, "Oops")
        assert await bot.delete_message(CHAT, sent.message_id)
        with pytest.raises(Rejected) as caught:
            await bot.delete_message(CHAT, sent.message_id)
        return caught.value

    assert run(telegram, scenario).description == "Bad Request: message to delete not found"
    assert telegram.messages(CHAT) == []


def test_get_updates_waits_for_the_next_update_and_an_offset_confirms_the_earlier_ones(
    telegram: FakeTelegram,
) -> None:
    first = telegram.user_sends(CHAT, "one")

    async def scenario(bot: TelegramBotApi) -> list[Any]:
        (update,) = await bot.get_updates(timeout=0)
        assert update.update_id == first["update_id"] and update.message is not None

        async def later() -> None:
            await anyio.sleep(0.2)
            telegram.user_sends(CHAT, "two")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(later)
            waited = await bot.get_updates(offset=update.update_id + 1, timeout=30)
        return waited

    (second,) = run(telegram, scenario)
    assert second.message is not None and second.message.text == "two"
    assert [u["update_id"] for u in telegram.pending_updates()] == [second.update_id]
    assert telegram.calls_to("getUpdates")[1].params["timeout"] == 30


def test_an_update_the_bot_cannot_read_still_comes_back_so_polling_moves_past_it(
    telegram: FakeTelegram,
) -> None:
    queued = telegram.queue_update(
        {"message": {"message_id": 1, "chat": {"id": CHAT}, "text": "nul \x00 inside"}}
    )
    (update,) = run(telegram, lambda bot: bot.get_updates())
    assert update.update_id == queued["update_id"] and update.message is None


def test_a_webhook_is_set_reported_and_deleted_and_polling_conflicts_with_it(
    telegram: FakeTelegram,
) -> None:
    async def scenario(bot: TelegramBotApi) -> Rejected:
        assert await bot.set_webhook(
            "https://bot.example.org/telegram",
            secret_token="s3cr3t-_",
            allowed_updates=["message", "callback_query"],
        )
        info = await bot.get_webhook_info()
        assert info.url == "https://bot.example.org/telegram"
        assert sorted(info.allowed_updates or []) == ["callback_query", "message"]
        with pytest.raises(Rejected) as caught:
            await bot.get_updates()
        assert await bot.delete_webhook(drop_pending_updates=True)
        assert (await bot.get_webhook_info()).url == ""
        assert await bot.get_updates() == []
        return caught.value

    conflict = run(telegram, scenario)
    assert conflict.code == 409 and "use deleteWebhook" in conflict.description


def test_the_token_never_shows_in_logs_errors_or_the_clients_repr(
    telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    secret = telegram.token.split(":")[1]
    telegram.fail_next(Fault.drop_connection(), chat_id=CHAT)
    caplog.set_level(logging.DEBUG)

    async def scenario(bot: TelegramBotApi) -> list[str]:
        seen = [repr(bot), str(bot)]
        await bot.get_me()
        for call in (bot.send_message(CHAT, "hi"), bot.send_message(1, "hi")):
            with pytest.raises(VoxledgerError) as caught:
                await call
            seen += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
        return seen

    texts = run(telegram, scenario)
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    for text in texts + [r.getMessage() for r in caplog.records]:
        assert secret not in text


def test_the_wire_format_is_plain_json(telegram: FakeTelegram) -> None:
    run(telegram, lambda bot: bot.send_message(CHAT, "héllo 👋"))
    (call,) = telegram.calls_to("sendMessage")
    assert json.dumps(call.params, ensure_ascii=False) == ('{"chat_id": 4242, "text": "héllo 👋"}')


def test_buttons_may_be_given_as_the_bot_apis_own_json_object(telegram: FakeTelegram) -> None:
    markup = {"inline_keyboard": [[{"text": "Docs", "url": "https://example.org/docs"}]]}
    sent = run(
        telegram,
        lambda bot: bot.send_message(
            CHAT, "Read", markup, None, {"message_id": 9, "allow_sending_without_reply": True}
        ),
    )
    assert sent.text == "Read"
    assert telegram.messages(CHAT)[0]["reply_markup"] == markup
