"""The JSON API under /v1 on a real server: auth, a flow by API, reads, errors, fuzzing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
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

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.http.errors import domain_error
from voxledger.domain.engine import Engine
from voxledger.domain.errors import (
    BadInput,
    Conflict,
    FlowExpired,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from voxledger.projections.registry import default_projections
from voxledger.projections.runner import ProjectionRunner


@pytest.fixture
def engine(database_url: str, server_schema: str) -> Iterator[Engine]:
    """An engine of the test's own on the server's schema: to check and change what is stored."""
    with open_engine(database_url, schema=server_schema) as e:
        yield e


def start(client: httpx.Client, **body: Any) -> str:
    response = client.post("/v1/conversations", json=body, headers=AUTH)
    assert response.status_code in (200, 201), response.text
    return response.json()["conversation_id"]


def say(client: httpx.Client, conversation_id: str, text: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"text": text, **body}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": AUTH["Authorization"][7:]}],
    ids=["none", "wrong-token", "no-scheme"],
)
def test_api_requests_without_the_bearer_token_are_refused_and_record_nothing(
    client: httpx.Client, database_url: str, server_schema: str, headers: dict[str, str]
) -> None:
    before = events_stored(database_url, server_schema)
    some_id = uuid.uuid4()
    for method, path, body in [
        ("POST", "/v1/conversations", {"chat_id": "x"}),
        ("POST", f"/v1/conversations/{some_id}/messages", {"text": "/start"}),
        ("GET", f"/v1/conversations/{some_id}", None),
        ("GET", "/v1/conversations", None),
        ("GET", "/v1/metrics", None),
    ]:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "error": "unauthorized",
            "detail": "missing or wrong bearer token",
        }
    assert events_stored(database_url, server_schema) == before


def test_a_flow_runs_over_the_api_and_its_state_and_history_can_be_read(
    client: httpx.Client,
) -> None:
    conversation_id = start(client, chat_id="api-1", participant="Anna")
    again = client.post("/v1/conversations", json={"chat_id": "api-1"}, headers=AUTH)
    found = again.json()
    assert (again.status_code, found) == (
        200,
        {
            "conversation_id": conversation_id,
            "created": False,
            "version": 1,
            "position": found["position"],
        },
    )
    menu = say(client, conversation_id, "/start", message_id="m1")
    assert menu["choices"] == ["interview", "design"]
    first = say(client, conversation_id, "design", message_id="m2", choice=True)
    assert first["text"] == "What is the number of the audio recording?"
    assert say(client, conversation_id, "1042", message_id="m3")["text"].startswith("When was")

    view = client.get(f"/v1/conversations/{conversation_id}", headers=AUTH).json()
    assert view["conversation"]["participant"] == "Anna"
    assert [m["id"] for m in view["conversation"]["messages"]] == [
        "m1", "m1:reply", "m2", "m2:reply", "m3", "m3:reply",
    ]  # fmt: skip
    assert view["flow"]["flow"]["id"] == first["flow_id"]
    assert view["flow"]["flow"]["answers"] == {"audio_number": 1042}
    assert view["flow"]["prompt"] == "When was the visit? For example 21.11.2026."

    flow = client.get(f"/v1/flows/{first['flow_id']}", headers=AUTH).json()
    assert flow["flow"]["mode"] == "design" and flow["flow"]["step"] == "date"
    history = client.get(f"/v1/conversations/{conversation_id}/history", headers=AUTH).json()
    assert history[0]["type"] == "Started" and history[0]["version"] == 1
    later = client.get(
        f"/v1/conversations/{conversation_id}/history",
        params={"since_version": len(history) - 1},
        headers=AUTH,
    ).json()
    assert later == history[-1:]


def test_a_message_id_seen_before_returns_the_original_reply_and_records_nothing(
    client: httpx.Client, engine: Engine
) -> None:
    conversation_id = start(client)
    say(client, conversation_id, "interview", message_id="a1")
    first = say(client, conversation_id, "1042", message_id="a2")
    version = engine.get_conversation(uuid.UUID(conversation_id)).version
    second = say(client, conversation_id, "something else entirely", message_id="a2")
    assert second == {**first, "duplicate": True, "recorded": False}  # nothing recorded now
    assert engine.get_conversation(uuid.UUID(conversation_id)).version == version


def test_missing_conversations_are_404_and_ended_ones_409(
    client: httpx.Client, engine: Engine, database_url: str, server_schema: str
) -> None:
    missing = uuid.uuid4()
    response = client.get(f"/v1/conversations/{missing}", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": f"no {missing} in the event store",
    }
    posted = client.post(f"/v1/conversations/{missing}/messages", json={"text": "hi"}, headers=AUTH)
    assert posted.status_code == 404

    conversation_id = start(client)
    engine.end(uuid.UUID(conversation_id), "closed by the test")
    before = events_stored(database_url, server_schema)
    ended = client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"text": "hi"}, headers=AUTH
    )
    assert ended.status_code == 409
    assert ended.json()["error"] == "invalid_transition"
    assert ended.json()["detail"] == f"conversation {conversation_id} has ended"
    assert events_stored(database_url, server_schema) == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"text": "hi", "message_id": "m1:reply"}, "body.message_id: Expected `str` matching"),
        ({"text": ""}, "body.text: Expected `str` of length >= 1"),
        ({"text": "a\u0000b"}, "body.text: Expected `str` matching"),
        ({"text": "hi", "colour": "red"}, "Object contains unknown field `colour`"),
        ({"message_id": "m"}, "Object missing required field `text`"),
    ],
)
def test_a_malformed_message_is_a_400_naming_the_field_and_records_nothing(
    client: httpx.Client,
    database_url: str,
    server_schema: str,
    body: dict[str, Any],
    detail: str,
) -> None:
    conversation_id = start(client)
    before = events_stored(database_url, server_schema)
    response = client.post(f"/v1/conversations/{conversation_id}/messages", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid body"
    assert detail in response.json()["detail"]
    assert events_stored(database_url, server_schema) == before


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("x"), 404),
        (InvalidTransition("x"), 409),
        (FlowExpired("x"), 409),
        (Conflict("x"), 409),
        (ValidationFailed("x"), 422),
        (BadInput("x"), 400),
    ],
)
def test_every_domain_error_is_a_4xx_json_body(error: Exception, status: int) -> None:
    response = domain_error(None, error)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.content.detail == "x"


def test_listing_metrics_and_health_come_from_the_projections(
    client: httpx.Client, engine: Engine, server_schema: str
) -> None:
    conversation_id = start(client, chat_id="listed")
    say(client, conversation_id, "interview")
    datastore = engine.store.recorder.datastore  # type: ignore[attr-defined]
    decode = engine.store.mapper.to_domain_event  # type: ignore[attr-defined]
    runner = ProjectionRunner(datastore.pool, server_schema, decode, default_projections())
    runner.catch_up()

    listed = client.get("/v1/conversations", params={"limit": 1000}, headers=AUTH).json()
    row = next(r for r in listed if r["conversation_id"] == conversation_id)
    assert row["channel"] == "api" and row["message_count"] == 2
    assert row["active_flow_id"] is not None
    metrics = client.get("/v1/metrics", headers=AUTH).json()
    assert metrics["conversations"] >= 1 and metrics["messages"] >= 2
    assert {f["definition"] for f in metrics["flows"]} == {"intake"}
    health = client.get("/healthz").json()
    assert set(health["projection_lag"]) == {p.name for p in runner.projections.values()}
    assert all(lag == 0 for lag in health["projection_lag"].values())
    bad = client.get("/v1/conversations", params={"limit": 0}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid query"


# -- fuzzing -------------------------------------------------------------------------------------

FUZZED: dict[str, str] = {}  # the conversation the fixture below starts

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Shapes close to the real ones, so that the fuzzer gets past the first field.
UPDATE_LIKE = st.fixed_dictionaries(
    {"update_id": JSON},
    optional={
        "message": st.fixed_dictionaries(
            {"message_id": JSON, "chat": st.fixed_dictionaries({"id": JSON}) | JSON},
            optional={"text": JSON, "from": JSON},
        )
        | JSON,
        "callback_query": st.fixed_dictionaries(
            {"id": JSON, "from": JSON}, optional={"data": JSON, "message": JSON}
        ),
    },
)
MESSAGE_LIKE = st.fixed_dictionaries(
    {"text": JSON}, optional={"message_id": JSON, "choice": JSON, "user_id": JSON}
)
BODIES = (
    st.binary(max_size=64)
    | JSON.map(lambda v: json.dumps(v).encode())
    | UPDATE_LIKE.map(lambda v: json.dumps(v).encode())
    | MESSAGE_LIKE.map(lambda v: json.dumps(v).encode())
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(body=b'{"update_id": 1, "message": {"text": "\xed\xa0\x80"}}', target="webhook")
@example(body=b'{"text": "\\ud800"}', target="messages")
@given(body=BODIES, target=st.sampled_from(["webhook", "messages", "conversations"]))
def test_malformed_bodies_never_cause_a_5xx_or_store_an_event_when_refused(
    client: httpx.Client, database_url: str, server_schema: str, body: bytes, target: str
) -> None:
    path, headers = {
        "webhook": ("/telegram/webhook", SECRET_HEADER),
        "messages": (f"/v1/conversations/{FUZZED['id']}/messages", AUTH),
        "conversations": ("/v1/conversations", AUTH),
    }[target]
    before = events_stored(database_url, server_schema)
    response = client.post(
        path, content=body, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}
        assert events_stored(database_url, server_schema) == before


@pytest.fixture(autouse=True, scope="module")
def fuzzed_conversation(server: Server) -> None:
    """The conversation the fuzzer posts messages to must exist for its bodies to matter."""
    with httpx.Client(base_url=server.url) as c:
        started = c.post("/v1/conversations", json={"chat_id": "fuzz"}, headers=AUTH)
        FUZZED["id"] = started.json()["conversation_id"]


def test_an_api_without_a_token_configured_refuses_everything(
    server_env: dict[str, str], tmp_path: Any
) -> None:
    unsecured = Server({**server_env, "VOXLEDGER_API_TOKEN": ""}, tmp_path / "server.log").start()
    try:
        response = httpx.get(
            f"{unsecured.url}/v1/conversations", headers={"Authorization": "Bearer anything"}
        )
        assert response.status_code == 403
        assert "VOXLEDGER_API_TOKEN is not set" in response.json()["detail"]
    finally:
        unsecured.stop()


def test_an_idempotency_key_makes_a_message_without_an_id_recorded_once(
    client: httpx.Client, engine: Engine
) -> None:
    conversation_id = start(client)
    path = f"/v1/conversations/{conversation_id}/messages"
    headers = {**AUTH, "Idempotency-Key": "retry-1"}
    first = client.post(path, json={"text": "interview"}, headers=headers).json()
    again = client.post(path, json={"text": "interview"}, headers=headers).json()
    assert again["duplicate"] and again["text"] == first["text"]
    messages = [m.id for m in engine.get_conversation(uuid.UUID(conversation_id)).messages]
    assert messages.count("retry-1") == 1
    refused = client.post(path, json={"text": "x"}, headers={**AUTH, "Idempotency-Key": "a:b"})
    assert refused.status_code == 400
