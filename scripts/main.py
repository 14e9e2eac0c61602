"""The `voxledger` command: parse, call one command module, print, exit with a clear code.

Parsing loads only the command modules' parsers: each command imports what it needs (the
store, the web stack, audio) when it runs, so that `voxledger --help` starts at once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..domain.errors import Unavailable, VoxledgerError
from . import (
    actions,
    bench,
    chat,
    deliver,
    demo,
    erase,
    flows,
    inspect,
    listen,
    project,
    query,
    replay,
    serve,
    telegram,
    test,
    timetravel,
    transfer,
)
from .arguments import UsageError
from .output import fail

EXAMPLES = """examples:
  voxledger log ID; voxledger at ID --time 2026-11-20T14:02Z; voxledger diff ID 10 12
  voxledger bisect ID --where 'flow.step == "city"'; voxledger replay --all --verify
  voxledger demo; voxledger serve --port 8080   a stored sample; webhooks and the /v1 API
  voxledger telegram poll                 a Telegram bot without a public URL
  voxledger COMMAND --help                one command in full, with an example

Configuration: VOXLEDGER_DATABASE_URL (or --database-url) names a PostgreSQL server;
without it an embedded server keeps its data under $VOXLEDGER_HOME."""


class OneScreen(argparse.RawDescriptionHelpFormatter):
    """Help laid out wide enough that every command takes one line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=24, width=110)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="voxledger",
        description="Event-sourced conversation engine: durable, replayable bot state.",
        epilog=EXAMPLES,
        formatter_class=OneScreen,
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:password@host:port/db (default: $VOXLEDGER_DATABASE_URL, "
        "else the embedded server)",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default), ERROR")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        demo, inspect, timetravel, replay, transfer, flows, listen, chat, serve, telegram,
        deliver, bench, project, query, erase, actions, test,
    ):  # fmt: skip
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from ..adapters.bootstrap import start_logging

        start_logging(args.log_level)
        return int(args.run(args) or 0)
    except (Unavailable, UsageError) as e:
        fail(str(e))
        return 2
    except VoxledgerError as e:
        fail(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`voxledger log ID | head`): stop quietly, as Unix tools do,
        # and point stdout at nothing so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if not database_failed(e):
            raise
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"database unavailable: {first_line}")
        return 2


def database_failed(error: Exception) -> bool:
    """Whether an error is the database's (lost, refused, or failing), as its drivers
    raise it; they are loaded by then, by the command that met it."""
    from eventsourcing.persistence import OperationalError, PersistenceError
    from psycopg import Error as PsycopgError

    return isinstance(error, OperationalError | PsycopgError | PersistenceError)


if __name__ == "__main__":
    sys.exit(main())
