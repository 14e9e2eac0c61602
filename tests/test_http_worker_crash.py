"""A serving worker that crashes while it serves is started again, and serving goes on; only
a worker that cannot build its pieces stops the server (`test_http_workers.py`).

The app here is a small ASGI app served by `serving.serve` with two workers: its ``/crash``
stops the worker's event loop under uvicorn, an error that escapes uvicorn's server as a
defect in the stack would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from voxledger.scripts.benchmarks.served import free_port

SERVER = """
import asyncio
import os
import sys
from contextlib import contextmanager

from voxledger.adapters.http.serving import Listener, serve
from voxledger.adapters.logs import configure_logging


@contextmanager
def app(closing, peers):
    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            return  # nothing to start or stop
        if scope["path"] == "/crash":
            asyncio.get_running_loop().stop()
            await asyncio.sleep(60)
        body = str(os.getpid()).encode()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length]})
        await send({"type": "http.response.body", "body": body})

    configure_logging("INFO", json=True)
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


def test_a_worker_that_crashes_while_serving_is_started_again(tmp_path: Path) -> None:
    script = tmp_path / "crashing_server.py"
    script.write_text(SERVER)
    log = tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        assert server.stdout is not None and server.stdout.readline() == "serving\n"
        before = pids_seen(url)
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                http.get("/crash")
        except httpx.TransportError:
            pass  # the worker's loop stopped with the request in it
        deadline = time.monotonic() + 60
        while True:
            try:
                if pids_seen(url, 4) - before:
                    break  # a new worker answers
            except httpx.TransportError:
                pass  # none listens for a moment, or the server has stopped:
            assert server.poll() is None, log.read_text()[-3000:]  # it serves on
            assert time.monotonic() < deadline, "no new worker answered in 60 s"
            time.sleep(0.2)

        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        events = {line["event"]: line for line in lines}
        assert "serve.worker_crashed" in events  # the worker's own word, its traceback inside
        assert "serve.worker_failed" not in events
        assert events["serve.worker_stopped"]["exit_code"] == 1
        assert len(pids_seen(url)) == 2  # both workers serve
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(30) == 0
