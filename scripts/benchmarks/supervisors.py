"""Which way to run several workers on one port: the no-op app under voxledger's supervisor
(each worker binds the port with SO_REUSEPORT) and under uvicorn's own (``uvicorn --workers
N``: one listening socket shared by the workers), driven by the same load. For each: updates
per second, and how the connections and the CPU time spread over the workers.

Run as ``python -m voxledger.scripts.benchmarks.supervisors [--workers 2] [--runs 5]
[--seconds 8] [--connections 64]`` (wrk where installed, else the Python client); prints a
table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

from ...adapters.bootstrap import environment_for
from ...adapters.http.settings import ENV_API_TOKEN, ENV_TELEGRAM_SECRET
from ..output import print_table
from . import noop
from .load import Target, drive, wrk_installed
from .served import cpu_seconds, free_port


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (uvicorn's workers, or ours)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return sorted(found)


def connections_to(port: int, pid: int) -> int:
    """The established TCP connections to ``port`` that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            established = fields[3] == "01"
            held += local_port == port and established and fields[9] in inodes
    return held


def accepts(port: int) -> bool:
    """Whether something accepts connections on the port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _sample(port: int, workers: list[int], into: list[list[int]]) -> None:
    into.append([connections_to(port, pid) for pid in workers])


def measure(
    command: list[str], port: int, env: dict[str, str], args: argparse.Namespace
) -> dict[str, str]:
    """Serve with ``command``, drive it ``args.runs`` times; the figures."""
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (len(children(server.pid)) == args.workers and accepts(port)):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{command[2]} did not start serving")
            time.sleep(0.2)
        time.sleep(5)  # uvicorn says nothing when all its workers serve: give them time
        workers = children(server.pid)
        generator = "wrk" if wrk_installed() else "python"
        target = Target(
            host="127.0.0.1", port=port, route="webhook", secret=env[ENV_TELEGRAM_SECRET], token=""
        )
        drive(target, args.connections, 2, generator=generator)  # warm-up
        rates, spreads, shares = [], [], []
        for _ in range(args.runs):
            before = [cpu_seconds(pid) for pid in workers]
            seen: list[list[int]] = []
            sampler = threading.Timer(args.seconds / 2, _sample, (port, workers, seen))
            sampler.start()
            load = drive(target, args.connections, args.seconds, generator=generator)
            sampler.join()
            used = [cpu_seconds(pid) - b for pid, b in zip(workers, before, strict=True)]
            rates.append(load.per_second)
            spreads.append(seen[0] if seen else [])
            shares.append([u / sum(used) for u in used] if sum(used) else [])
        return {
            "updates/s": f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]",
            "connections per worker, each run": " ".join("/".join(map(str, s)) for s in spreads),
            "CPU share per worker, each run": " ".join(
                "/".join(f"{x:.2f}" for x in share) for share in shares
            ),
        }
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    """Measure both ways and print them side by side."""
    parser = argparse.ArgumentParser(prog="supervisors", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    secret = secrets.token_urlsafe(16)
    env = {**environment_for(None), ENV_TELEGRAM_SECRET: secret, ENV_API_TOKEN: "unused"}
    ours_port, uvicorn_port = free_port(), free_port()
    ours = [
        sys.executable, "-m", "voxledger.scripts.benchmarks.noop",
        "--port", str(ours_port), "--workers", str(args.workers),
    ]  # fmt: skip
    theirs = [
        sys.executable, "-m", "uvicorn", "--factory", f"{noop.__name__}:from_environment",
        "--port", str(uvicorn_port), "--workers", str(args.workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    rows = []
    for name, command, port in (
        ("voxledger: SO_REUSEPORT per worker", ours, ours_port),
        ("uvicorn --workers: one shared socket", theirs, uvicorn_port),
    ):
        figures = measure(command, port, env, args)
        rows.append((name, *figures.values()))
    print_table(
        f"the no-op webhook, {args.workers} workers, {args.connections} connections, "
        f"median [min-max] of {args.runs} runs of {args.seconds:g} s",
        ["supervisor", "updates/s", "connections per worker", "CPU share per worker"],
        rows,
    )


if __name__ == "__main__":
    main()
