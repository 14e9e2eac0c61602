"""`voxledger bench`: throughput and latency, ours next to the references, in one run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .arguments import Choices, UsageError, positive_int
from .output import print_json, print_table, say, to_plain

if TYPE_CHECKING:
    from .benchmarks.harness import Figure, Result


def register(commands: argparse._SubParsersAction) -> None:
    """Add the bench command."""
    bench = commands.add_parser(
        "bench",
        help="measure throughput against raw psycopg and the library's defaults",
        description="Run the benchmarks against one database (a schema of their own, dropped "
        "afterwards) and print medians, spread and ratios. Example: voxledger bench --quick",
    )
    bench.add_argument("--quick", action="store_true", help="small runs (about a minute)")
    bench.add_argument(
        "--only",
        action="append",
        choices=Choices(_benchmark_names),
        metavar="NAME",
        help="run just these: %(choices)s",
    )
    bench.add_argument("--json", action="store_true", help="one JSON object per benchmark")
    served = bench.add_argument_group(
        "served over HTTP (--http)",
        "The real `voxledger serve` next to a no-op Litestar webhook served the same way, "
        "driven by wrk (else a multi-process Python client). Example: voxledger bench --http",
    )
    served.add_argument(
        "--http",
        action="store_true",
        help="run these instead: updates/s and latency of the Telegram webhook and the "
        "message API (--only webhook, api), and memory per worker (--only memory)",
    )
    served.add_argument(
        "--workers",
        action="append",
        type=positive_int,
        metavar="N",
        help="serve with N workers; repeatable (default: 1 and 2; 1 with --quick)",
    )
    served.add_argument(
        "--connections", type=positive_int, default=64, help="connections (default 64)"
    )
    served.add_argument(
        "--generator",
        choices=["wrk", "python"],
        default=None,
        help="load generator (default: wrk where installed)",
    )
    served.add_argument(
        "--profile",
        metavar="DIR",
        help="also record the served app with py-spy (one more run per route): where the "
        "GIL goes and where the time goes, as collapsed stacks in DIR",
    )
    served.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    served.add_argument(
        "--parser", choices=["auto", "httptools", "h11"], default="auto", help="HTTP parser"
    )
    bench.set_defaults(run=run)


def _benchmark_names() -> list[str]:
    from .benchmarks.served import HTTP_BENCHMARKS
    from .benchmarks.suite import BENCHMARKS

    return [*BENCHMARKS, *HTTP_BENCHMARKS]


def run(args: argparse.Namespace) -> int:
    """Run and print."""
    from ..adapters.bootstrap import resolve_database_url

    url = resolve_database_url(args.database_url)
    only = set(args.only) if args.only else None
    if args.http:
        results = _served(args, url, only)
    else:
        from .benchmarks.harness import FULL, QUICK
        from .benchmarks.suite import BENCHMARKS, run_all

        if only and not only <= set(BENCHMARKS):
            raise UsageError(f"{', '.join(sorted(only - set(BENCHMARKS)))}: only with --http")
        results = run_all(url, QUICK if args.quick else FULL, only)
    if args.json:
        print_json([to_plain(r) for r in results])
        return 0
    say("voxledger bench: median [min-max] of several runs, ours next to the references")
    for r in results:
        say()
        say(f"{r.name} ({r.unit})   target: {r.target}   {'met' if r.met else 'NOT MET'}")
        print_table(
            None,
            ["", "figure", "value"],
            [("ours", k, _show(v)) for k, v in r.ours.items()]
            + [("reference", k, _show(v)) for k, v in r.references.items()]
            + [("ratio", k, f"{v:.2f}x") for k, v in r.ratios.items()],
        )
    for r in results:
        if r.notes:
            say(f"  {r.name}: {r.notes}")
    return 0


def _served(args: argparse.Namespace, url: str, only: set[str] | None) -> list[Result]:
    import msgspec

    from .benchmarks.served import (
        HTTP_BENCHMARKS,
        HTTP_FULL,
        HTTP_QUICK,
        default_generator,
        py_spy,
        run_http,
    )

    if args.profile and py_spy() is None:
        raise UsageError("--profile needs py-spy (pip install py-spy)")
    if only and not only & set(HTTP_BENCHMARKS):
        raise UsageError(f"with --http, --only takes {', '.join(HTTP_BENCHMARKS)}")
    setting = msgspec.structs.replace(
        HTTP_QUICK if args.quick else HTTP_FULL,
        connections=args.connections,
        generator=args.generator or default_generator(),
        loop=args.loop,
        http=args.parser,
        profile=args.profile,
    )
    if args.workers:
        setting = msgspec.structs.replace(setting, workers=tuple(dict.fromkeys(args.workers)))
    return run_http(url, setting, only)


def _show(figure: Figure) -> str:
    digits = 2 if abs(figure.max) < 10 else 1  # small figures (cores, ratios) keep two
    if figure.runs == 1:
        return f"{figure.median:,.{digits}f}"
    return f"{figure.median:,.{digits}f} [{figure.min:,.{digits}f}-{figure.max:,.{digits}f}]"
