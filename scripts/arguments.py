"""Argument types shared by the command modules: ids and times, checked where they enter."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from uuid import UUID

from ..domain.errors import BadInput


class UsageError(BadInput):
    """A command-line argument that cannot be used; the command exits with code 2."""


def stream_id(text: str) -> UUID:
    """A conversation or flow id (a UUID)."""
    try:
        return UUID(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a conversation id (a UUID)") from None


def timestamp(text: str) -> datetime:
    """An ISO 8601 time with a time zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise BadInput(f"{text!r} has no time zone; add +00:00 or Z")
    return value


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
