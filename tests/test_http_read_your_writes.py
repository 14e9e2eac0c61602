"""Read your writes over HTTP, against a real `voxledger serve` and a real projection worker:
a write answers with the conversation's version and the log position of its last event; a
write that expected another version is refused (409, the current version) and records
nothing; a projection read given a write's position sees that write, and one given a
position the projections have not reached is answered 503 in bounded time."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Spawn
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    VOXLEDGER,
    Server,
    events_stored,
    server_env_fixture,
    server_schema_fixture,
)

from voxledger.adapters.bootstrap import http_settings
from voxledger.domain.errors import BadInput

READ_WAIT_S = "5"  # how long the server lets a projection read wait here


@pytest.fixture(scope="module", name="server")
def server_fixture(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {**server_env, "VOXLEDGER_READ_WAIT_S": READ_WAIT_S}
    running = Server(env, tmp_path_factory.mktemp("server") / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(name="client")
def client_fixture(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture(name="projection_worker")
def projection_worker_fixture(
    server: Server, server_env: dict[str, str], spawn: Spawn
) -> subprocess.Popen[str]:
    """`voxledger project run` on the server's schema, as a process of its own, once it has
    applied the log as it stands (its start-up takes a while on a busy machine)."""
    worker = spawn(
        [*VOXLEDGER, "project", "run"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        head = client.get("/healthz").json()["head"]
        deadline = time.monotonic() + 120
        while client.get("/v1/conversations", params={"min_position": head}).status_code != 200:
            assert worker.poll() is None, "the projection worker stopped"
            assert time.monotonic() < deadline, "the projection worker did not catch up"
    return worker


def start(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/conversations", json={})
    assert response.status_code == 201, response.text
    return response.json()


def say(client: httpx.Client, conversation_id: str, text: str, **more: Any) -> httpx.Response:
    return client.post(f"/v1/conversations/{conversation_id}/messages", json={"text": text, **more})


def test_every_write_answers_with_the_conversations_version_and_its_log_position(
    client: httpx.Client,
) -> None:
    started = start(client)
    assert started["version"] == 1 and started["position"] > 0

    first = say(client, started["conversation_id"], "/start", message_id="m1").json()
    assert first["version"] > started["version"] and first["position"] > started["position"]
    state = client.get(f"/v1/conversations/{started['conversation_id']}").json()
    assert state["conversation"]["version"] == first["version"]

    second = say(client, started["conversation_id"], "design", message_id="m2").json()
    assert second["version"] > first["version"] and second["position"] > first["position"]

    again = say(client, started["conversation_id"], "design", message_id="m2").json()
    assert again["duplicate"] and again["version"] == second["version"]
    assert again["position"] >= second["position"]  # still covers the first attempt's write


def test_a_message_written_against_the_version_it_expected_is_recorded(
    client: httpx.Client,
) -> None:
    started = start(client)
    reply = say(client, started["conversation_id"], "/start", expected_version=1)

    assert reply.status_code == 200, reply.text
    assert reply.json()["version"] > 1


def test_a_stale_expected_version_is_refused_with_the_current_one_and_records_nothing(
    client: httpx.Client, database_url: str, server_schema: str
) -> None:
    started = start(client)
    moved = say(client, started["conversation_id"], "/start").json()
    before = events_stored(database_url, server_schema)

    refused = say(client, started["conversation_id"], "design", expected_version=1)

    assert refused.status_code == 409
    assert refused.json() == {
        "error": "version_mismatch",
        "detail": refused.json()["detail"],
        "current_version": moved["version"],
    }
    assert events_stored(database_url, server_schema) == before
    state = client.get(f"/v1/conversations/{started['conversation_id']}").json()
    assert state["conversation"]["version"] == moved["version"]
    assert [m["content"] for m in state["conversation"]["messages"]].count("design") == 0


def test_an_expected_version_must_be_a_version(client: httpx.Client) -> None:
    started = start(client)
    refused = say(client, started["conversation_id"], "hello", expected_version=-1)
    assert refused.status_code == 400
    assert "expected_version" in str(refused.json()["detail"])


def test_a_projection_read_given_a_writes_position_sees_that_write(
    client: httpx.Client, projection_worker: subprocess.Popen[str]
) -> None:
    for round in range(10):
        started = start(client)
        reply = say(client, started["conversation_id"], "/start", message_id=f"r{round}").json()

        listed = client.get(
            "/v1/conversations", params={"min_position": reply["position"], "limit": 1000}
        )

        assert listed.status_code == 200, listed.text
        rows = {row["conversation_id"]: row for row in listed.json()}
        assert rows[started["conversation_id"]]["version"] == reply["version"]
    metrics = client.get("/v1/metrics", params={"min_position": reply["position"]})
    assert metrics.status_code == 200 and metrics.json()["messages"] >= 20


def test_a_read_waiting_for_a_position_not_reached_in_time_is_503_with_the_position_reached(
    client: httpx.Client,
) -> None:
    written = start(client)["position"]  # and no projection worker runs now

    for path in ("/v1/conversations", "/v1/metrics"):
        behind = client.get(path, params={"min_position": written})

        assert behind.status_code == 503
        assert behind.headers["Retry-After"].isdigit()
        body = behind.json()
        assert body["error"] == "projections behind"
        assert body["position"] < written
        assert str(written) in body["detail"]


def test_a_position_beyond_the_log_is_refused_at_once(client: httpx.Client) -> None:
    beyond = start(client)["position"] + 1_000_000  # no write has it

    for path in ("/v1/conversations", "/v1/metrics"):
        refused = client.get(path, params={"min_position": beyond})

        assert refused.status_code == 409
        assert "beyond the log" in refused.json()["detail"]


def test_the_openapi_document_describes_versions_positions_and_their_refusals(
    client: httpx.Client,
) -> None:
    document = client.get("/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    message = document["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]
    assert {"version", "position"} <= set(schemas["Reply"]["properties"])
    assert "expected_version" in schemas["NewMessage"]["properties"]
    conflict = message["responses"]["409"]["content"]["application/json"]["schema"]
    assert conflict == {"$ref": "#/components/schemas/ConflictBody"}
    assert "current_version" in schemas["ConflictBody"]["properties"]
    for path in ("/v1/conversations", "/v1/metrics"):
        read = document["paths"][path]["get"]
        assert "min_position" in {p["name"] for p in read["parameters"]}
        behind = read["responses"]["503"]
        assert behind["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/BehindBody"
        }
        assert "Retry-After" in behind["headers"]


@pytest.mark.parametrize("wait", ["soon", "-1", "61", "nan"])
def test_a_read_wait_that_is_not_seconds_from_0_to_60_is_refused(
    wait: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXLEDGER_READ_WAIT_S", wait)
    with pytest.raises(BadInput, match="VOXLEDGER_READ_WAIT_S"):
        http_settings()


def test_a_read_wait_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLEDGER_READ_WAIT_S", "0.25")
    assert http_settings().read_wait_s == 0.25
