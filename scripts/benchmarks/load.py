"""The load of the HTTP benchmark: what is sent, and the processes that send it.

Every request is a chat message to one of a fixed set of chats (the webhook: Telegram
updates with the secret header) or conversations (the JSON API: bearer token), with update
and message ids never sent before. Each chat goes through the same round of ten messages, a
user filling in the intake form: the menu, a mode, the form's eight answers (the last one
confirms). Chats are split between the generator's threads (or processes), so that one
chat's messages come one after another, as one person's do.

`wrk` sends it where installed (a Lua script made here); elsewhere the multi-process client
in `client.py` does. Either runs in processes of their own, for a fixed time on keep-alive
connections, and reports requests, errors (non-2xx answers, socket errors) and latency
percentiles; the CPU time the generator used is read from its resource usage, so that a
saturated generator shows.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

Route = Literal["webhook", "api"]

# One person filling in the intake form (design mode), then starting again.
ROUND = (
    "/start",
    "design",
    "1042",
    "21.11.2026",
    "Anna Example",
    "Main office",
    "office",
    "Floor 3",
    "Berlin",
    "yes",
)
DATE = 1_790_000_000  # an update's send time (the server times messages by its own clock)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What to drive: the server, the route and its credentials, the chats (the webhook's
    chat ids start at ``first_chat``) or conversations (the API's), and the first update
    and message id of this run (every run's ids are new)."""

    host: str
    port: int
    route: Route
    secret: str
    token: str
    chats: int = 128
    first_chat: int = 1_000_000
    conversations: tuple[str, ...] = ()
    first_id: int = 1


class Load(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of a generator measured."""

    generator: str
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_s: float  # CPU time the generator's processes used

    @property
    def per_second(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        """Non-2xx answers and socket errors."""
        return self.non_2xx + self.socket_errors


def wrk_installed() -> bool:
    """Whether `wrk` is on the PATH."""
    return shutil.which("wrk") is not None


def drive(
    target: Target,
    connections: int,
    seconds: float,
    *,
    generator: Literal["wrk", "python"],
    processes: int = 1,
    threads: int = 2,
) -> Load:
    """Send the load for ``seconds`` over ``connections`` keep-alive connections, from
    ``processes`` generator processes (each with ``threads`` threads under wrk)."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if generator == "wrk":
        loads = _wrk(target, connections, seconds, processes, threads)
    else:
        loads = _python(target, connections, seconds, processes)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    return msgspec.structs.replace(loads, generator_cpu_s=cpu)


# -- wrk -----------------------------------------------------------------------------------------

WRK_SCRIPT = """
-- Made by voxledger bench: {route} route, {chats} chats over {threads_total} threads.
local route, chats, threads_total = "{route}", {chats}, {threads_total}
local first_chat, first_id, thread_base = {first_chat}, {first_id}, {thread_base}
local secret, token = "{secret}", "{token}"
local texts = {{ {texts} }}
local conversations = {{ {conversations} }}
local created = 0

function setup(thread)
  thread:set("tid", thread_base + created)
  created = created + 1
end

function init(args)
  n = 0
  own = math.floor(chats / threads_total)
  first = tid * own
  if route == "webhook" then
    path = "/telegram/webhook"
    wrk.headers["X-Telegram-Bot-Api-Secret-Token"] = secret
  else
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local k = first + n % own
  local text = texts[math.floor(n / own) % #texts + 1]
  local id = first_id + tid * 100000000 + n
  n = n + 1
  if route == "webhook" then
    local chat = first_chat + k
    local body = string.format(
      '{{"update_id":%d,"message":{{"message_id":%d,"date":{date},' ..
      '"chat":{{"id":%d,"type":"private"}},' ..
      '"from":{{"id":%d,"is_bot":false,"first_name":"Bench"}},"text":%s}}}}',
      id, id, chat, chat, text)
    return wrk.format("POST", path, nil, body)
  end
  local body = string.format('{{"text":%s,"message_id":"b%d"}}', text, id)
  return wrk.format("POST", "/v1/conversations/" .. conversations[k + 1] .. "/messages", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def share(connections: int, processes: int, p: int) -> int:
    """Process ``p``'s share of the connections (the first ones take the remainder)."""
    return connections // processes + (p < connections % processes)


def _lua_string(text: str) -> str:
    """A Lua string literal holding ``text`` (here: a JSON string literal)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(target: Target, threads_total: int, thread_base: int) -> str:
    """The Lua script that makes wrk send ``target``'s requests (from its threads numbered
    ``thread_base`` on, of ``threads_total`` in all)."""
    return WRK_SCRIPT.format(
        route=target.route,
        chats=target.chats if target.route == "webhook" else len(target.conversations),
        threads_total=threads_total,
        first_chat=target.first_chat,
        first_id=target.first_id,
        thread_base=thread_base,
        secret=target.secret,
        token=target.token,
        texts=", ".join(_lua_string(json.dumps(t)) for t in ROUND),
        conversations=", ".join(_lua_string(c) for c in target.conversations),
        date=DATE,
    )


def _wrk(target: Target, connections: int, seconds: float, processes: int, threads: int) -> Load:
    url = f"http://{target.host}:{target.port}"
    # wrk wants at least one connection per thread.
    threads = max(1, min(threads, connections // processes))
    with tempfile.TemporaryDirectory(prefix="voxledger-wrk-") as folder:
        running = []
        for p in range(processes):
            script = Path(folder) / f"load{p}.lua"
            script.write_text(wrk_script(target, threads * processes, threads * p))
            command = [
                "wrk",
                f"-t{threads}",
                f"-c{share(connections, processes, p)}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
            ]
            running.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        outputs = [process.communicate()[0] for process in running]
    reports = []
    for process, output in zip(running, outputs, strict=True):
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed (exit {process.returncode}): {output[-500:]}")
        reports.append(json.loads(lines[-1]))
    total = sum(r["requests"] for r in reports)
    longest = max(r["duration_us"] for r in reports) / 1e6

    # Percentiles of several processes: each process's, weighted by its requests (exact
    # for one process; close for several, which only the generator check uses).
    def percentile(key: str) -> float:
        return sum(r[key] * r["requests"] for r in reports) / max(total, 1) / 1000

    return Load(
        generator=f"wrk ({processes} processes, {threads} threads each)",
        requests=total,
        seconds=longest,
        non_2xx=sum(r["status"] for r in reports),
        socket_errors=sum(r["connect"] + r["read"] + r["write"] + r["timeout"] for r in reports),
        p50_ms=percentile("p50"),
        p90_ms=percentile("p90"),
        p99_ms=percentile("p99"),
        max_ms=max(r["max"] for r in reports) / 1000,
        generator_cpu_s=0.0,
    )


# -- the Python client ---------------------------------------------------------------------------


def _python(target: Target, connections: int, seconds: float, processes: int) -> Load:
    # The processes connect first, then start together at the same moment: on the
    # monotonic clock, which on Linux every process reads alike (no calendar involved).
    start_at = time.monotonic() + 1.0 + 0.1 * processes
    running = []
    for p in range(processes):
        job = {
            "target": msgspec.to_builtins(target),
            "connections": share(connections, processes, p),
            "seconds": seconds,
            "start_at": start_at,
            "process": p,
            "processes": processes,
        }
        running.append(
            subprocess.Popen(
                [sys.executable, "-m", "voxledger.scripts.benchmarks.client", json.dumps(job)],
                stdout=subprocess.PIPE,
            )
        )
    outputs = [process.communicate()[0] for process in running]
    latencies: list[float] = []
    requests = non_2xx = socket_errors = 0
    for process, output in zip(running, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"the load client failed (exit {process.returncode})")
        report = msgspec.msgpack.decode(output)
        requests += report["requests"]
        non_2xx += report["non_2xx"]
        socket_errors += report["socket_errors"]
        latencies.extend(report["latencies_ms"])
    latencies.sort()
    return Load(
        generator=f"python client ({processes} processes)",
        requests=requests,
        seconds=seconds,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        p50_ms=_percentile(latencies, 50),
        p90_ms=_percentile(latencies, 90),
        p99_ms=_percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        generator_cpu_s=0.0,
    )


def _percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
