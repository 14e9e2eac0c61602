"""The HTTP app built from the composition root's pieces, served on 127.0.0.1 in this
process: routers added by the embedder get the same pieces by dependency injection, and a
test swaps a piece where the pieces are built."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import uvicorn
from litestar import Router, get
from litestar.di import NamedDependency
from litestar.types import ASGIApp

from voxledger.adapters.bootstrap import open_app, open_services
from voxledger.adapters.http.settings import Settings
from voxledger.adapters.store.event_store import EventStore
from voxledger.domain.engine import Engine

TOKEN = "token-for-the-in-process-app"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def serving(app: ASGIApp) -> Iterator[httpx.Client]:
    """The app on a free port of 127.0.0.1, stopped (and its thread ended) afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-in-test")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "the server did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


@get("/console/head", sync_to_thread=True)
def console_head(
    store: NamedDependency[EventStore], engine: NamedDependency[Engine]
) -> dict[str, int]:
    """An embedder's route: it names the pieces it needs and gets the app's own."""
    return {"head": store.head(), "flows": len(list(engine.flows.all()))}


def test_a_router_passed_to_the_app_gets_the_services_pieces_by_injection(
    database_url: str, schema: str
) -> None:
    with open_services(database_url, schema=schema) as services:
        services.engine.start_conversation("api")
        console = Router(path="/operator", route_handlers=[console_head])
        app = open_app(services, Settings(api_token=TOKEN), routes=[console])
        with serving(app) as client:
            response = client.get("/operator/console/head")
            assert response.status_code == 200
            assert response.json() == {"head": services.store.head(), "flows": 1}
            # The app's own routes are all still there, guards included.
            assert client.get("/healthz").json()["status"] == "ok"
            assert client.post("/v1/conversations", json={}).status_code == 401
            assert client.post("/telegram/webhook", json={}).status_code == 403  # no secret


def test_a_clock_swapped_in_the_composition_root_dates_what_the_api_records(
    database_url: str, schema: str
) -> None:
    then = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    with (
        open_services(database_url, schema=schema, clock=lambda: then) as services,
        serving(open_app(services, Settings(api_token=TOKEN))) as client,
    ):
        started = client.post("/v1/conversations", json={"channel": "api"}, headers=AUTH)
        assert started.status_code == 201
        cid = started.json()["conversation_id"]
        shown = client.get(f"/v1/conversations/{cid}", headers=AUTH).json()
    assert shown["conversation"]["started_at"] == "2031-05-04T03:02:01Z"
