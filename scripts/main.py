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
from .arguments import UsageError, database_url
from .output import fail

EXAMPLES = """examples:
  voxledger log ID; voxledger at ID --time 2026-11-20T14:02Z; voxledger diff ID 10 12
  voxledger bisect ID --where 'flow.step == "city"'; voxledger replay --all --verify
  voxledger demo; voxledger serve --port 8080; voxledger telegram poll (no public URL)
  voxledger COMMAND --help                one command in full, with an example

VOXLEDGER_DATABASE_URL (or --database-url) names a PostgreSQL server, else an embedded one
keeps its data under $VOXLEDGER_HOME. Exit codes: 0 done, 1 refused, 2 usage, 3 database
unreachable, 130 interrupted."""

# The exit codes, one meaning each (the README lists them too).
OK, REFUSED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130


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
        type=database_url,
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
        return int(args.run(args) or OK)
    except UsageError as e:
        fail(str(e))
        return USAGE
    except Unavailable as e:
        fail(str(e))
        return UNREACHABLE
    except VoxledgerError as e:
        fail(str(e))
        return REFUSED
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`voxledger log ID | head`): stop quietly, as Unix tools do,
        # and point stdout at nothing so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if database_failed(e):
            fail(f"database unavailable: {first_line}")
            return UNREACHABLE
        # A bug: one line for the user, the traceback for whoever runs with --log-level DEBUG.
        import structlog  # loaded by then, by the command that failed

        structlog.get_logger("voxledger").debug("cli.unexpected_error", exc_info=e)
        fail(f"internal error ({type(e).__name__}): {first_line}")
        return REFUSED


def database_failed(error: Exception) -> bool:
    """Whether an error is the database's (lost, refused, or failing), as its drivers
    raise it; they are loaded by then, by the command that met it."""
    from eventsourcing.persistence import OperationalError, PersistenceError
    from psycopg import Error as PsycopgError

    return isinstance(error, OperationalError | PsycopgError | PersistenceError)


if __name__ == "__main__":
    sys.exit(main())
