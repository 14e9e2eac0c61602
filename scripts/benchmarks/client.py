"""The HTTP benchmark's own load generator, for where `wrk` is not installed: one process of
several, each with its share of the keep-alive connections and of the chats, sending the
same requests as the wrk script (`load.py`) for a fixed time from a common start.

Run by `load.drive` as ``python -m voxledger.scripts.benchmarks.client JOB`` (JOB: JSON with
the target, connections, seconds, start time, this process's number and the count); prints
msgpack ``{requests, non_2xx, socket_errors, latencies_ms}`` on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import msgspec

from .load import DATE, ROUND, Target


class Requests:
    """The requests of one generator process: its own chats, ids never sent before."""

    def __init__(self, target: Target, process: int, processes: int) -> None:
        self.target = target
        chats = target.chats if target.route == "webhook" else len(target.conversations)
        self.own = max(1, chats // processes)
        self.first = process * self.own
        self.first_id = target.first_id + process * 100_000_000
        self.sent = 0
        host = f"Host: {target.host}:{target.port}\r\n"
        if target.route == "webhook":
            auth = f"X-Telegram-Bot-Api-Secret-Token: {target.secret}\r\n"
        else:
            auth = f"Authorization: Bearer {target.token}\r\n"
        self.headers = host + auth + "Content-Type: application/json\r\n"

    def next(self) -> bytes:
        """The next request, as bytes on the wire."""
        n = self.sent
        self.sent += 1
        k = self.first + n % self.own
        text = json.dumps(ROUND[(n // self.own) % len(ROUND)])
        message_id = self.first_id + n
        if self.target.route == "webhook":
            chat = self.target.first_chat + k
            path = "/telegram/webhook"
            body = (
                f'{{"update_id":{message_id},"message":{{"message_id":{message_id},'
                f'"date":{DATE},"chat":{{"id":{chat},"type":"private"}},'
                f'"from":{{"id":{chat},"is_bot":false,"first_name":"Bench"}},"text":{text}}}}}'
            )
        else:
            path = f"/v1/conversations/{self.target.conversations[k]}/messages"
            body = f'{{"text":{text},"message_id":"b{message_id}"}}'
        raw = body.encode()
        head = f"POST {path} HTTP/1.1\r\n{self.headers}Content-Length: {len(raw)}\r\n\r\n"
        return head.encode() + raw


class Tally:
    """What this process counted."""

    def __init__(self) -> None:
        self.requests = 0
        self.non_2xx = 0
        self.socket_errors = 0
        self.latencies_ms: list[float] = []


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request and read its whole response; its status code."""
    writer.write(request)
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def connection(
    target: Target, requests: Requests, tally: Tally, start_at: float, end_at: float
) -> None:
    """One keep-alive connection, sending until the end; reconnects after a socket error."""
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        streams = await asyncio.open_connection(target.host, target.port)
    except OSError:
        tally.socket_errors += 1
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    while time.monotonic() < end_at:
        if streams is None:
            try:
                streams = await asyncio.open_connection(target.host, target.port)
            except OSError:
                tally.socket_errors += 1
                await asyncio.sleep(0.01)
                continue
        request = requests.next()
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(exchange(*streams, request), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            tally.socket_errors += 1
            streams[1].close()
            streams = None
            continue
        if time.monotonic() > end_at:
            break  # answered after the end: not counted, as the time it took is not
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.requests += 1
        if not 200 <= status < 300:
            tally.non_2xx += 1
    if streams is not None:
        streams[1].close()


async def run(job: dict[str, Any]) -> Tally:
    """Every connection of this process, from the common start to its end."""
    target = msgspec.convert(job["target"], Target)
    requests = Requests(target, job["process"], job["processes"])
    tally = Tally()
    start_at = job["start_at"]
    end_at = start_at + job["seconds"]
    await asyncio.gather(
        *(connection(target, requests, tally, start_at, end_at) for _ in range(job["connections"]))
    )
    return tally


def main() -> None:
    """Run the job given as the first argument; print the tally."""
    job = json.loads(sys.argv[1])
    try:
        import uvloop  # the client's own overhead matters: its fastest loop where installed
    except ImportError:
        tally = asyncio.run(run(job))
    else:
        tally = uvloop.run(run(job))
    sys.stdout.buffer.write(
        msgspec.msgpack.encode(
            {
                "requests": tally.requests,
                "non_2xx": tally.non_2xx,
                "socket_errors": tally.socket_errors,
                "latencies_ms": tally.latencies_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
