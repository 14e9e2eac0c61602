"""Which event loop and HTTP parser to serve on: the no-op app or the real one, under each
of uvicorn's loops (asyncio, uvloop) and parsers (h11, httptools) at once, driven in turn by
the same load (round after round, so that the machine's other load hits each alike). For
each: updates per second and latency, and the ratio to asyncio with h11.

Run as ``python -m voxledger.scripts.benchmarks.stack [--app noop|serve] [--runs 5]
[--seconds 8] [--workers 1]`` with the database as for `voxledger bench` (a schema of its
own, dropped afterwards); prints a table.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack

import msgspec

from ...adapters.bootstrap import resolve_database_url
from ..output import print_table
from .served import HTTP_FULL, HttpBench, Served, default_generator

STACKS = (("asyncio", "h11"), ("asyncio", "httptools"), ("uvloop", "h11"), ("uvloop", "httptools"))


def main() -> None:
    """Serve under each stack, drive each in turn, print the medians side by side."""
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    parser.add_argument("--app", choices=["noop", "serve"], default="noop")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    setting = msgspec.structs.replace(
        HTTP_FULL, runs=args.runs, seconds=args.seconds, generator=default_generator()
    )
    samples: dict[tuple[str, str], list[dict[str, float]]] = {stack: [] for stack in STACKS}
    with HttpBench(resolve_database_url(None), setting) as bench, ExitStack() as servers:
        start = bench.noop if args.app == "noop" else bench.serve
        running: dict[tuple[str, str], Served] = {
            (loop, http): servers.enter_context(start(args.workers, loop, http))
            for loop, http in STACKS
        }
        for stack, server in running.items():  # warm-up; each stack's chats are its own
            bench.drive(server, bench.target(server, "webhook", _chats(stack), ()), seconds=3)
        for k in range(args.runs):
            order = list(running.items())
            for stack, server in order[k % len(order) :] + order[: k % len(order)]:
                target = bench.target(server, "webhook", _chats(stack), ())
                samples[stack].append(bench.drive(server, target))
    base = statistics.median(run["updates_per_s"] for run in samples[STACKS[0]])
    rows = []
    for (loop, http), runs in samples.items():
        rate = [run["updates_per_s"] for run in runs]
        p50 = statistics.median(run["p50_ms"] for run in runs)
        p99 = statistics.median(run["p99_ms"] for run in runs)
        rows.append(
            (
                f"{loop} + {http}",
                f"{statistics.median(rate):,.0f} [{min(rate):,.0f}-{max(rate):,.0f}]",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{statistics.median(rate) / base:.2f}x",
            )
        )
    print_table(
        f"{'the no-op webhook' if args.app == 'noop' else 'voxledger serve'}, "
        f"{args.workers} worker(s), {setting.connections} connections, median [min-max] of "
        f"{args.runs} runs of {args.seconds:g} s",
        ["loop + parser", "updates/s", "p50 ms", "p99 ms", "vs asyncio + h11"],
        rows,
    )


def _chats(stack: tuple[str, str]) -> int:
    return 1_000_000 * (1 + STACKS.index(stack))


if __name__ == "__main__":
    main()
