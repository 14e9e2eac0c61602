"""`voxledger serve` as a real process on a free port: health, schema, limits, logs, errors.

The harness here (a server process, Telegram update builders, an event count) is shared by
the other test_http_* modules, each of which starts a server of its own: importing the
`*_fixture` functions registers the fixtures there (named without the suffix)."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from voxledger.adapters.bootstrap import ENV_TEST_CLOCK, open_chat_directory, open_engine
from voxledger.adapters.chat.directory import ChatKey
from voxledger.domain.engine import Engine

FIXTURES = Path(__file__).parent / "fixtures" / "telegram"
VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
SECRET = "webhook-secret-for-tests"
TOKEN = "api-token-for-tests"
SECRET_HEADER = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `voxledger serve` process; its stderr (the request logs) goes to a file."""

    def __init__(
        self, env: dict[str, str], log: Path, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.env, self.log, self.port = env, log, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args  # more of serve's options
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                [*VOXLEDGER, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise
        return self

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become healthy within 30 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module", name="server_schema")
def server_schema_fixture(database_url: str) -> Iterator[str]:
    """A schema for one module's server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="module", name="server_env")
def server_env_fixture(database_url: str, server_schema: str) -> dict[str, str]:
    return {
        **os.environ,
        "VOXLEDGER_DATABASE_URL": database_url,
        "VOXLEDGER_SCHEMA": server_schema,
        "VOXLEDGER_LOG_LEVEL": "INFO",
        ENV_TEST_CLOCK: "2026-11-21T14:00:00+00:00",  # the server's clock starts here
        "VOXLEDGER_TELEGRAM_SECRET": SECRET,
        "VOXLEDGER_API_TOKEN": TOKEN,
        "VOXLEDGER_MAX_BODY_BYTES": "65536",
    }


@pytest.fixture(scope="module", name="server")
def server_fixture(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for the whole module."""
    running = Server(server_env, tmp_path_factory.mktemp("server") / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(name="client")
def client_fixture(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def events_stored(database_url: str, schema: str) -> int:
    """Every event in the schema's log (the store creates the table on start-up)."""
    with psycopg.connect(database_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(schema, "voxledger_events")
        )
        row = conn.execute(query).fetchone()
    return row[0] if row else 0


def conversation_of(engine: Engine, chat_id: str | int, channel: str = "telegram") -> uuid.UUID:
    """The conversation a chat is in now, as the server's chat directory says."""
    found = open_chat_directory(engine.store).find(ChatKey(channel, str(chat_id)))  # type: ignore[arg-type]
    assert found is not None, f"{channel} chat {chat_id} has no conversation"
    return found


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def text_update(chat_id: int, message_id: int, text: str, update_id: int = 0) -> dict[str, Any]:
    """A private chat's text message, from the fixture with the ids and text replaced."""
    update = copy.deepcopy(fixture("message_text.json"))
    update["update_id"] = update_id or message_id
    message = update["message"]
    message.update(message_id=message_id, text=text, date=int(time.time()))
    message["chat"]["id"] = message["from"]["id"] = chat_id
    return update


def button_update(chat_id: int, query_id: str, data: str) -> dict[str, Any]:
    """A press on one of the menu's inline buttons."""
    update = copy.deepcopy(fixture("callback_query.json"))
    query = update["callback_query"]
    query.update(id=query_id, data=data)
    query["from"]["id"] = query["message"]["chat"]["id"] = chat_id
    return update


def post_update(client: httpx.Client, update: dict[str, Any]) -> httpx.Response:
    return client.post("/telegram/webhook", json=update, headers=SECRET_HEADER)


# -- the tests ------------------------------------------------------------------------------------


def test_healthz_queries_the_database(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert isinstance(body["head"], int)


def test_the_openapi_schema_documents_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/telegram/webhook",
        "/healthz",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/history",
        "/v1/flows/{flow_id}",
        "/v1/metrics",
    }
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "telegram"}
    assert "Update" in schema["components"]["schemas"]


def test_a_body_over_the_limit_is_refused_with_413_and_records_nothing(
    client: httpx.Client, database_url: str, server_schema: str
) -> None:
    before = events_stored(database_url, server_schema)
    response = client.post(
        f"/v1/conversations/{uuid.uuid4()}/messages", json={"text": "x" * 70_000}, headers=AUTH
    )
    assert response.status_code == 413
    assert events_stored(database_url, server_schema) == before
    # The webhook takes what Telegram sends (up to 1 MiB), not the API's limit.
    big = text_update(1, 1, "x" * 1_100_000)
    response = post_update(client, big)
    assert response.status_code == 413
    assert response.json() == {
        "error": "request entity too large",
        "detail": "Request Entity Too Large",
    }
    assert events_stored(database_url, server_schema) == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "body: missing"),
        (b"{", "Input data was truncated"),
        (b"[]", "body: Expected `object`, got `array`"),
        (b'{"update_id": "one"}', "body.update_id: Expected `int`, got `str`"),
        (
            b'{"update_id": 1, "message": {"message_id": 1, "chat": {"id": "x"}}}',
            "body.message.chat.id: Expected `int`, got `str`",
        ),
    ],
)
def test_a_malformed_update_gets_a_400_naming_the_problem_and_records_nothing(
    client: httpx.Client, database_url: str, server_schema: str, body: bytes, detail: str
) -> None:
    before = events_stored(database_url, server_schema)
    response = client.post("/telegram/webhook", content=body, headers=SECRET_HEADER)
    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert events_stored(database_url, server_schema) == before


def test_unknown_paths_and_methods_get_json_errors(client: httpx.Client) -> None:
    missing = client.get("/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")
    wrong = client.get("/telegram/webhook")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method not allowed")


def test_each_request_is_logged_with_its_conversation_id(
    client: httpx.Client, server: Server, database_url: str, server_schema: str
) -> None:
    reply = post_update(client, text_update(991, 1, "/start"))
    assert reply.status_code == 200
    client.get("/healthz")
    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    webhook = [line for line in lines if line.get("path") == "/telegram/webhook"][-1]
    assert webhook["event"] == "http.request" and webhook["status"] == 200
    assert webhook["method"] == "POST" and webhook["duration_ms"] >= 0
    with open_engine(database_url, schema=server_schema) as engine:
        assert webhook["conversation_id"] == str(conversation_of(engine, 991))
    health = [line for line in lines if line.get("path") == "/healthz"][-1]
    assert "conversation_id" not in health  # nothing leaks from one request to the next


def test_listing_before_any_projection_worker_ran_is_a_503_saying_so(
    client: httpx.Client,
) -> None:
    response = client.get("/v1/conversations", headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {
        "error": "projections unavailable",
        "detail": "the projection tables do not exist yet: start the projection worker "
        "(voxledger project run)",
    }
    health = client.get("/healthz").json()
    assert health["projection_lag"] == {}  # nothing to report, and still healthy
