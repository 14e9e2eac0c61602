"""`voxledger serve --workers 2`: two processes on one port and one database. A chat's
messages reach either worker, and each acknowledged message is recorded once, in a gapless
stream; a stop signal reaches every worker, which each stop gracefully."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    SECRET_HEADER,
    TOKEN,
    VOXLEDGER,
    Server,
    conversation_of,
    server_env_fixture,
    server_schema_fixture,
    text_update,
)

from voxledger.adapters.bootstrap import (
    LOOP_CONNECTIONS,
    OTHERS_CONNECTIONS,
    connections,
    open_engine,
    serving_connections,
)
from voxledger.adapters.chat.bot import reply_id
from voxledger.adapters.http.peers import Peers
from voxledger.domain.errors import BadInput

CLIENTS = 6  # concurrent clients, each on connections of its own
CHATS = 4  # every client writes to every chat
MESSAGES = 8  # per client and chat


def worker_lines(log: Path, event: str) -> list[dict[str, Any]]:
    """The server log's JSON lines of one event."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def wait_for(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


def worker_pids(server: Server) -> list[int]:
    """The serving workers: the server process's children that multiprocessing started."""
    assert server.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == server.process.pid and b"multiprocessing.spawn" in cmdline:
                pids.append(int(entry.name))
    return pids


def start_two_workers(env: dict[str, str], log: Path) -> Server:
    """Two workers, each serving its app (a worker serves at once if the database does not
    answer, and reports not ready until it does)."""
    server = Server(env, log, args=("--workers", "2")).start()
    ready = lambda: {line["worker"] for line in worker_lines(log, "serve.worker_ready")}  # noqa: E731
    wait_for(lambda: ready() == {0, 1}, "both workers to be ready")
    wait_for(lambda: bool(worker_lines(log, "serve.workers_serving")), "both workers to serve")
    return server


@pytest.fixture(scope="module", name="two_workers")
def two_workers_fixture(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_two_workers(server_env, tmp_path_factory.mktemp("workers") / "server.log")
    yield server
    server.stop()


def interleave(send: Callable[[httpx.Client, int, int, int], httpx.Response]) -> list[int]:
    """Every client sends its messages to every chat in turn, all clients at once, each on
    fresh connections (so that the kernel spreads them over both workers); an answer that
    is not a 2xx is sent again (as Telegram does). Every status code seen."""
    statuses: list[int] = []
    failures: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for n in range(MESSAGES):
                with httpx.Client(timeout=60) as http:  # a connection of its own
                    for chat in range(CHATS):
                        while True:
                            response = send(http, k, chat, n)
                            statuses.append(response.status_code)
                            if response.is_success:
                                break
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return statuses


def versions_are_gapless(database_url: str, schema: str) -> dict[str, list[int]]:
    """Every stream whose versions do not run 1, 2, 3... without a gap (none, we hope)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT originator_id::text, array_agg(originator_version ORDER BY "
                "originator_version) FROM {} GROUP BY originator_id"
            ).format(sql.Identifier(schema, "voxledger_events"))
        ).fetchall()
    return {stream: v for stream, v in rows if v != list(range(1, len(v) + 1))}


def served_by_their_owners(log: Path, conversations: set[str]) -> None:
    """Each conversation's messages were answered by one worker (its chat's owner), though
    both workers took some of them from the network: the other handed them over."""
    lines = [
        line
        for line in worker_lines(log, "http.request")
        if line.get("conversation_id") in conversations
        and (line["path"] == "/telegram/webhook" or line["path"].endswith("/messages"))
    ]
    answered_by: dict[str, set[int]] = {}
    for line in lines:
        answered_by.setdefault(line["conversation_id"], set()).add(
            line.get("served_by", line["worker"])
        )
    assert set(answered_by) == conversations
    assert all(len(workers) == 1 for workers in answered_by.values()), answered_by
    assert {line["worker"] for line in lines} == {0, 1}
    handed = [line for line in lines if "served_by" in line]
    assert handed and all(line["served_by"] != line["worker"] for line in handed)


def test_interleaved_updates_to_the_same_chats_are_each_recorded_once_by_two_workers(
    two_workers: Server, database_url: str, server_schema: str
) -> None:
    def send(http: httpx.Client, client: int, chat: int, n: int) -> httpx.Response:
        update = text_update(7100 + chat, 1000 * (client + 1) + n, f"hello {client}.{n}")
        return http.post(f"{two_workers.url}/telegram/webhook", json=update, headers=SECRET_HEADER)

    statuses = interleave(send)

    assert not [s for s in statuses if s >= 500]
    served_by = {line["worker"] for line in worker_lines(two_workers.log, "http.request")}
    assert served_by == {0, 1}
    with open_engine(database_url, schema=server_schema) as engine:
        for chat in range(CHATS):
            state = engine.get_conversation(conversation_of(engine, 7100 + chat))
            counted = Counter(m.id for m in state.messages)
            sent = {str(1000 * (k + 1) + n) for k in range(CLIENTS) for n in range(MESSAGES)}
            assert {i: counted[i] for i in sent} == dict.fromkeys(sent, 1)
            assert {i: counted[reply_id(i)] for i in sent} == dict.fromkeys(sent, 1)
        chats = {str(conversation_of(engine, 7100 + chat)) for chat in range(CHATS)}
    assert versions_are_gapless(database_url, server_schema) == {}
    served_by_their_owners(two_workers.log, chats)


def test_interleaved_api_messages_to_the_same_conversations_are_each_recorded_once(
    two_workers: Server, database_url: str, server_schema: str
) -> None:
    with httpx.Client(base_url=two_workers.url, headers=AUTH, timeout=30) as http:
        started = [http.post("/v1/conversations", json={}).json() for _ in range(CHATS)]
    conversations = [s["conversation_id"] for s in started]

    def send(http: httpx.Client, client: int, chat: int, n: int) -> httpx.Response:
        url = f"{two_workers.url}/v1/conversations/{conversations[chat]}/messages"
        body = {"text": f"hello {client}.{n}", "message_id": f"c{client}-m{n}"}
        return http.post(url, json=body, headers=AUTH)

    statuses = interleave(send)

    assert not [s for s in statuses if s >= 500]
    with open_engine(database_url, schema=server_schema) as engine:
        for conversation in conversations:
            counted = Counter(m.id for m in engine.get_conversation(conversation).messages)
            sent = {f"c{k}-m{n}" for k in range(CLIENTS) for n in range(MESSAGES)}
            assert {i: counted[i] for i in sent} == dict.fromkeys(sent, 1)
            assert {i: counted[reply_id(i)] for i in sent} == dict.fromkeys(sent, 1)
    assert versions_are_gapless(database_url, server_schema) == {}
    served_by_their_owners(two_workers.log, set(conversations))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_reaches_every_worker_which_ends_its_live_tails_and_stops(
    stop: signal.Signals, server_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = start_two_workers(server_env, log)
    try:
        workers = worker_pids(server)
        assert len(workers) == 2
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            cid = http.post("/v1/conversations", json={}).json()["conversation_id"]
        # Live tails on fresh connections until each worker holds at least one.
        tails: list[tuple[httpx.Client, Any, Iterator[str]]] = []
        try:
            while {line["worker"] for line in worker_lines(log, "console.tail_begun")} != {0, 1}:
                assert len(tails) < 40, "the kernel never sent a connection to one worker"
                client = httpx.Client(base_url=server.url, timeout=30)
                client.post("/console/login", data={"token": TOKEN}, headers={"Origin": server.url})
                stream = client.stream(
                    "GET", f"/console/conversations/{cid}/tail", params={"after": f"{cid}:1"}
                )
                response = stream.__enter__()
                tails.append((client, stream, response.iter_lines()))
                assert response.status_code == 200
                wait_for(
                    lambda: len(worker_lines(log, "console.tail_begun")) == len(tails),
                    "the tail to begin",
                )
            assert server.process is not None
            server.process.send_signal(stop)
            assert server.process.wait(60) == 0  # would wait for ever if a tail held it up
            for _, _, lines in tails:
                list(lines)  # returns: the worker closed the stream
        finally:
            for client, stream, _ in tails:
                stream.__exit__(None, None, None)
                client.close()
        wait_for(lambda: all(_gone(pid) for pid in workers), "the workers to end")
        ended = worker_lines(log, "console.tail_ended")
        assert {line["worker"] for line in ended if line["reason"] == "server stopping"} == {0, 1}
    finally:
        server.stop()


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    server = start_two_workers(server_env, tmp_path / "server.log")
    workers = worker_pids(server)
    try:
        assert len(workers) == 2
        server.kill()
        wait_for(lambda: all(_gone(pid) for pid in workers), "the workers to stop")
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()


def _gone(pid: int) -> bool:
    """Whether the process has ended (a zombie nobody reaped yet has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_second_server_on_a_port_in_use_says_so_and_exits(
    two_workers: Server, server_env: dict[str, str]
) -> None:
    command = [*VOXLEDGER, "serve", "--port", str(two_workers.port), "--workers", "2"]
    result = subprocess.run(command, env=server_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{two_workers.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_that_cannot_build_their_pieces_stop_the_server_saying_so(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """Not an outage (the database answers, but the tables are not there and may not be
    made): starting the workers again would fail the same way, so the server stops."""
    env = {**server_env, "VOXLEDGER_CREATE_TABLES": "no", "VOXLEDGER_SCHEMA": "never_made"}
    command = [*VOXLEDGER, "serve", "--port", "0", "--workers", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.rstrip().endswith("(its log says why)"), result.stderr
    assert "cannot serve" in result.stderr.splitlines()[-1]
    failed = [json.loads(line) for line in result.stderr.splitlines() if "worker_failed" in line]
    assert failed and all("never_made" in line["exception"] for line in failed)


def test_each_workers_pool_is_cut_so_that_all_fit_under_the_servers_max_connections(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
    assert serving_connections(database_url, 1) == connections()
    assert serving_connections(database_url, 2) == connections()  # plenty of room
    workers = limit // 12
    each = serving_connections(database_url, workers)
    assert each.pool_size >= 1
    held = each.pool_size + each.max_overflow + LOOP_CONNECTIONS
    assert workers * held <= limit - OTHERS_CONNECTIONS
    with pytest.raises(BadInput, match="do not fit"):
        serving_connections(database_url, limit)


def test_a_worker_that_dies_is_started_again_and_serving_goes_on(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = start_two_workers(server_env, log)
    try:
        (serving,) = worker_lines(log, "serve.workers_serving")
        first, second = serving["pids"]  # workers 0 and 1
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: first not in worker_pids(server), "the dead worker to be reaped")
        # Until it is back, worker 1 answers the chats worker 0 owns itself.
        owned = [c for c in range(7400, 7480) if Peers(1, 2, "").owner(str(c).encode()) == 0]

        def answered() -> list[dict[str, Any]]:
            return [line for line in worker_lines(log, "http.request") if line["status"] == 200]

        before = len(answered())
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for chat in owned[:4]:
                update = text_update(chat, 1, "/start")
                assert http.post("/telegram/webhook", json=update, headers=SECRET_HEADER).is_success
        # A request's line is written once its answer is sent: wait for the four.
        wait_for(lambda: len(answered()) >= before + 4, "the four requests' log lines")
        assert [(line["worker"], line.get("served_by")) for line in answered()[before:]] == [
            (1, None)
        ] * 4
        assert worker_lines(log, "serve.peer_unreachable")[0]["peer"] == 0
        wait_for(lambda: len(worker_pids(server)) == 2, "a new worker in its place")
        assert second in worker_pids(server)
        wait_for(lambda: bool(worker_lines(log, "serve.worker_stopped")), "the supervisor's word")
        (stopped,) = worker_lines(log, "serve.worker_stopped")
        assert stopped["exit_code"] == -signal.SIGKILL
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for n in range(10):  # fresh connections: the new worker takes its share in time
                update = text_update(7300, 100 + n, "/start")
                assert http.post("/telegram/webhook", json=update, headers=SECRET_HEADER).is_success
    finally:
        server.stop()


def test_a_serving_process_collects_its_garbage_seldom_and_never_its_start_up() -> None:
    """What `serve` does to the garbage collector once its app is built (see
    `collect_for_serving`): the start-up's objects frozen, young collections every 10,000
    objects kept. Undone afterwards: the test process keeps its own settings."""
    import gc

    from voxledger.adapters.http.serving import SERVING_GC_THRESHOLDS, collect_for_serving

    before = gc.get_threshold()
    try:
        collect_for_serving()
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
