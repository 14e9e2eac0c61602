"""The delivery worker against the local Bot API and Cloud API servers, over real HTTP, on the
servers' own clock (the worker's waits move it): what the bot recorded is sent in order per
chat, within the limits, and each outcome is recorded once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from itertools import count
from typing import Any
from uuid import UUID

import anyio
import pytest
from conftest import StepClock
from fake_http import ManualClock
from fake_telegram import FakeTelegram, Fault
from fake_whatsapp import FakeWhatsApp, GraphFault

from voxledger.adapters.bootstrap import catch_up, open_delivery, open_senders, open_services
from voxledger.adapters.chat.bot import ChatBot, Incoming, Reply
from voxledger.adapters.chat.channels import ChannelSettings, Template
from voxledger.adapters.chat.delivery import DeliveryWorker
from voxledger.adapters.services import Services
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_definition import FlowDefinition

CHAT = 4242
VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
PROMPTS = {
    "audio_number": "What is the number of the audio recording?",
    "date": "When was the visit? For example 21.11.2026.",
}
MENU = "Audio visit report: choose interview or design."


class World:
    """A bot with the delivery worker, and a fake platform whose clock the worker's waits move."""

    def __init__(
        self, services: Services, platform_clock: ManualClock, flow: str = "intake"
    ) -> None:
        self.services = services
        self.engine = services.engine
        self.bot: ChatBot = services.bot(flow)
        self.clock = platform_clock
        self.ids = count(1)

    def say(self, text: str, chat: int = CHAT, **kw: Any) -> Reply:
        kw.setdefault("message_id", str(next(self.ids)))
        kw.setdefault("user_id", str(chat))
        kw.setdefault("channel", "telegram")
        return self.bot.handle_chat(Incoming(chat_id=str(chat), text=text, **kw))

    def press(self, data: str, message_id: int, chat: int = CHAT, query: str = "") -> Reply:
        query = query or f"q{next(self.ids)}"
        return self.say(
            data,
            chat,
            choice=True,
            message_id=f"callback:{query}",
            callback_id=query,
            keyboard_message=str(message_id),
        )

    async def sleep(self, seconds: float) -> None:
        """The worker's waits: the platform's clock moves on, at once."""
        self.clock.advance(max(0.0, seconds))
        await anyio.sleep(0)

    def deliver(self) -> int:
        """Run the delivery worker until nothing is pending; how many it delivered."""

        async def drain() -> int:
            senders = open_senders(self.services.channels)
            worker: DeliveryWorker = open_delivery(
                self.services, senders, clock=self.clock, sleep=self.sleep, lead=False
            )
            try:
                return await worker.drain()
            finally:
                for sender in senders.values():
                    await sender.aclose()

        return anyio.run(drain)

    def close(self) -> None:
        self.services.close()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    server = FakeTelegram(clock=ManualClock()).start()
    server.add_chat(CHAT, first_name="Ada")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def world(
    database_url: str, schema: str, clock: StepClock, telegram: FakeTelegram
) -> Iterator[World]:
    channels = ChannelSettings(telegram_token=telegram.token, telegram_api_url=telegram.url)
    services = open_services(database_url, schema=schema, clock=clock, channels=channels)
    w = World(services, telegram.clock)  # type: ignore[arg-type]
    try:
        yield w
    finally:
        w.close()


def texts(telegram: FakeTelegram, chat: int = CHAT) -> list[str]:
    return [m["text"] for m in telegram.messages(chat) if m["from"]["is_bot"]]


def outcomes(world: World, conversation_id: UUID) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.data)
        for e in world.engine.history(conversation_id)
        if e.type in ("OutboundDelivered", "OutboundFailed")
    ]


def test_a_reply_is_sent_after_the_save_that_records_it_and_its_outcome_recorded(
    world: World, telegram: FakeTelegram
) -> None:
    reply = world.say("/start")
    assert reply.outbound == ("1:reply",)
    assert telegram.calls_to("sendMessage") == []  # recorded, not sent yet
    assert world.deliver() == 1
    (sent,) = telegram.messages(CHAT)
    assert sent["text"].startswith(MENU)
    keyboard = sent["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in keyboard] == ["interview", "design"]
    assert reply.conversation_id is not None
    assert outcomes(world, reply.conversation_id) == [
        ("OutboundDelivered", {"item_id": "1:reply", "platform_ids": ["1"], "complete": True})
    ]
    assert world.deliver() == 0  # nothing recorded is sent twice
    catch_up(world.services.store)
    assert world.services.projections.outbox(["telegram"]) == []
    trail = [entry.summary for entry in world.services.projections.audit(reply.conversation_id)]
    assert trail[-2].startswith("reply queued on telegram: ")
    assert trail[-1] == "1:reply delivered as 1"


def test_a_button_press_is_answered_once_and_its_keyboard_taken_off(
    world: World, telegram: FakeTelegram
) -> None:
    world.say("/start")
    world.deliver()
    menu = telegram.messages(CHAT)[0]
    query = telegram.user_presses(CHAT, menu["message_id"], "interview")
    started = world.press("interview", menu["message_id"], query=query)
    assert started.text == PROMPTS["audio_number"]
    world.deliver()
    assert [c.params["callback_query_id"] for c in telegram.calls_to("answerCallbackQuery")] == [
        query
    ]
    assert query in telegram.callback_answers
    assert "reply_markup" not in telegram.messages(CHAT)[0]  # the used menu has no buttons
    assert texts(telegram)[-1] == PROMPTS["audio_number"]
    # The order of the calls is the order recorded: answer, unbutton, reply.
    names = [c.name for c in telegram.calls][-3:]
    assert names == ["answercallbackquery", "editmessagereplymarkup", "sendmessage"]


# A flow whose menu is longer than one Telegram message: its title is.
LONG_TITLE = "\n\n".join(f"Paragraph {n}: " + "word " * 300 for n in range(8))  # ~12,000 chars
LONG = FlowDefinition.from_mapping(
    {
        "name": "long",
        "version": 1,
        "title": LONG_TITLE,
        "modes": ["yes", "no"],
        "steps": [{"name": "a", "prompt": "A?"}],
    }
)


@pytest.fixture
def long_world(
    database_url: str, schema: str, clock: StepClock, telegram: FakeTelegram
) -> Iterator[World]:
    channels = ChannelSettings(telegram_token=telegram.token, telegram_api_url=telegram.url)
    services = open_services(
        database_url, schema=schema, clock=clock, channels=channels, flows=[LONG]
    )
    w = World(services, telegram.clock, "long")  # type: ignore[arg-type]
    try:
        yield w
    finally:
        w.close()


def test_a_reply_longer_than_telegram_takes_is_split_with_the_buttons_on_the_last_part(
    long_world: World, telegram: FakeTelegram
) -> None:
    menu = long_world.say("/start")
    assert menu.conversation_id is not None
    long_world.deliver()
    sent = telegram.messages(CHAT)
    assert len(sent) >= 3
    assert all(len(m["text"]) <= 4096 for m in sent)
    assert " ".join(m["text"] for m in sent).split() == menu.text.split()
    assert [("reply_markup" in m) for m in sent] == [False] * (len(sent) - 1) + [True]
    # Each part is recorded as it goes (so that a crash repeats at most one), the last as done.
    recorded = [d for _, d in outcomes(long_world, menu.conversation_id)]
    assert [i for d in recorded for i in d["platform_ids"]] == [str(m["message_id"]) for m in sent]
    assert [d["complete"] for d in recorded] == [False] * (len(sent) - 1) + [True]


def test_a_long_reply_cut_short_by_a_crash_resumes_after_its_last_recorded_part(
    long_world: World, telegram: FakeTelegram
) -> None:
    menu = long_world.say("/start")
    assert menu.conversation_id is not None
    # A worker sent the first part and recorded it, then died.
    long_world.engine.record_delivered(menu.conversation_id, "1:reply", ["1"], complete=False)
    long_world.deliver()
    rest = texts(telegram)
    assert rest and not rest[0].startswith("Paragraph 0:")  # the first part is not sent again
    assert " ".join(rest).split()[-8:] == menu.text.split()[-8:]


def test_a_429_is_waited_out_as_long_as_telegram_says(world: World, telegram: FakeTelegram) -> None:
    telegram.fail_next(Fault.too_many_requests(7), chat_id=CHAT)
    world.say("/start")
    world.deliver()
    first, second = telegram.calls_to("sendMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 7  # on Telegram's own clock
    assert len(texts(telegram)) == 1


def test_server_errors_are_retried_with_growing_pauses_and_recorded_as_they_happen(
    world: World, telegram: FakeTelegram
) -> None:
    telegram.fail_next(Fault.server_error(502), chat_id=CHAT, times=2)
    reply = world.say("/start")
    assert reply.conversation_id is not None
    world.deliver()
    calls = telegram.calls_to("sendMessage")
    assert [c.status for c in calls] == [502, 502, 200]
    assert calls[2].at - calls[1].at > calls[1].at - calls[0].at > 0  # backing off
    assert [t for t, _ in outcomes(world, reply.conversation_id)] == [
        "OutboundFailed", "OutboundFailed", "OutboundDelivered",
    ]  # fmt: skip
    failed = outcomes(world, reply.conversation_id)[0][1]
    assert failed["final"] is False and "502" in failed["reason"]


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        (Fault.blocked_by_user(), 403, "Forbidden: bot was blocked by the user"),
        (Fault.chat_not_found(), 400, "Bad Request: chat not found"),
    ],
)
def test_a_refusal_is_not_retried_and_is_recorded_with_its_reason(
    world: World, telegram: FakeTelegram, fault: Fault, code: int, reason: str
) -> None:
    telegram.fail_next(fault, chat_id=CHAT)
    reply = world.say("/start")
    assert reply.conversation_id is not None
    world.deliver()
    assert len(telegram.calls_to("sendMessage")) == 1
    assert outcomes(world, reply.conversation_id) == [
        ("OutboundFailed", {"item_id": "1:reply", "reason": reason, "code": code, "final": True})
    ]
    assert world.engine.pending_outbound(reply.conversation_id).items == ()


def test_each_chat_gets_its_messages_in_the_order_recorded_within_the_rate_limits(
    world: World, telegram: FakeTelegram
) -> None:
    chats = [CHAT, 5001, 5002]
    for chat in chats[1:]:
        telegram.add_chat(chat, first_name="Bo")
    said: dict[int, list[str]] = {chat: [] for chat in chats}
    for chat in chats:
        said[chat].append(world.say("interview", chat).text)
        for answer in ("1042", "31.02.2026", "21.11.2026", "Ivan", "Kazan Arena", "office"):
            said[chat].append(world.say(answer, chat).text)
    world.deliver()
    for chat in chats:
        assert texts(telegram, chat) == said[chat]
    sends = telegram.calls_to("sendMessage")
    assert all(c.status == 200 for c in sends)  # no 429: the worker kept within the limits
    per_chat = [c.at for c in sends if c.params["chat_id"] == CHAT]
    assert per_chat[-1] - per_chat[0] >= len(per_chat) - 3  # a burst of 3, then one a second


def test_a_forum_topic_is_answered_in_its_topic_and_a_group_member_keeps_their_own_form(
    world: World, telegram: FakeTelegram
) -> None:
    group = -1001234567890
    telegram.add_chat(group, title="Visits", is_forum=True)
    telegram.add_forum_topic(group, 77)
    alice, bob = 11, 22
    world.say(
        "/start interview",
        group,
        user_id=str(alice),
        group=True,
        thread="77",
        platform_message_id="5",
    )
    world.say(
        "/start design", group, user_id=str(bob), group=True, thread="77", platform_message_id="6"
    )
    world.say("1042", group, user_id=str(alice), group=True, thread="77", platform_message_id="7")
    chatter = world.say("nice weather", group, user_id="33", group=True, thread="77")
    assert not chatter.recorded and chatter.conversation_id is None  # not for the bot
    world.deliver()
    sends = telegram.calls_to("sendMessage")
    assert [c.params["message_thread_id"] for c in sends] == [77, 77, 77]
    # Each member's replies come in their order, each quoting the message it answers.
    quoted = [c.params["reply_parameters"]["message_id"] for c in sends]
    assert sorted(quoted) == [5, 6, 7] and quoted.index(5) < quoted.index(7)
    said = {c.params["reply_parameters"]["message_id"]: c.params["text"] for c in sends}
    assert said == {5: PROMPTS["audio_number"], 6: PROMPTS["audio_number"], 7: PROMPTS["date"]}


def test_an_erased_conversations_pending_messages_are_not_sent(
    world: World, telegram: FakeTelegram
) -> None:
    reply = world.say("/start")
    assert reply.conversation_id is not None
    world.engine.store.erase(reply.conversation_id)  # type: ignore[attr-defined]
    world.deliver()
    assert telegram.calls_to("sendMessage") == []
    assert outcomes(world, reply.conversation_id)[0][1]["reason"] == "the conversation was erased"


def test_an_expired_form_is_told_to_its_user(world: World, telegram: FakeTelegram) -> None:
    started = world.say("interview")
    world.deliver()
    assert started.flow_id is not None
    later = world.engine.get_flow(started.flow_id).updated_at + timedelta(minutes=6)
    assert world.engine.sweep(later, expiring=[started.flow_id]).expired == [started.flow_id]
    world.deliver()
    assert (
        texts(telegram)[-1] == "This form expired after a long pause. Send /start to begin again."
    )
    assert world.engine.get_flow(started.flow_id).status is FlowStatus.EXPIRED


def test_delivery_shows_in_the_metrics_per_channel_with_failures_by_reason(
    world: World, telegram: FakeTelegram
) -> None:
    world.say("/start")
    world.deliver()
    telegram.block(CHAT)
    world.say("interview")  # the reply, and taking the menu's buttons off: both refused
    world.deliver()
    catch_up(world.services.store)
    metrics = world.services.projections.delivery()
    (channel,) = metrics.channels
    assert (channel.channel, channel.delivered, channel.failed) == ("telegram", 1, 2)
    assert channel.latency.count == 1 and channel.latency.p50_ms is not None
    assert [h.delivered for h in metrics.hours] == [1]
    (failure,) = metrics.failures
    assert (failure.reason, failure.code, failure.failures) == (
        "Forbidden: bot was blocked by the user", "403", 2,
    )  # fmt: skip
    summary = world.services.projections.metrics()
    assert summary.delivery == metrics.channels and summary.delivery_failures == metrics.failures


# -- WhatsApp ------------------------------------------------------------------------------------

CUSTOMER = "447700900123"


@pytest.fixture
def whatsapp() -> Iterator[FakeWhatsApp]:
    server = FakeWhatsApp(clock=ManualClock()).start()
    try:
        yield server
    finally:
        server.stop()


def whatsapp_world(
    database_url: str, schema: str, clock: StepClock, fake: FakeWhatsApp, template: Template | None
) -> World:
    channels = ChannelSettings(
        whatsapp_token=fake.access_token,
        whatsapp_phone_number_id=fake.phone_number_id,
        whatsapp_api_url=fake.url,
        whatsapp_template=template,
    )
    services = open_services(database_url, schema=schema, clock=clock, channels=channels)
    return World(services, fake.clock)  # type: ignore[arg-type]


def test_whatsapp_replies_carry_their_choices_as_reply_buttons(
    database_url: str, schema: str, clock: StepClock, whatsapp: FakeWhatsApp
) -> None:
    world = whatsapp_world(database_url, schema, clock, whatsapp, None)
    try:
        whatsapp.customer_wrote(CUSTOMER)
        world.say("hello", int(CUSTOMER), channel="whatsapp")
        world.deliver()
        (menu,) = whatsapp.sent(CUSTOMER)
        assert menu["type"] == "interactive" and menu["interactive"]["type"] == "button"
        buttons = menu["interactive"]["action"]["buttons"]
        assert [b["reply"]["id"] for b in buttons] == ["interview", "design"]
    finally:
        world.close()


def test_whatsapp_outside_the_24_hour_window_sends_the_template_or_records_a_refusal(
    database_url: str, schema: str, clock: StepClock, whatsapp: FakeWhatsApp
) -> None:
    refusing = whatsapp_world(database_url, schema, clock, whatsapp, None)
    try:
        reply = refusing.say("hello", int(CUSTOMER), channel="whatsapp")  # never wrote to the fake
        assert reply.conversation_id is not None
        clock.now += timedelta(hours=25)
        refusing.deliver()
        assert whatsapp.sent(CUSTOMER) == []
        (failed,) = [d for t, d in outcomes(refusing, reply.conversation_id)]
        assert failed["final"] and failed["code"] == 131047
        assert "24-hour" in failed["reason"]
    finally:
        refusing.close()
    whatsapp.fail_next(GraphFault.generic(), to=CUSTOMER)  # a retry on the way, for good measure
    templated = whatsapp_world(
        database_url, schema, clock, whatsapp, Template("hello_world", "en_US")
    )
    try:
        templated.say("hello again", int(CUSTOMER), channel="whatsapp", message_id="later")
        clock.now += timedelta(hours=25)
        templated.deliver()
        (sent,) = whatsapp.sent(CUSTOMER)
        assert sent["type"] == "template" and sent["template"]["name"] == "hello_world"
    finally:
        templated.close()


def test_voxledger_expire_tells_the_user_and_metrics_shows_the_delivery(
    world: World, telegram: FakeTelegram, cli_env: dict[str, str]
) -> None:
    started = world.say("interview")
    world.deliver()
    assert started.flow_id is not None
    later = world.engine.get_flow(started.flow_id).updated_at + timedelta(minutes=6)
    swept = subprocess.run(
        [*VOXLEDGER, "expire", "--now", later.isoformat(), "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout) == {"expired": [str(started.flow_id)]}
    world.deliver()
    assert (
        texts(telegram)[-1] == "This form expired after a long pause. Send /start to begin again."
    )
    shown = subprocess.run(
        [*VOXLEDGER, "metrics"], env={**cli_env, "COLUMNS": "200"}, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "delivery (latency" in shown.stdout and "telegram" in shown.stdout
