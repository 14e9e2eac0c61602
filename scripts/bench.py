"""`voxledger bench`: throughput and latency, ours next to the references, in one run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .arguments import Choices
from .output import print_json, print_table, say, to_plain

if TYPE_CHECKING:
    from .benchmarks.harness import Figure


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
    bench.set_defaults(run=run)


def _benchmark_names() -> list[str]:
    from .benchmarks.suite import BENCHMARKS

    return list(BENCHMARKS)


def run(args: argparse.Namespace) -> int:
    """Run and print."""
    from ..adapters.bootstrap import resolve_database_url
    from .benchmarks.harness import FULL, QUICK
    from .benchmarks.suite import run_all

    results = run_all(
        resolve_database_url(args.database_url),
        QUICK if args.quick else FULL,
        set(args.only) if args.only else None,
    )
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


def _show(figure: Figure) -> str:
    if figure.runs == 1:
        return f"{figure.median:,.1f}"
    return f"{figure.median:,.1f} [{figure.min:,.1f}-{figure.max:,.1f}]"
