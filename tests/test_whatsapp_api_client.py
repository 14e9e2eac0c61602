"""The WhatsApp Cloud API client against the local Graph API server, over real HTTP: the
bodies it sends, the 24-hour window, every Graph error as RetryAfter, Transient or Rejected,
and the webhook checks (signature, subscription handshake)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from fake_whatsapp import FakeWhatsApp, GraphFault, encode, sign

from voxledger.adapters.chat.delivery_errors import (
    DeliveryError,
    OutsideServiceWindow,
    Rejected,
    RetryAfter,
    Transient,
)
from voxledger.adapters.chat.whatsapp_api import (
    ListRow,
    ListSection,
    ReplyButton,
    WhatsAppCloudApi,
    verify_signature,
    verify_subscription,
)

CUSTOMER = "+44 7700 900123"
WA_ID = "447700900123"


def run(server: FakeWhatsApp, scenario: Callable[[WhatsAppCloudApi], Awaitable[Any]]) -> Any:
    """Run ``scenario`` with a client pointed at the local server."""

    async def main() -> Any:
        async with WhatsAppCloudApi(
            server.access_token, server.phone_number_id, base_url=server.url, api_version="v23.0"
        ) as api:
            return await scenario(api)

    return anyio.run(main)


def failure(server: FakeWhatsApp, call: Callable[[WhatsAppCloudApi], Awaitable[Any]]) -> Exception:
    """The delivery error ``call`` raises against the server."""

    async def scenario(api: WhatsAppCloudApi) -> Exception:
        with pytest.raises(DeliveryError) as caught:
            await call(api)
        return caught.value

    return run(server, scenario)


@pytest.fixture
def whatsapp(whatsapp_api: FakeWhatsApp) -> FakeWhatsApp:
    """The server, with the customer having just written (the 24-hour window is open)."""
    whatsapp_api.webhooks.text(WA_ID, "Hi")
    return whatsapp_api


def test_a_text_is_sent_as_the_documented_body_and_answers_with_the_wamid(
    whatsapp: FakeWhatsApp,
) -> None:
    sent = run(whatsapp, lambda api: api.send_text(CUSTOMER, "Hello 👋", preview_url=True))
    assert sent.wa_id == WA_ID and sent.input == CUSTOMER
    assert sent.message_id.startswith("wamid.")
    (call,) = whatsapp.calls
    assert call.path == f"/v23.0/{whatsapp.phone_number_id}/messages" and call.authorized
    assert call.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "type": "text",
        "text": {"preview_url": True, "body": "Hello 👋"},
    }
    assert whatsapp.sent(WA_ID)[0]["id"] == sent.message_id


def test_buttons_and_lists_are_sent_as_interactive_messages(whatsapp: FakeWhatsApp) -> None:
    async def scenario(api: WhatsAppCloudApi) -> None:
        await api.send_buttons(
            CUSTOMER,
            "Confirm?",
            [ReplyButton("yes", "Yes"), ReplyButton("no", "No")],
            header="Booking",
            footer="Reply below",
        )
        await api.send_list(
            CUSTOMER,
            "Pick a slot",
            "Slots",
            [
                ListSection([ListRow("am", "Morning", "9-12")], title="Today"),
                ListSection([ListRow("pm", "Afternoon")], title="Tomorrow"),
            ],
        )

    run(whatsapp, scenario)
    buttons, listing = (call.body["interactive"] for call in whatsapp.calls)
    assert buttons == {
        "type": "button",
        "header": {"type": "text", "text": "Booking"},
        "body": {"text": "Confirm?"},
        "footer": {"text": "Reply below"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                {"type": "reply", "reply": {"id": "no", "title": "No"}},
            ]
        },
    }
    assert listing["action"] == {
        "button": "Slots",
        "sections": [
            {"rows": [{"id": "am", "title": "Morning", "description": "9-12"}], "title": "Today"},
            {"rows": [{"id": "pm", "title": "Afternoon"}], "title": "Tomorrow"},
        ],
    }


def test_reading_a_customers_message_marks_it_read(whatsapp: FakeWhatsApp) -> None:
    hook = whatsapp.webhooks.text(WA_ID, "Are you there?")
    wamid = hook["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    assert run(whatsapp, lambda api: api.mark_read(wamid)) is True
    assert whatsapp.read_marks == [wamid]
    assert whatsapp.calls[-1].body == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": wamid,
    }


def test_outside_the_24_hour_window_only_a_template_gets_through(whatsapp: FakeWhatsApp) -> None:
    whatsapp.clock.advance(24 * 3600 + 1)
    refused = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "Still there?"))
    assert isinstance(refused, OutsideServiceWindow) and isinstance(refused, Rejected)
    assert refused.code == 131047 and not refused.retryable
    assert "24-hour customer service window" in refused.description
    template = run(whatsapp, lambda api: api.send_template(CUSTOMER, "hello_world", "en_US"))
    assert template.message_status == "accepted"
    whatsapp.webhooks.text(WA_ID, "Yes, here")  # the customer writes: the window reopens
    assert run(whatsapp, lambda api: api.send_text(CUSTOMER, "Welcome back")).wa_id == WA_ID


def test_a_customer_who_never_wrote_can_only_get_a_template(whatsapp_api: FakeWhatsApp) -> None:
    refused = failure(whatsapp_api, lambda api: api.send_text("15550001111", "Hello"))
    assert isinstance(refused, OutsideServiceWindow)


@pytest.mark.parametrize(
    "fault, seconds",
    [(GraphFault.throughput_limit(), 1.0), (GraphFault.pair_rate_limit(), 6.0)],
)
def test_rate_limit_codes_become_retry_after_with_a_documented_wait(
    whatsapp: FakeWhatsApp, fault: GraphFault, seconds: float
) -> None:
    whatsapp.fail_next(fault, to=CUSTOMER)
    refused = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "hi"))
    assert isinstance(refused, RetryAfter) and refused.seconds == seconds


def test_the_pair_rate_limit_is_enforced_on_the_servers_clock() -> None:
    server = FakeWhatsApp(pair_burst=2, pair_interval=6.0).start()
    try:
        server.webhooks.text(WA_ID, "Hi")

        async def scenario(api: WhatsAppCloudApi) -> RetryAfter:
            await api.send_text(CUSTOMER, "one")
            await api.send_text(CUSTOMER, "two")
            with pytest.raises(RetryAfter) as caught:
                await api.send_text(CUSTOMER, "three")
            server.clock.advance(caught.value.seconds)
            await api.send_text(CUSTOMER, "three, later")
            return caught.value

        assert run(server, scenario).seconds == 6.0
    finally:
        server.stop()


@pytest.mark.parametrize(
    "fault",
    [GraphFault.generic(), GraphFault.gateway(502), GraphFault.gateway(503)],
)
def test_meta_side_failures_are_transient(whatsapp: FakeWhatsApp, fault: GraphFault) -> None:
    whatsapp.fail_next(fault)
    error = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "hi"))
    assert isinstance(error, Transient) and error.retryable


def test_a_dropped_connection_is_transient_and_the_message_may_have_gone_out(
    whatsapp: FakeWhatsApp,
) -> None:
    whatsapp.fail_next(GraphFault.drop_connection(), to=CUSTOMER)
    error = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "hi"))
    assert isinstance(error, Transient) and error.may_have_arrived


def test_a_refused_connection_is_transient_and_nothing_went_out() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> Transient:
        async with WhatsAppCloudApi("t", "1", base_url=f"http://127.0.0.1:{port}") as api:
            with pytest.raises(Transient) as caught:
                await api.send_text(CUSTOMER, "hi")
            return caught.value

    assert not anyio.run(main).may_have_arrived


@pytest.mark.parametrize(
    "fault, code",
    [(GraphFault.undeliverable(), 131026), (GraphFault.access_token_expired(), 190)],
)
def test_undeliverable_and_expired_tokens_are_rejected_with_graphs_code(
    whatsapp: FakeWhatsApp, fault: GraphFault, code: int
) -> None:
    whatsapp.fail_next(fault, to=CUSTOMER)
    error = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "hi"))
    assert isinstance(error, Rejected) and not isinstance(error, OutsideServiceWindow)
    assert error.code == code


def test_a_wrong_token_is_rejected_and_never_shown(whatsapp: FakeWhatsApp) -> None:
    async def main() -> tuple[Rejected, str]:
        async with WhatsAppCloudApi(
            "EAAGwrong-secret", whatsapp.phone_number_id, base_url=whatsapp.url
        ) as api:
            with pytest.raises(Rejected) as caught:
                await api.send_text(CUSTOMER, "hi")
            return caught.value, repr(api)

    error, shown = anyio.run(main)
    assert error.code == 190
    assert "wrong-secret" not in shown + str(error)
    assert not whatsapp.calls[-1].authorized


@pytest.mark.parametrize(
    "send, code",
    [
        (lambda api: api.send_text(CUSTOMER, "x" * 4097), 131009),
        (lambda api: api.send_text(CUSTOMER, ""), 131009),
        (lambda api: api.send_buttons(CUSTOMER, "Pick", [ReplyButton("a", "x" * 21)]), 131009),
        (
            lambda api: api.send_buttons(
                CUSTOMER, "Pick", [ReplyButton(str(n), f"B{n}") for n in range(4)]
            ),
            131009,
        ),
        (
            lambda api: api.send_list(
                CUSTOMER,
                "Pick",
                "Slots",
                [ListSection([ListRow(str(n), f"Row {n}") for n in range(11)])],
            ),
            131009,
        ),
        (lambda api: api.send_template(CUSTOMER, "no_such_template", "en_US"), 132001),
        (lambda api: api.mark_read("wamid.unknown"), 100),
    ],
)
def test_bodies_breaking_the_documented_limits_are_rejected(
    whatsapp: FakeWhatsApp, send: Callable[[WhatsAppCloudApi], Awaitable[Any]], code: int
) -> None:
    error = failure(whatsapp, send)
    assert isinstance(error, Rejected) and error.code == code


def test_errors_and_logs_never_carry_the_access_token(
    whatsapp: FakeWhatsApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    whatsapp.fail_next(GraphFault.generic())
    error = failure(whatsapp, lambda api: api.send_text(CUSTOMER, "hi"))
    texts = [str(error), repr(error), *(r.getMessage() for r in caplog.records)]
    assert not any(whatsapp.access_token in text for text in texts)


def test_a_signature_made_with_the_app_secret_verifies_and_any_change_does_not() -> None:
    server = FakeWhatsApp()
    body = encode(server.webhooks.text(WA_ID, "Hi"))
    header = sign(body, "app-secret")
    assert verify_signature(body, header, "app-secret")
    assert verify_signature(body, header.upper().replace("SHA256=", "sha256="), "app-secret")
    assert not verify_signature(body + b" ", header, "app-secret")
    assert not verify_signature(body, header, "other-secret")
    assert not verify_signature(body, header.replace("sha256=", "sha1="), "app-secret")
    for malformed in (None, "", "sha256=", "sha256=zz", "nonsense"):
        assert not verify_signature(body, malformed, "app-secret")
    assert not verify_signature(body, header, "")


def test_the_subscription_handshake_echoes_the_challenge_only_for_our_verify_token() -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": "ours", "hub.challenge": "1158201444"}
    assert verify_subscription(query, "ours") == "1158201444"
    assert verify_subscription(query, "theirs") is None
    assert verify_subscription({**query, "hub.mode": "unsubscribe"}, "ours") is None
    assert (
        verify_subscription({"hub.mode": "subscribe", "hub.verify_token": "ours"}, "ours") is None
    )
    assert verify_subscription({**query, "hub.verify_token": ""}, "") is None
