"""`voxledger serve` as a WhatsApp Cloud API backend, against a local Graph API server: the
verification handshake, signed notifications only, messages answered through the outbox,
message statuses recorded as delivery events, and the 24-hour window."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_http import ManualClock
from fake_whatsapp import FakeWhatsApp, encode, sign
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    Server,
    conversation_of,
    events_stored,
    server_env_fixture,
    server_schema_fixture,
)
from test_telegram_bot import AUDIO, wait_for

from voxledger.adapters.bootstrap import catch_up, open_engine, open_projections
from voxledger.domain.engine import Engine

APP_SECRET = "app-secret-for-tests"
VERIFY_TOKEN = "verify-token-for-tests"


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeWhatsApp]:
    server = FakeWhatsApp(clock=ManualClock()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], graph: FakeWhatsApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        **server_env,
        "VOXLEDGER_WHATSAPP_TOKEN": graph.access_token,
        "VOXLEDGER_WHATSAPP_PHONE_NUMBER_ID": graph.phone_number_id,
        "VOXLEDGER_WHATSAPP_APP_SECRET": APP_SECRET,
        "VOXLEDGER_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "VOXLEDGER_WHATSAPP_API_URL": graph.url,
    }
    running = Server(env, tmp_path_factory.mktemp("server") / "server.log").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def engine(database_url: str, server_schema: str) -> Iterator[Engine]:
    with open_engine(database_url, schema=server_schema) as e:
        yield e


def notify(
    client: httpx.Client, payload: dict[str, Any], secret: str = APP_SECRET
) -> httpx.Response:
    body = encode(payload)
    return client.post(
        "/whatsapp/webhook",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)},
    )


def test_the_verification_handshake_echoes_the_challenge_only_for_our_token(
    client: httpx.Client,
) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    ok = client.get("/whatsapp/webhook", params=query)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    wrong = client.get("/whatsapp/webhook", params={**query, "hub.verify_token": "guess"})
    assert wrong.status_code == 403


def test_a_notification_without_the_right_signature_is_refused_and_records_nothing(
    client: httpx.Client, graph: FakeWhatsApp, database_url: str, server_schema: str
) -> None:
    payload = graph.webhooks.text("447700900001", "hello")
    before = events_stored(database_url, server_schema)
    unsigned = client.post("/whatsapp/webhook", content=encode(payload))
    assert unsigned.status_code == 401
    forged = notify(client, payload, secret="not-the-app-secret")
    assert forged.status_code == 403
    body = encode(payload)
    tampered = client.post(
        "/whatsapp/webhook",
        content=body.replace(b"hello", b"HELLO"),
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET)},
    )
    assert tampered.status_code == 403
    assert events_stored(database_url, server_schema) == before
    assert graph.sent("447700900001") == []


def test_a_customer_is_answered_through_the_cloud_api_and_statuses_are_recorded(
    client: httpx.Client, graph: FakeWhatsApp, engine: Engine
) -> None:
    customer = "447700900002"
    assert notify(client, graph.webhooks.text(customer, "hello")).status_code == 200
    (menu,) = wait_for(lambda: graph.sent(customer), "the menu")
    assert menu["interactive"]["type"] == "button"
    pressed = graph.webhooks.button_reply(customer, "interview", "Interview", context_id=menu["id"])
    assert notify(client, pressed).status_code == 200
    asked = wait_for(lambda: graph.sent(customer)[1:], "the first question")[0]
    assert asked["type"] == "text" and asked["text"]["body"] == AUDIO
    conversation = conversation_of(engine, customer, "whatsapp")
    wait_for(
        lambda: asked["id"] in engine.get_conversation(conversation).sent, "the delivery record"
    )
    for status in ("delivered", "read", "delivered"):  # the last is stale: not news
        assert notify(client, graph.webhooks.status(asked["id"], status)).status_code == 200
    reported = [e.data for e in engine.history(conversation) if e.type == "DeliveryStatusReported"]
    assert [(r["platform_id"], r["status"]) for r in reported] == [
        (asked["id"], "delivered"),
        (asked["id"], "read"),
    ]


def test_a_failed_status_counts_as_a_delivery_failure_with_its_reason(
    client: httpx.Client, graph: FakeWhatsApp, engine: Engine
) -> None:
    customer = "447700900003"
    notify(client, graph.webhooks.text(customer, "hello"))
    (menu,) = wait_for(lambda: graph.sent(customer), "the menu")
    conversation = conversation_of(engine, customer, "whatsapp")
    wait_for(
        lambda: menu["id"] in engine.get_conversation(conversation).sent, "the delivery record"
    )
    failed = graph.webhooks.status(
        menu["id"], "failed", error_code=131026, error_title="Message undeliverable."
    )
    assert notify(client, failed).status_code == 200
    assert engine.get_conversation(conversation).sent[menu["id"]] == "failed"
    catch_up(engine.store)
    failures = open_projections(engine.store).delivery().failures
    assert any(
        (f.channel, f.reason, f.code) == ("whatsapp", "Message undeliverable.", "131026")
        for f in failures
    )


def test_outside_the_24_hour_window_with_no_template_the_refusal_is_recorded(
    client: httpx.Client, graph: FakeWhatsApp, engine: Engine
) -> None:
    customer = "447700900004"
    payload = graph.webhooks.text(customer, "hello")  # opens the window on the fake's clock
    graph.clock.advance(25 * 3600)  # type: ignore[attr-defined]  # it arrives a day late
    assert notify(client, payload).status_code == 200
    conversation = wait_for(lambda: _conversation(engine, customer), "the customer's conversation")
    failed = wait_for(
        lambda: [e.data for e in engine.history(conversation) if e.type == "OutboundFailed"],
        "the refusal to be recorded",
    )
    assert failed[0]["final"] and failed[0]["code"] == 131047
    assert graph.sent(customer) == []


def _conversation(engine: Engine, customer: str) -> Any:
    try:
        return conversation_of(engine, customer, "whatsapp")
    except AssertionError:
        return None


def test_a_message_with_a_nul_character_is_acknowledged_and_records_nothing(
    client: httpx.Client, graph: FakeWhatsApp, database_url: str, server_schema: str
) -> None:
    # Refused like NUL everywhere; Meta would redeliver anything but a 200 for days.
    customer = "447700900009"
    before = events_stored(database_url, server_schema)
    assert notify(client, graph.webhooks.text(customer, "hel\x00lo")).status_code == 200
    assert notify(client, graph.webhooks.text(customer, "hi", name="A\x00da")).status_code == 200
    assert events_stored(database_url, server_schema) == before
    assert graph.sent(customer) == []
