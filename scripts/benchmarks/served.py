"""`voxledger bench --http`: the served chat path next to the no-op webhook, over real HTTP.

The real `voxledger serve` (on a schema of its own, dropped afterwards, and on the wall
clock) and the no-op app of `noop.py` are served the same way (the same uvicorn, settings
and worker count) on this machine at the same time, and driven in turn by the same load
generator in processes of their own (`load.py`): runs alternate between the two, so that a
change in the machine's other load hits both. Each figure is the median of several runs with
their spread; the ratio is ours over the no-op. Whether the generator holds the figures
down shows twice: its CPU time next to the servers', and the no-op driven by one more
generator process (the same connections split over two), which must not be faster.

Memory: the resident size of each worker once 10,000 chats are active (each has started a
form: a conversation and a flow run) and at half way, next to its size at start.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx
import msgspec
import psycopg
from psycopg import sql

from ...adapters.bootstrap import ENV_TEST_CLOCK, environment_for
from ...adapters.http.settings import ENV_API_TOKEN, ENV_TELEGRAM_SECRET
from .client import exchange
from .harness import Figure, Result
from .load import Load, Route, Target, drive, wrk_installed

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
NOOP = [sys.executable, "-m", "voxledger.scripts.benchmarks.noop"]
ROUTES: tuple[Route, ...] = ("webhook", "api")
ROUTE_NAMES: dict[Route, str] = {
    "webhook": "POST /telegram/webhook",
    "api": "POST /v1/conversations/{id}/messages",
}
TARGET_RATIO = 0.4
TARGET_P99_MS = 50.0
MEMORY_LIMIT_MB = 500.0
PROFILE_S = 8.0  # the least a profiled run lasts


class HttpSetting(msgspec.Struct, frozen=True, kw_only=True):
    """How the HTTP benchmark runs: runs per figure and their length, connections, the
    worker counts, the generator, uvicorn's loop and parser, how many chats the memory
    measurement makes active."""

    runs: int
    seconds: float
    warmup_s: float
    connections: int = 64
    workers: tuple[int, ...] = (1, 2)
    generator: Literal["wrk", "python"] = "wrk"
    loop: str = "auto"
    http: str = "auto"
    memory_conversations: int = 10_000
    profile: str | None = None  # a folder for py-spy's profiles of the served app


HTTP_FULL = HttpSetting(runs=5, seconds=8.0, warmup_s=3.0)
HTTP_QUICK = HttpSetting(runs=2, seconds=1.0, warmup_s=1.0, workers=(1,), memory_conversations=200)


def default_generator() -> Literal["wrk", "python"]:
    """wrk where installed, else the benchmark's own multi-process client."""
    return "wrk" if wrk_installed() else "python"


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A server process started for the benchmark, on a free port, logging to a file."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log: Path, workers: int = 0
    ) -> None:
        self.name = name
        self.ready_lines = workers  # `voxledger serve`'s workers, each saying when it is ready
        self.port = free_port()
        self.command = [*command, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = env
        self.log = log
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Served:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # its own group: a Ctrl-C here reaches it through us
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_until_serving(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        # Every worker serves once the server says so (its only line on stdout).
        for line in self.process.stdout:
            if "serving on" in line:
                self._wait_until_ready()
                return
        self.process.wait()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} exited (code {self.process.returncode}): {tail}")

    def _wait_until_ready(self) -> None:
        """One process says it serves before its services exist (it reports not ready
        until the database answers): wait for a 2xx from /readyz, where there is one."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
            except httpx.TransportError:
                answer = None
            answered = answer is not None and (
                answer.status_code < 300 or answer.status_code == 404
            )
            if answered and self._workers_ready():
                return  # ready (or a server without readiness: the no-op)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready within 60 s")

    def _workers_ready(self) -> bool:
        """Whether each of several workers has said that it is ready (one /readyz answered
        by one of them)."""
        if self.ready_lines < 2:
            return True
        text = self.log.read_text(errors="replace")
        return text.count('"event":"serve.worker_ready"') >= self.ready_lines

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def pids(self) -> list[int]:
        """The server's processes: the one started, and its workers."""
        assert self.process is not None
        return [self.process.pid, *self.workers()]

    def workers(self) -> list[int]:
        """The worker processes of a server with several (none for one process)."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"multiprocessing.spawn" in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    def cpu_seconds(self) -> float:
        """The CPU time its processes have used so far."""
        return sum(cpu_seconds(pid) for pid in self.pids())


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far, from /proc (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class HttpBench:
    """A schema of its own for the served app (dropped at the end), credentials, and the
    environment both servers run in: the wall clock, whatever a test set."""

    def __init__(self, database_url: str, setting: HttpSetting) -> None:
        self.url = database_url
        self.setting = setting
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.secret = secrets.token_urlsafe(16)
        self.token = secrets.token_urlsafe(16)
        self.folder = Path(tempfile.mkdtemp(prefix="voxledger-bench-http-"))
        env = environment_for(database_url, self.schema)
        env.pop(ENV_TEST_CLOCK, None)
        self.env = {**env, ENV_TELEGRAM_SECRET: self.secret, ENV_API_TOKEN: self.token}
        self._ids = 0

    def __enter__(self) -> HttpBench:
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )
        for log in self.folder.iterdir():
            log.unlink()
        self.folder.rmdir()

    def serve(self, workers: int, loop: str | None = None, http: str | None = None) -> Served:
        """`voxledger serve` with this many workers (and the setting's loop and parser,
        unless given)."""
        options = self._options(workers, loop, http)
        log = self.folder / f"serve-{'-'.join(options)}.log"
        command = [*VOXLEDGER, "serve", *options]
        return Served("voxledger serve", command, self.env, log, workers)

    def noop(self, workers: int, loop: str | None = None, http: str | None = None) -> Served:
        """The no-op app, served the same way."""
        options = self._options(workers, loop, http)
        log = self.folder / f"noop-{'-'.join(options)}.log"
        return Served("the no-op app", [*NOOP, *options], self.env, log)

    def _options(self, workers: int, loop: str | None, http: str | None) -> list[str]:
        loop, http = loop or self.setting.loop, http or self.setting.http
        return ["--workers", str(workers), "--loop", loop, "--http", http]

    def target(
        self, server: Served, route: Route, first_chat: int, conversations: tuple[str, ...]
    ) -> Target:
        """The load for one run: ids no run sent before."""
        self._ids += 1
        return Target(
            host="127.0.0.1",
            port=server.port,
            route=route,
            secret=self.secret,
            token=self.token,
            first_chat=first_chat,
            conversations=conversations,
            first_id=self._ids * 1_000_000_000,
        )

    def drive(
        self, server: Served, target: Target, *, seconds: float | None = None, processes: int = 1
    ) -> dict[str, float]:
        """One run: the load's figures, with the CPU the server and the generator used."""
        s = self.setting
        before, busy_before = server.cpu_seconds(), machine_busy_seconds()
        load = drive(
            target, s.connections, seconds or s.seconds, generator=s.generator, processes=processes
        )
        used = server.cpu_seconds() - before
        return figures(load, used, machine_busy_seconds() - busy_before)


def figures(load: Load, server_cpu_s: float, machine_busy_s: float) -> dict[str, float]:
    """A run's figures, by name."""
    return {
        "updates_per_s": load.per_second,
        "p50_ms": load.p50_ms,
        "p90_ms": load.p90_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
        "errors": float(load.errors),
        "server_cpu_cores": server_cpu_s / load.seconds,
        "generator_cpu_cores": load.generator_cpu_s / load.seconds,
        # Everything the machine ran meanwhile (the database too, when it is local): a
        # figure near the machine's cores says the server waited for a core, not for work.
        "machine_busy_cores": machine_busy_s / load.seconds,
    }


def machine_busy_seconds() -> float:
    """The CPU time the whole machine has spent busy so far (not idle, not waiting for a
    disk), from /proc/stat; 0 where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle, iowait = fields[3], fields[4] if len(fields) > 4 else 0
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


# -- throughput and latency ----------------------------------------------------------------------


def served(bench: HttpBench, routes: tuple[Route, ...]) -> list[Result]:
    """Each route at each worker count: ours next to the no-op, runs alternating."""
    results = []
    for k, workers in enumerate(bench.setting.workers):
        with bench.serve(workers) as ours, bench.noop(workers) as noop:
            first_chat = 1_000_000 * (k + 1)  # chats of their own for each worker count
            conversations = start_conversations(ours, bench.token, 128)
            for route in routes:
                results.append(_route(bench, ours, noop, route, workers, first_chat, conversations))
    return results


def _route(
    bench: HttpBench,
    ours: Served,
    noop: Served,
    route: Route,
    workers: int,
    first_chat: int,
    conversations: tuple[str, ...],
) -> Result:
    s = bench.setting

    # wrk drives from one process (two threads); the Python client needs two processes.
    processes = 1 if s.generator == "wrk" else 2

    def run(server: Served, seconds: float | None = None, more: int = 0) -> dict[str, float]:
        target = bench.target(server, route, first_chat, conversations)
        return bench.drive(server, target, seconds=seconds, processes=processes + more)

    run(ours, seconds=s.warmup_s)  # first loads, caches, pools filled
    run(noop, seconds=s.warmup_s)
    samples: dict[str, dict[str, list[float]]] = {"ours": {}, "noop": {}, "noop2": {}}
    for i in range(s.runs):
        order = [("ours", ours), ("noop", noop)]
        for name, server in order if i % 2 == 0 else reversed(order):
            _add(samples[name], run(server))
        _add(samples["noop2"], run(noop, more=1))
    if s.profile:
        # At least 8 s of samples (800 at py-spy's 100 Hz), whatever the runs' length.
        sampled = max(s.seconds, PROFILE_S)
        for mode in ("gil", "wall"):
            into = Path(s.profile) / f"{route}-{workers}w-{mode}.txt"
            profile(ours, into, mode, lambda: run(ours, seconds=sampled))
    mine = {key: Figure.of(values) for key, values in samples["ours"].items()}
    reference = {key: Figure.of(values) for key, values in samples["noop"].items()}
    two = Figure.of(samples["noop2"]["updates_per_s"])
    ratio = mine["updates_per_s"].median / reference["updates_per_s"].median
    met = (
        ratio >= TARGET_RATIO and mine["p99_ms"].median < TARGET_P99_MS and mine["errors"].max == 0
    )
    generator = "wrk (2 threads)" if s.generator == "wrk" else "the python client (2 processes)"
    return Result(
        f"served {ROUTE_NAMES[route]}, {workers} worker{'s' if workers > 1 else ''}, "
        f"{s.connections} connections",
        "updates/s",
        mine,
        {
            **{f"no-op: {key}": figure for key, figure in reference.items()},
            "no-op, one more generator process: updates_per_s": two,
        },
        {"ours / no-op (updates/s)": ratio},
        f">= {TARGET_RATIO}x the no-op's updates/s, p99 < {TARGET_P99_MS:.0f} ms, no errors",
        met,
        notes=f"load: {generator}, {s.runs} runs of {s.seconds:g} s each; the generator used "
        f"{mine['generator_cpu_cores'].max:.2f} cores at most on ours and "
        f"{reference['generator_cpu_cores'].max:.2f} on the no-op, which one more generator "
        f"process moved from {reference['updates_per_s'].median:,.0f} to "
        f"{two.median:,.0f} updates/s; the machine's {os.cpu_count()} cores were busy "
        f"{mine['machine_busy_cores'].median:.2f} on ours (the database's work included, "
        f"when it is local) and {reference['machine_busy_cores'].median:.2f} on the no-op",
    )


def py_spy() -> str | None:
    """The py-spy command, if installed (beside this Python or on the PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(server: Served, into: Path, mode: str, load: Callable[[], object]) -> None:
    """Record the server's processes with py-spy while ``load`` runs (a run of its own:
    sampling slows the server). ``mode`` "gil": only the thread holding the GIL, what the
    CPU does for Python; "wall": every thread, idle or not, where the time goes. Written
    as collapsed stacks (one line per stack, with its samples; speedscope and inferno
    draw them)."""
    command = py_spy()
    if command is None:
        raise RuntimeError("profiling needs py-spy (pip install py-spy)")
    into.parent.mkdir(parents=True, exist_ok=True)
    assert server.process is not None
    spy = subprocess.Popen(
        [
            command, "record", "--pid", str(server.process.pid), "--subprocesses",
            "--threads", "--nonblocking", "--rate", "100", "--format", "raw",
            "--output", str(into), "--gil" if mode == "gil" else "--idle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1)  # py-spy attaches
        load()
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded, and exits
        spy.wait(60)


def _add(samples: dict[str, list[float]], run: dict[str, float]) -> None:
    for key, value in run.items():
        samples.setdefault(key, []).append(value)


def start_conversations(server: Served, token: str, count: int) -> tuple[str, ...]:
    """Conversations for the API route to talk to, started through the API."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=auth, timeout=30) as c:
        started = [
            c.post("/v1/conversations", json={"participant": f"bench {k}"}) for k in range(count)
        ]
    for response in started:
        response.raise_for_status()
    return tuple(r.json()["conversation_id"] for r in started)


# -- memory --------------------------------------------------------------------------------------


def memory(bench: HttpBench) -> Result:
    """Resident size per worker once many chats are active, spread over the workers."""
    n = bench.setting.memory_conversations
    workers = max(bench.setting.workers)
    with bench.serve(workers) as ours:
        pids = ours.workers() or [ours.pids()[0]]
        at_start = [rss_mb(pid) for pid in pids]
        half: list[float] = []
        errors = 0
        for chats in (range(n // 2), range(n // 2, n)):
            errors += activate(ours, bench.secret, chats)
            half = half or [rss_mb(pid) for pid in pids]
        at_end = [rss_mb(pid) for pid in pids]
    return Result(
        f"memory per worker with {n:,} active conversations, {workers} "
        f"worker{'s' if workers > 1 else ''}",
        "MB resident",
        {f"worker {k}: rss_mb": _once(mb) for k, mb in enumerate(at_end)},
        {
            **{f"worker {k} at start: rss_mb": _once(mb) for k, mb in enumerate(at_start)},
            **{f"worker {k} at {n // 2:,}: rss_mb": _once(mb) for k, mb in enumerate(half)},
        },
        {},
        f"< {MEMORY_LIMIT_MB:.0f} MB per worker",
        max(at_end) < MEMORY_LIMIT_MB and errors == 0,
        notes=f"each chat sent /start and design over 32 connections (a conversation and a "
        f"form in progress each); {errors} errors",
    )


def _once(value: float) -> Figure:
    return Figure(value, value, value, 1)


def activate(server: Served, secret: str, chats: range) -> int:
    """Each chat starts a form: two updates, the menu and a mode; the errors."""
    from .load import DATE

    def update(chat: int, n: int, text: str) -> bytes:
        body = (
            f'{{"update_id":{n},"message":{{"message_id":{n},"date":{DATE},'
            f'"chat":{{"id":{chat},"type":"private"}},'
            f'"from":{{"id":{chat},"is_bot":false,"first_name":"Bench"}},"text":"{text}"}}}}'
        ).encode()
        return (
            f"POST /telegram/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    todo = iter(
        [
            update(9_000_000 + c, 2 * c + k + 1, t)
            for c in chats
            for k, t in enumerate(("/start", "design"))
        ]
    )
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for request in todo:
                if not 200 <= await exchange(reader, writer, request) < 300:
                    errors += 1
        finally:
            writer.close()

    async def main() -> None:
        await asyncio.gather(*(connection() for _ in range(32)))

    asyncio.run(main())
    return errors


# -- the suite -----------------------------------------------------------------------------------

HTTP_BENCHMARKS = ("webhook", "api", "memory")


def run_http(database_url: str, setting: HttpSetting, only: set[str] | None = None) -> list[Result]:
    """The HTTP benchmarks (or those named in ``only``) against one database."""
    results: list[Result] = []
    with HttpBench(database_url, setting) as bench:
        routes = tuple(r for r in ROUTES if not only or r in only)
        if routes:
            results += served(bench, routes)
        if not only or "memory" in only:
            results.append(memory(bench))
    return results
