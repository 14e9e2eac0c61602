"""The local Cloud API server enforces the messages endpoint's rules with Graph's error
shape, and its webhook builder makes the bodies WhatsApp POSTs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_whatsapp import FakeWhatsApp, sign

WA_ID = "5511987654321"


@pytest.fixture
def whatsapp(whatsapp_api: FakeWhatsApp) -> FakeWhatsApp:
    whatsapp_api.webhooks.text(WA_ID, "Oi")
    return whatsapp_api


@pytest.fixture
def graph(whatsapp: FakeWhatsApp) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {whatsapp.access_token}"}
    with httpx.Client(base_url=whatsapp.url, headers=headers, timeout=10) as client:
        yield client


def path(whatsapp: FakeWhatsApp) -> str:
    return f"/v23.0/{whatsapp.phone_number_id}/messages"


def text(body: str = "Olá", **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": WA_ID,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def graph_error(response: httpx.Response) -> tuple[int, int, dict[str, Any]]:
    error = response.json()["error"]
    assert {"message", "type", "code", "fbtrace_id"} <= set(error)
    return response.status_code, error["code"], error


def interactive(kind: str, action: dict[str, Any], body: str = "Choose") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": WA_ID,
        "type": "interactive",
        "interactive": {"type": kind, "body": {"text": body}, "action": action},
    }


def buttons(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"buttons": [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in pairs]}


def rows(count: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{n}", "title": f"Row {n}"} for n in range(count)]


def test_an_accepted_message_answers_with_the_contact_and_a_wamid(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    response = graph.post(path(whatsapp), json=text())
    assert response.status_code == 200
    answer = response.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": WA_ID, "wa_id": WA_ID}]
    assert answer["messages"][0]["id"].startswith("wamid.")


@pytest.mark.parametrize(
    "headers, status, code",
    [({}, 401, 190), ({"Authorization": "Bearer nope"}, 401, 190)],
)
def test_requests_without_the_right_bearer_token_get_error_190(
    whatsapp: FakeWhatsApp, headers: dict[str, str], status: int, code: int
) -> None:
    response = httpx.post(whatsapp.url + path(whatsapp), json=text(), headers=headers)
    assert graph_error(response)[:2] == (status, code)


def test_unknown_phone_numbers_and_paths_are_graph_errors(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    status, code, error = graph_error(graph.post("/v23.0/999/messages", json=text()))
    assert (status, code, error["error_subcode"], error["type"]) == (
        400,
        100,
        33,
        "GraphMethodException",
    )
    assert graph_error(graph.post("/latest/1/messages", json=text()))[1] == 2500


@pytest.mark.parametrize(
    "body, code",
    [
        ({"to": WA_ID, "type": "text", "text": {"body": "x"}}, 100),
        (text(messaging_product="sms"), 100),
        (text(recipient_type="group"), 100),
        (text(to="not a number"), 100),
        ({"messaging_product": "whatsapp", "to": WA_ID, "type": "text"}, 100),
        (text(""), 131009),
        (text("x" * 4097), 131009),
        ({**text(), "type": "sticker"}, 131051),
    ],
)
def test_a_text_needs_the_documented_fields_and_fits_4096_characters(
    graph: httpx.Client, whatsapp: FakeWhatsApp, body: dict[str, Any], code: int
) -> None:
    status, got, error = graph_error(graph.post(path(whatsapp), json=body))
    assert (status, got) == (400, code)
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["error_data"]["details"]


def test_4096_characters_are_counted_as_characters(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    assert graph.post(path(whatsapp), json=text("😀" * 4096)).status_code == 200


@pytest.mark.parametrize(
    "action, body, accepted",
    [
        (buttons(("a", "A"), ("b", "B"), ("c", "C")), "Choose", True),
        (buttons(("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")), "Choose", False),
        (buttons(), "Choose", False),
        (buttons(("a", "x" * 20)), "Choose", True),
        (buttons(("a", "x" * 21)), "Choose", False),
        (buttons(("i" * 256, "A")), "Choose", True),
        (buttons(("i" * 257, "A")), "Choose", False),
        (buttons(("a", "Same"), ("b", "Same")), "Choose", False),
        (buttons(("a", "One"), ("a", "Two")), "Choose", False),
        (buttons(("a", "A")), "x" * 1024, True),
        (buttons(("a", "A")), "x" * 1025, False),
    ],
)
def test_reply_buttons_follow_the_documented_limits(
    graph: httpx.Client,
    whatsapp: FakeWhatsApp,
    action: dict[str, Any],
    body: str,
    accepted: bool,
) -> None:
    whatsapp.clock.advance(6)  # stay clear of the pair rate limit
    response = graph.post(path(whatsapp), json=interactive("button", action, body))
    assert (response.status_code == 200) is accepted, response.text


@pytest.mark.parametrize(
    "action, accepted",
    [
        ({"button": "Menu", "sections": [{"rows": rows(10)}]}, True),
        (
            {
                "button": "Menu",
                "sections": [{"title": "A", "rows": rows(5)}, {"title": "B", "rows": rows(6, "s")}],
            },
            False,
        ),
        (
            {
                "button": "Menu",
                "sections": [
                    {"rows": rows(1)},
                    {"title": "B", "rows": [{"id": "x", "title": "X"}]},
                ],
            },
            False,
        ),
        (
            {
                "button": "Menu",
                "sections": [
                    {"title": f"S{n}", "rows": [{"id": f"{n}", "title": "t"}]} for n in range(11)
                ],
            },
            False,
        ),
        ({"button": "x" * 21, "sections": [{"rows": rows(1)}]}, False),
        ({"button": "Menu", "sections": [{"title": "x" * 25, "rows": rows(1)}]}, False),
        (
            {
                "button": "Menu",
                "sections": [
                    {"rows": [{"id": "i" * 200, "title": "x" * 24, "description": "d" * 72}]}
                ],
            },
            True,
        ),
        ({"button": "Menu", "sections": [{"rows": [{"id": "i" * 201, "title": "t"}]}]}, False),
        ({"button": "Menu", "sections": [{"rows": [{"id": "i", "title": "x" * 25}]}]}, False),
        (
            {
                "button": "Menu",
                "sections": [{"rows": [{"id": "i", "title": "t", "description": "d" * 73}]}],
            },
            False,
        ),
        (
            {
                "button": "Menu",
                "sections": [{"rows": [{"id": "i", "title": "a"}, {"id": "i", "title": "b"}]}],
            },
            False,
        ),
        ({"button": "Menu", "sections": [{"rows": []}]}, False),
    ],
)
def test_lists_follow_the_documented_limits(
    graph: httpx.Client, whatsapp: FakeWhatsApp, action: dict[str, Any], accepted: bool
) -> None:
    whatsapp.clock.advance(6)
    response = graph.post(path(whatsapp), json=interactive("list", action))
    assert (response.status_code == 200) is accepted, response.text


def test_templates_need_a_name_and_a_language_code_and_must_exist(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    def template(**fields: Any) -> httpx.Response:
        body = {"messaging_product": "whatsapp", "to": "4915112345678", "type": "template"}
        return graph.post(path(whatsapp), json={**body, "template": fields})

    ok = template(name="hello_world", language={"code": "en_US"})
    assert ok.json()["messages"][0]["message_status"] == "accepted"
    assert graph_error(template(language={"code": "en_US"}))[1] == 100
    assert graph_error(template(name="hello_world"))[1] == 100
    assert graph_error(template(name="hello_world", language={"code": "pt_BR"}))[1] == 132001
    whatsapp.add_template("hello_world", "pt_BR")
    assert template(name="hello_world", language={"code": "pt_BR"}).status_code == 200


def test_the_window_closes_24_hours_after_the_customer_last_wrote(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    whatsapp.clock.advance(24 * 3600)
    assert graph.post(path(whatsapp), json=text()).status_code == 200
    whatsapp.clock.advance(1)
    status, code, error = graph_error(graph.post(path(whatsapp), json=text()))
    assert (status, code) == (400, 131047)
    assert "24 hours" in error["error_data"]["details"]


def test_the_numbers_throughput_is_limited_per_second() -> None:
    server = FakeWhatsApp(throughput_per_second=3).start()
    try:
        customers = [f"3161234567{n}" for n in range(4)]
        for customer in customers:
            server.customer_wrote(customer)
        headers = {"Authorization": f"Bearer {server.access_token}"}
        with httpx.Client(base_url=server.url, headers=headers) as client:
            codes = [
                client.post(path(server), json={**text(), "to": c}).status_code for c in customers
            ]
            assert codes == [200, 200, 200, 400]
            assert (
                client.post(path(server), json={**text(), "to": customers[3]}).json()["error"][
                    "code"
                ]
                == 130429
            )
            server.clock.advance(1)
            assert client.post(path(server), json={**text(), "to": customers[3]}).status_code == 200
    finally:
        server.stop()


def test_inbound_webhooks_have_whatsapps_envelope_and_open_the_window(
    whatsapp_api: FakeWhatsApp,
) -> None:
    hook = whatsapp_api.webhooks.text("+49 151 1234 5678", "Hallo", name="Grete")
    assert hook["object"] == "whatsapp_business_account"
    (entry,) = hook["entry"]
    (change,) = entry["changes"]
    assert entry["id"] == whatsapp_api.waba_id and change["field"] == "messages"
    value = change["value"]
    assert value["metadata"] == {
        "display_phone_number": whatsapp_api.display_phone_number,
        "phone_number_id": whatsapp_api.phone_number_id,
    }
    assert value["contacts"] == [{"profile": {"name": "Grete"}, "wa_id": "4915112345678"}]
    (message,) = value["messages"]
    assert message["from"] == "4915112345678" and message["type"] == "text"
    assert message["text"] == {"body": "Hallo"}
    assert message["timestamp"] == str(int(whatsapp_api.clock()))


def test_replies_to_buttons_and_lists_and_photos_carry_their_parts(
    whatsapp: FakeWhatsApp,
) -> None:
    button = whatsapp.webhooks.button_reply(WA_ID, "yes", "Yes", context_id="wamid.X")
    choice = whatsapp.webhooks.list_reply(WA_ID, "am", "Morning", "9-12")
    photo = whatsapp.webhooks.image(WA_ID, caption="receipt")

    def message(hook: dict[str, Any]) -> dict[str, Any]:
        return hook["entry"][0]["changes"][0]["value"]["messages"][0]

    assert message(button)["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "yes", "title": "Yes"},
    }
    assert message(button)["context"]["id"] == "wamid.X"
    assert message(choice)["interactive"]["list_reply"] == {
        "id": "am",
        "title": "Morning",
        "description": "9-12",
    }
    assert message(photo)["type"] == "image" and message(photo)["image"]["caption"] == "receipt"


def test_status_webhooks_report_delivery_and_failure_of_a_sent_message(
    graph: httpx.Client, whatsapp: FakeWhatsApp
) -> None:
    wamid = graph.post(path(whatsapp), json=text()).json()["messages"][0]["id"]
    delivered = whatsapp.webhooks.status(wamid, "delivered")
    failed = whatsapp.webhooks.status(wamid, "failed", error_code=131026)
    (status,) = delivered["entry"][0]["changes"][0]["value"]["statuses"]
    assert (status["id"], status["status"], status["recipient_id"]) == (wamid, "delivered", WA_ID)
    (failure,) = failed["entry"][0]["changes"][0]["value"]["statuses"]
    assert failure["errors"][0]["code"] == 131026
    with pytest.raises(ValueError):
        whatsapp.webhooks.status(wamid, "lost")


def test_the_signature_header_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    # The published HMAC-SHA256 test vector for key "key".
    body = b"The quick brown fox jumps over the lazy dog"
    assert sign(body, "key") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )
