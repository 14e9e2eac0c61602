"""Argument types shared by the command modules: ids and times, checked where they enter."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from ..domain.errors import BadInput


class UsageError(BadInput):
    """A command-line argument that cannot be used; the command exits with code 2."""


class Choices(Sequence[str]):
    """An argument's choices, known to a module that is heavy to import: loaded when a
    value is checked or the command's own help is shown, not for `voxledger --help`. Give
    the argument a metavar (argparse would list the choices to make one) and name them in
    its help with ``%(choices)s``."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load

    @cached_property
    def _names(self) -> Sequence[str]:
        return self._load()

    def __getitem__(self, index: Any) -> Any:
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, value: object) -> bool:
        return value in self._names


def stream_id(text: str) -> UUID:
    """A conversation or flow id (a UUID)."""
    try:
        return UUID(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a conversation id (a UUID)") from None


def timestamp(text: str) -> datetime:
    """An ISO 8601 time with a time zone, within the years 1 to 9999 in UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone; add +00:00 or Z")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    return value


def positive_int(text: str) -> int:
    """A whole number above 0."""
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"{text!r} is not a whole number above 0")
    return int(text)


def database_url(text: str) -> str:
    """A PostgreSQL URL (postgresql://user:password@host:port/db) or connection string."""
    import psycopg.conninfo  # only when the option is given: --help stays light

    try:
        psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        raise UsageError(
            "--database-url takes a PostgreSQL URL like postgresql://user:password@host:5432/db"
        ) from None
    return text


def add_flow_options(parser: argparse.ArgumentParser) -> None:
    """--flows and --code: the user's flow definitions, and the Python code they name."""
    parser.add_argument(
        "--flows",
        action="append",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="a flow definition file (.toml .json .yaml .yml) or a folder of them, run beside "
        "the built-in flows; repeatable (default: $VOXLEDGER_FLOWS)",
    )
    parser.add_argument(
        "--code",
        action="append",
        metavar="MODULE",
        default=argparse.SUPPRESS,
        help="a .py file or module whose VALIDATORS and HOOKS the flows name; repeatable "
        "(default: $VOXLEDGER_CODE)",
    )


def flow_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments `open_engine` and `open_flows` take from --flows and --code."""
    return {"flows": getattr(args, "flows", None), "code": getattr(args, "code", None)}
