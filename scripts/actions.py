"""`voxledger actions run|status`: run the actions of ended runs from the log, and see how
far behind the subscriber that runs them is."""

from __future__ import annotations

import argparse
import signal
import threading

from .arguments import add_flow_options, flow_options
from .output import print_json, print_table, say, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the actions command and its actions."""
    actions = commands.add_parser(
        "actions",
        help="run the actions of ended runs (on_complete, on_cancel, on_expire)",
        description="The actions a flow names run once per ended run, from the log, by one "
        "subscriber at a time (others stand by). Each attempt is recorded on the run. "
        "Example: voxledger actions run --flows flows/ --code shop_code.py",
    )
    verbs = actions.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = verbs.add_parser(
        "run",
        help="run actions as runs end, until Ctrl-C or SIGTERM",
        description="Run the actions of every run that ended, then of each run as it ends. "
        "An attempt interrupted by a crash is tried again, up to --attempts in all. "
        "Example: voxledger actions run --once --code shop_code.py",
    )
    run.add_argument("--once", action="store_true", help="run what is due, then exit")
    run.add_argument(
        "--poll", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)"
    )
    run.add_argument(
        "--attempts",
        type=int,
        default=None,
        metavar="N",
        help="attempts of one action on one run at most (default 3)",
    )
    run.add_argument("--json", action="store_true", help="print the tally of --once as JSON")
    add_flow_options(run)
    run.set_defaults(run=run_actions)

    status = verbs.add_parser(
        "status",
        help="where the action subscriber stands in the log",
        description="Example: voxledger actions status --json",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(status)
    status.set_defaults(run=run_status)


def run_actions(args: argparse.Namespace) -> int:
    """Run what is due; with --once, exit then."""
    from ..adapters.bootstrap import open_actions, open_engine

    options = {} if args.attempts is None else {"max_attempts": args.attempts}
    with open_engine(args.database_url, **flow_options(args)) as engine:
        subscriber = open_actions(engine, **options)
        if args.once:
            tally = subscriber.catch_up()
            if args.json:
                print_json(to_plain(tally))
            elif tally.standby:
                say("another process runs the actions here (it holds their lock): nothing done")
            else:
                say(
                    f"{tally.runs} ended runs, {tally.attempts} attempts: {tally.succeeded} "
                    f"succeeded, {tally.failed} failed; at position {tally.position}"
                )
            return 0
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        say(f"running the actions of ended runs in schema {subscriber.schema}; Ctrl-C to stop")
        subscriber.run(stop, poll_s=args.poll)
        say(f"stopped at position {subscriber.status().position}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print where the subscriber stands."""
    from ..adapters.bootstrap import open_actions, open_engine

    with open_engine(args.database_url, **flow_options(args)) as engine:
        status = open_actions(engine).status()
    if args.json:
        print_json(to_plain(status))
    else:
        row = (status.position, status.head, status.behind)
        print_table("actions", ["position", "head", "behind"], [row])
    return 0
