"""Hostile input with valid credentials: every case gets a 4xx with a JSON reason, none a
5xx, and nothing is written (no event, no key)."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    SECRET_HEADER,
    client_fixture,
    events_stored,
    server_env_fixture,
    server_fixture,
    server_schema_fixture,
)


def keys_stored(database_url: str, schema: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.voxledger_keys").fetchone()
    return row[0] if row else 0


@pytest.fixture
def conversation(client: httpx.Client) -> str:
    started = client.post("/v1/conversations", json={}, headers=AUTH)
    assert started.status_code == 201
    return started.json()["conversation_id"]


@pytest.fixture
def unchanged(client: httpx.Client, conversation: str, database_url: str, server_schema: str):
    """The log's and the key ring's sizes before the test, checked again after it."""
    before = events_stored(database_url, server_schema), keys_stored(database_url, server_schema)
    yield
    after = events_stored(database_url, server_schema), keys_stored(database_url, server_schema)
    assert after == before, "a refused request wrote something"


def refused(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    return body


@pytest.mark.parametrize("body", ["[" * 30_000 + "]" * 30_000, '{"a":' * 9_000 + "1" + "}" * 9_000])
def test_json_nested_beyond_reason_is_refused_before_decoding(
    client: httpx.Client, conversation: str, unchanged: None, body: str
) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    message = client.post(
        f"/v1/conversations/{conversation}/messages", content=body, headers=headers
    )
    assert "nested deeper" in refused(message, 400)["detail"]
    hook = {**SECRET_HEADER, "Content-Type": "application/json"}
    webhook = client.post("/telegram/webhook", content=body, headers=hook)
    assert "nested deeper" in refused(webhook, 400)["detail"]


def test_brackets_inside_strings_are_text_not_nesting(
    client: httpx.Client, conversation: str
) -> None:
    text = "[{" * 200
    answer = client.post(
        f"/v1/conversations/{conversation}/messages", json={"text": text}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_outside_64_bits_in_metadata_are_refused_and_leave_no_key(
    client: httpx.Client, unchanged: None, value: int
) -> None:
    body = f'{{"participant": "Zephyrine", "metadata": {{"n": {value}}}}}'
    response = client.post(
        "/v1/conversations", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert "metadata" in str(refused(response, 400, 422)["detail"])


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_metrics_since_a_moment_that_overflows_is_refused(client: httpx.Client, since: str) -> None:
    response = client.get("/v1/metrics", params={"since": since}, headers=AUTH)
    assert "since" in refused(response, 422)["detail"]


def test_a_nul_in_the_query_is_refused_naming_the_parameter_and_is_no_outage(
    client: httpx.Client, server
) -> None:
    response = client.get("/v1/conversations?status=%00", headers=AUTH)
    assert refused(response, 422)["detail"] == "query.status: the NUL character is not allowed"
    assert "database" not in server.log.read_text().splitlines()[-1]


def test_a_nul_in_a_message_is_refused_naming_the_field(
    client: httpx.Client, conversation: str, unchanged: None
) -> None:
    response = client.post(
        f"/v1/conversations/{conversation}/messages", json={"text": "a\u0000b"}, headers=AUTH
    )
    assert "text" in str(refused(response, 400, 422)["detail"])
