"""A serving worker that crashes while it serves is started again, and serving goes on; one
that keeps dying as it starts waits longer each time; only a worker that cannot build its
pieces stops the server (`test_http_workers.py`).

The app here is a small ASGI app served by `serving.serve` with two workers: its ``/crash``
stops the worker's event loop under uvicorn, an error that escapes uvicorn's server as a
defect in the stack would; ``/crash-at-start`` does that and leaves a file that makes every
worker started after it exit half a second into its start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx

from voxledger.scripts.benchmarks.served import free_port

SERVER = """
import asyncio
import os
import sys
import threading
from contextlib import contextmanager

from voxledger.adapters.http.serving import Listener, serve
from voxledger.adapters.logs import configure_logging

MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash-at-start")


@contextmanager
def app(closing, peers):
    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            return  # nothing to start or stop
        if scope["path"] in ("/crash", "/crash-at-start"):
            if scope["path"] == "/crash-at-start":
                open(MARKER, "w").close()
            asyncio.get_running_loop().stop()
            await asyncio.sleep(60)
        body = str(os.getpid()).encode()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length]})
        await send({"type": "http.response.body", "body": body})

    configure_logging("INFO", json=True)
    if os.path.exists(MARKER):
        threading.Timer(0.5, os._exit, (1,)).start()
    yield asgi


if __name__ == "__main__":
    configure_logging("INFO", json=True)
    listener = Listener(port=int(sys.argv[1]), workers=2)
    serve(app, listener, ready=lambda at: print("serving", flush=True))
"""


def pids_seen(url: str, requests: int = 24) -> set[int]:
    """The workers that answered requests on fresh connections."""
    seen = set()
    for _ in range(requests):
        with httpx.Client(base_url=url, timeout=10) as http:
            seen.add(int(http.get("/pid").text))
    return seen


def start(tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path]:
    """The server, serving with two workers; its URL and its log."""
    script = tmp_path / "crashing_server.py"
    script.write_text(SERVER)
    log = tmp_path / "server.log"
    port = free_port()
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
    assert server.stdout is not None and server.stdout.readline() == "serving\n"
    return server, f"http://127.0.0.1:{port}", log


def log_lines(log: Path, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == event]


def stop(server: subprocess.Popen[str]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    assert server.wait(30) == 0


def crash(url: str, path: str) -> None:
    """Ask for a crash (the worker's loop stops with the request in it)."""
    with suppress(httpx.TransportError), httpx.Client(base_url=url, timeout=10) as http:
        http.get(path)


def wait_for_a_new_worker(
    server: subprocess.Popen[str], url: str, log: Path, before: set[int]
) -> None:
    """Until a worker that was not among ``before`` answers (the server serving on)."""
    deadline = time.monotonic() + 60
    while True:
        with suppress(httpx.TransportError):  # one may reach a worker as it goes
            if pids_seen(url, 4) - before:
                return
        assert server.poll() is None, log.read_text()[-3000:]  # it serves on
        assert time.monotonic() < deadline, "no new worker answered in 60 s"
        time.sleep(0.2)


def test_a_worker_that_crashes_while_serving_is_started_again(tmp_path: Path) -> None:
    server, url, log = start(tmp_path)
    try:
        before = pids_seen(url)
        crash(url, "/crash")
        wait_for_a_new_worker(server, url, log, before)
        assert log_lines(log, "serve.worker_crashed")  # the worker's word, its traceback inside
        assert not log_lines(log, "serve.worker_failed")
        (stopped,) = log_lines(log, "serve.worker_stopped")
        assert (stopped["exit_code"], stopped["restart_in_s"]) == (1, 1.0)
        assert len(pids_seen(url)) == 2  # both workers serve
    finally:
        stop(server)


def test_a_worker_that_keeps_dying_as_it_starts_waits_longer_each_time(tmp_path: Path) -> None:
    server, url, log = start(tmp_path)
    marker = tmp_path / "crash-at-start"
    try:
        before = pids_seen(url)
        crash(url, "/crash-at-start")
        deadline, answered = time.monotonic() + 60, 0
        while len(log_lines(log, "serve.worker_stopped")) < 3:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            with suppress(httpx.TransportError):  # one may reach the worker as it dies
                answered += len(pids_seen(url, 2))  # by the other worker, mostly
            time.sleep(0.2)
        marker.unlink()  # the next start serves
        assert answered  # the server answered all along
        stopped = log_lines(log, "serve.worker_stopped")
        assert len({line["worker"] for line in stopped}) == 1
        assert [line["restart_in_s"] for line in stopped] == [1.0, 2.0, 4.0]
        assert [line["exit_code"] for line in stopped] == [1, 1, 1]
        wait_for_a_new_worker(server, url, log, before)
        assert len(log_lines(log, "serve.worker_stopped")) == 3
    finally:
        stop(server)
