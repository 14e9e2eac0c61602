"""`voxledger project run|status|rebuild`: keep the read models current, see how far behind
they are, rebuild one from the log."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .arguments import Choices
from .output import print_json, print_table, progress_bar, say, to_plain

if TYPE_CHECKING:
    from ..projections.runner import ProjectionRunner, ProjectionStatus


def register(commands: argparse._SubParsersAction) -> None:
    """Add the project command and its actions."""
    project = commands.add_parser(
        "project",
        help="run, inspect or rebuild the read models (projections)",
        description="Projections turn the event log into tables for queries. "
        "Example: voxledger project run",
    )
    actions = project.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser(
        "run",
        help="keep every projection current until Ctrl-C or SIGTERM",
        description="Tail the event log (LISTEN/NOTIFY, polling as the fallback) and apply "
        "new events to every projection. Example: voxledger project run --once",
    )
    run.add_argument("--once", action="store_true", help="catch up to the log's head and exit")
    run.add_argument(
        "--poll", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)"
    )
    run.add_argument(
        "--page-size",
        type=int,
        metavar="N",
        help="events applied per transaction (default: the runner's page size)",
    )
    run.set_defaults(run=run_projections)

    status = actions.add_parser(
        "status",
        help="each projection's position, the log's head and the lag",
        description="Example: voxledger project status --json",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=run_status)

    rebuild = actions.add_parser(
        "rebuild",
        help="rebuild one projection from the whole log, readers keep the old tables meanwhile",
        description="Example: voxledger project rebuild audit",
    )
    rebuild.add_argument(
        "name", choices=Choices(_projection_names), metavar="NAME", help="%(choices)s"
    )
    rebuild.add_argument("--json", action="store_true", help="print the result as JSON")
    rebuild.set_defaults(run=run_rebuild)


def _projection_names() -> list[str]:
    from ..projections.registry import default_projections

    return [p.name for p in default_projections()]


@contextmanager
def _runner(
    args: argparse.Namespace, stopping: threading.Event | None = None
) -> Iterator[ProjectionRunner | None]:
    """The runner on the command's database. With ``stopping``, an unreachable database is
    waited for (tried again every few seconds) rather than an error: None if stopped first."""
    from ..adapters.bootstrap import open_runner, open_store
    from ..domain.errors import Unavailable
    from ..projections.runner import PAGE_SIZE

    while True:
        try:
            store = open_store(args.database_url)
            break
        except Unavailable as e:
            if stopping is None:
                raise
            say(f"voxledger: {e}; trying again")
            if stopping.wait(2.0):
                yield None
                return
    try:
        with open_runner(store, getattr(args, "page_size", None) or PAGE_SIZE) as runner:
            runner.setup()
            yield runner
    finally:
        store.close()


def run_projections(args: argparse.Namespace) -> int:
    """Catch up, then follow the log until stopped. Started while the database is away,
    the worker waits for it instead of exiting (a supervisor would restart it in a loop)."""
    if args.once:
        with _runner(args) as runner:
            assert runner is not None
            runner.catch_up()
            print_status(runner.status())
            return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with _runner(args, stop) as runner:
        if runner is None:
            return 0  # stopped before the database came
        say(f"projecting the log of schema {runner.schema}; Ctrl-C to stop")
        runner.run(stop, poll_s=args.poll)
        say("stopped at " + ", ".join(f"{s.name} {s.position}" for s in runner.status()))
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print where each projection stands."""
    with _runner(args) as runner:
        assert runner is not None
        statuses = runner.status()
    if args.json:
        print_json([to_plain(s) for s in statuses])
    else:
        print_status(statuses)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    """Rebuild one projection with a progress bar."""
    with _runner(args) as runner:
        assert runner is not None
        with progress_bar(f"rebuilding {args.name}") as update:
            position = runner.rebuild(args.name, update)
        status = next(s for s in runner.status() if s.name == args.name)
    if args.json:
        print_json({"projection": args.name, "position": position, "lag": status.lag})
    else:
        say(f"{args.name} rebuilt up to position {position}; {status.lag} events behind now")
    return 0


def print_status(statuses: list[ProjectionStatus]) -> None:
    """The projections' positions for people."""
    print_table(
        "projections",
        ["projection", "position", "head", "lag (events)", "behind (s)", "updated"],
        (
            (
                s.name,
                s.position,
                s.head,
                s.lag,
                f"{s.seconds_behind:.1f}",
                s.updated_at.isoformat(timespec="seconds") if s.updated_at else None,
            )
            for s in statuses
        ),
    )
