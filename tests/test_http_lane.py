"""The chat lane on a real server: the webhook's and the message route's usual requests skip
Litestar's request cycle (`adapters/http/lane.py`), and what they get is what the Litestar
route gives. A query string (which the lane never takes) sends the same request through the
route, so each pair below is one request answered both ways."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    SECRET_HEADER,
    Server,
    client_fixture,
    events_stored,
    server_env_fixture,
    server_fixture,
    server_schema_fixture,
)

ROUTE = {"via": "route"}  # a query string: the lane leaves the request to Litestar
# Ids: of conversations, and of messages sent without one (a fresh one is made).
UUID_TEXT = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


def _same(a: httpx.Response, b: httpx.Response) -> None:
    """Two answers alike but for ids, versions and positions (two conversations)."""
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]

    def shape(body: Any) -> Any:
        if isinstance(body, dict):
            return {
                k: None if k in ("position", "version", "current_version") else shape(v)
                for k, v in body.items()
            }
        if isinstance(body, list):
            return [shape(v) for v in body]
        if isinstance(body, str):
            return UUID_TEXT.sub("ID", body)
        return body

    assert shape(a.json()) == shape(b.json())


def _start(client: httpx.Client) -> str:
    response = client.post("/v1/conversations", json={"participant": "p"}, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()["conversation_id"]


@pytest.fixture
def pair(client: httpx.Client) -> Iterator[tuple[str, str]]:
    """Two fresh conversations: one talked to through the lane, one through the route."""
    yield _start(client), _start(client)


def test_a_whole_form_through_the_lane_reads_as_through_the_route(
    client: httpx.Client, pair: tuple[str, str]
) -> None:
    lane, route = pair
    texts = ["/start", "design", "1042", "21.11.2026", "Anna", "/back", "Anna Example", "/status"]
    for n, text in enumerate(texts):
        body = {"text": text, "message_id": f"m{n}"}
        a = client.post(f"/v1/conversations/{lane}/messages", json=body, headers=AUTH)
        b = client.post(
            f"/v1/conversations/{route}/messages", json=body, headers=AUTH, params=ROUTE
        )
        _same(a, b)
    # A message seen before, and a refusal the domain makes (the version expected is old).
    for body in ({"text": "x", "message_id": "m1"}, {"text": "x", "expected_version": 1}):
        a = client.post(f"/v1/conversations/{lane}/messages", json=body, headers=AUTH)
        b = client.post(
            f"/v1/conversations/{route}/messages", json=body, headers=AUTH, params=ROUTE
        )
        _same(a, b)
    assert a.status_code == 409 and a.json()["error"] == "version_mismatch"


def test_a_conversation_that_does_not_exist_is_a_404_either_way(client: httpx.Client) -> None:
    missing = uuid.uuid4()
    a = client.post(f"/v1/conversations/{missing}/messages", json={"text": "hi"}, headers=AUTH)
    b = client.post(
        f"/v1/conversations/{missing}/messages", json={"text": "hi"}, headers=AUTH, params=ROUTE
    )
    _same(a, b)
    assert a.status_code == 404 and a.json()["error"] == "not_found"


def test_updates_through_the_lane_read_as_through_the_route(client: httpx.Client) -> None:
    def update(chat: int, n: int, text: str) -> dict[str, Any]:
        message = {
            "message_id": n,
            "date": 1_790_000_000,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Ann"},
            "text": text,
        }
        return {"update_id": chat * 100 + n, "message": message}

    for n, text in enumerate(["/start", "interview", "1042", "/cancel", "hello"]):
        a = client.post("/telegram/webhook", json=update(71001, n, text), headers=SECRET_HEADER)
        b = client.post(
            "/telegram/webhook", json=update(71002, n, text), headers=SECRET_HEADER, params=ROUTE
        )
        assert a.status_code == b.status_code == 200
        assert {**a.json(), "chat_id": 0} == {**b.json(), "chat_id": 0}


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        # A whole number written as a float: the route reads it as JSON does; the lane
        # (strict) leaves it to the route.
        (AUTH, b'{"text": "hi", "expected_version": 0.0}', 409),
        # The body as another content type, or none: the route says what it takes.
        ({**AUTH, "Content-Type": "text/plain"}, b'{"text": "hi"}', None),
        # An Idempotency-Key the route refuses, and one it takes.
        ({**AUTH, "Idempotency-Key": "not a key!"}, b'{"text": "hi"}', 400),
        ({**AUTH, "Idempotency-Key": "k-1"}, b'{"text": "hi"}', 200),
        # Wrong credentials, or a body the schema refuses: the route's refusals.
        ({"Authorization": "Bearer nope"}, b'{"text": "hi"}', 401),
        (AUTH, b'{"text": ""}', 400),
        (AUTH, b'{"text": "hi", "extra": 1}', 400),
        (AUTH, b'{"text": "hi\\u0000"}', 400),
        (AUTH, b"[" * 100 + b"]" * 100, 400),
    ],
)
def test_what_the_lane_leaves_to_the_route_is_answered_as_the_route_answers_it(
    client: httpx.Client,
    pair: tuple[str, str],
    headers: dict[str, str],
    body: bytes,
    status: int | None,
) -> None:
    lane, route = pair
    sent = {"Content-Type": "application/json", **headers}
    a = client.post(f"/v1/conversations/{lane}/messages", content=body, headers=sent)
    b = client.post(f"/v1/conversations/{route}/messages", content=body, headers=sent, params=ROUTE)
    _same(a, b)
    if status is not None:
        assert a.status_code == status, a.text
    assert set(a.json()) >= ({"error", "detail"} if a.status_code >= 400 else {"text"})


def test_a_header_sent_twice_leaves_the_request_to_the_route(
    server: Server, pair: tuple[str, str]
) -> None:
    lane, route = pair
    body = json.dumps({"text": "/start"}).encode()
    # httpx merges repeated headers; send them as a raw list.
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", AUTH["Authorization"]),
        ("Authorization", "Bearer nope"),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        a = raw.post(f"/v1/conversations/{lane}/messages", content=body, headers=headers)
        b = raw.post(
            f"/v1/conversations/{route}/messages", content=body, headers=headers, params=ROUTE
        )
    _same(a, b)


def test_the_lane_takes_the_usual_requests_and_leaves_the_rest(
    database_url: str, schema: str
) -> None:
    """The lane itself, over real services: which requests reach the app behind it."""
    import anyio

    from voxledger.adapters.bootstrap import open_services
    from voxledger.adapters.chat.telegram import BotIdentity
    from voxledger.adapters.http.app import EXCEPTION_HANDLERS
    from voxledger.adapters.http.chat_edge import ChatEdge
    from voxledger.adapters.http.lane import chat_lane

    reached: list[str] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def call(path: str, headers: dict[str, str], body: bytes, query: bytes = b"") -> int:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": query,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        await lane(scope, receive, send)
        return sent[0]["status"]

    with open_services(database_url, schema=schema) as services:
        edge = ChatEdge(
            services.async_engine, services.bot("intake"), services.store, BotIdentity(), print
        )
        lane = chat_lane(
            behind,
            edge,
            telegram_secret="s3",
            api_token="t0ken",
            max_body_bytes=65536,
            exception_handlers=EXCEPTION_HANDLERS,
        )
        json_auth = {"content-type": "application/json", "authorization": "Bearer t0ken"}
        secret = {"content-type": "application/json", "x-telegram-bot-api-secret-token": "s3"}
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 1_790_000_000,
                "chat": {"id": 5, "type": "private"},
                "text": "/start",
            },
        }

        async def main() -> None:
            conversation = await services.async_engine.start_conversation("api", "p", {})
            path = f"/v1/conversations/{conversation}/messages"
            taken = [
                await call(path, json_auth, b'{"text": "/start"}'),
                await call("/telegram/webhook", secret, json.dumps(update).encode()),
            ]
            assert taken == [200, 200] and reached == []
            left = [
                call(path, json_auth, b'{"text": "/start"}', query=b"a=1"),
                call(path, {**json_auth, "authorization": "Bearer no"}, b'{"text": "x"}'),
                call(path, {"authorization": "Bearer t0ken"}, b'{"text": "x"}'),
                call(path, json_auth, b'{"text": "x", "expected_version": 1.0}'),
                call(path, json_auth, b"not json"),
                call(
                    "/telegram/webhook", {**secret, "x-telegram-bot-api-secret-token": "n"}, b"{}"
                ),
                call("/v1/conversations/not-a-uuid/messages", json_auth, b'{"text": "x"}'),
            ]
            for request in left:
                assert await request == 299
            assert len(reached) == len(left)

        anyio.run(main)
