"""The served app's own cost per message, without HTTP: chat messages handed to the ASGI app
by concurrent callers in this process, over the real services (a schema of its own, dropped
afterwards). For each run: messages per second, CPU per message (this process's CPU time:
the event loop and the commit threads) and the garbage collector's pauses. Steadier than the
served benchmark on a shared machine, and the place to compare one change with the next.

Run as ``python -m voxledger.scripts.benchmarks.inprocess [--route webhook|api] [--messages
12800] [--callers 64] [--runs 3] [--gc serving|default] [--profile FILE]`` with the
database as for `voxledger bench`. ``--gc serving`` collects as `voxledger serve` does
(`collect_for_serving`); ``--profile`` writes a cProfile of the last run (the event loop's
thread only) to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from ...adapters.bootstrap import (
    http_settings,
    open_app,
    open_services,
    resolve_database_url,
    scratch_schema,
    start_logging,
)
from ...adapters.http.serving import collect_for_serving
from ...adapters.http.starting import Lifespan
from ..output import print_table
from .load import DATE, ROUND

SECRET, TOKEN = "in-process-secret", "in-process-token"
Call = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


def asgi_caller(app: Any) -> Call:
    """A coroutine that sends one request to the app and returns its status and body."""

    async def call(
        method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status, parts = [0], []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            else:
                parts.append(message.get("body", b""))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)
        return status[0], b"".join(parts)

    return call


class Pauses:
    """The collector's pauses while installed, in seconds."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)


def main() -> None:
    """Build the app over a scratch schema, send the messages, print a row per run."""
    parser = argparse.ArgumentParser(prog="inprocess", description=__doc__)
    parser.add_argument("--route", choices=["webhook", "api"], default="webhook")
    parser.add_argument("--messages", type=int, default=12_800)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gc", choices=["serving", "default"], default="serving")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    start_logging("WARNING")  # the request log is the served benchmark's to measure
    with (
        scratch_schema(resolve_database_url(None)) as (url, schema),
        open_services(url, schema=schema) as services,
    ):
        settings = msgspec.structs.replace(http_settings(), telegram_secret=SECRET, api_token=TOKEN)
        app = open_app(services, settings, closing=threading.Event())
        rows = anyio.run(_runs, app, args)
    print_table(
        f"in-process {args.route}, {args.callers} callers, {args.messages:,} messages a run",
        ["run", "messages/s", "CPU ms/message", "collections", "longest pause ms"],
        rows,
    )
    cpu = [float(r[2]) for r in rows]
    print(
        f"CPU per message: median {statistics.median(cpu):.3f} ms [{min(cpu):.3f}-{max(cpu):.3f}]"
    )


async def _runs(app: Any, args: argparse.Namespace) -> list[tuple[str, ...]]:
    call = asgi_caller(app)
    lifespan = Lifespan(app)  # as the server runs it
    await lifespan.start()
    try:
        conversations = await _conversations(call, args.route)
        await _send(call, args, conversations, rounds=1, first_id=1)  # chats begun, warm
        if args.gc == "serving":
            collect_for_serving()
        rows = []
        for run in range(args.runs):
            pauses = Pauses()
            gc.callbacks.append(pauses)
            profile = cProfile.Profile() if args.profile and run == args.runs - 1 else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile is not None:
                profile.enable()
            rounds = max(1, args.messages // (args.callers * 2))
            await _send(call, args, conversations, rounds=rounds, first_id=(run + 2) * 10**8)
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            gc.callbacks.remove(pauses)
            sent = rounds * args.callers * 2
            rows.append(
                (
                    str(run + 1),
                    f"{sent / wall:,.0f}",
                    f"{1000 * cpu / sent:.3f}",
                    str(len(pauses.pauses)),
                    f"{1000 * max(pauses.pauses, default=0.0):.1f}",
                )
            )
        return rows
    finally:
        await lifespan.stop()


async def _conversations(call: Call, route: str) -> list[str]:
    if route == "webhook":
        return []
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    started = []
    for _ in range(128):
        status, body = await call("POST", "/v1/conversations", headers, b'{"participant": "p"}')
        assert status == 201, body
        started.append(msgspec.json.decode(body)["conversation_id"])
    return started


async def _send(
    call: Call, args: argparse.Namespace, conversations: list[str], *, rounds: int, first_id: int
) -> None:
    """Each caller talks to two chats of its own in turn, as in `load.py`: the intake form's
    round of ten messages, again and again."""
    webhook = {"x-telegram-bot-api-secret-token": SECRET, "content-type": "application/json"}
    api = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}

    async def caller(c: int) -> None:
        for n in range(rounds * 2):
            k = (c + args.callers * (n % 2)) % 128
            text = ROUND[(n // 2) % len(ROUND)]
            i = first_id + c * 100_000 + n
            if args.route == "webhook":
                update = {
                    "update_id": i,
                    "message": {
                        "message_id": i,
                        "date": DATE,
                        "chat": {"id": 1_000_000 + k, "type": "private"},
                        "from": {"id": 1_000_000 + k, "is_bot": False, "first_name": "Bench"},
                        "text": text,
                    },
                }
                status, body = await call(
                    "POST", "/telegram/webhook", webhook, msgspec.json.encode(update)
                )
            else:
                message = {"text": text, "message_id": f"b{i}"}
                path = f"/v1/conversations/{conversations[k]}/messages"
                status, body = await call("POST", path, api, msgspec.json.encode(message))
            assert status == 200, body

    async with anyio.create_task_group() as group:
        for c in range(args.callers):
            group.start_soon(caller, c)


if __name__ == "__main__":
    main()
