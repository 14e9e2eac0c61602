"""All printing of the command line lives here: JSON for machines, tables for people."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    """The terminal for people's output (rich is loaded on the first print, not for --help)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def to_plain(value: Any) -> Any:
    """A JSON-ready copy of structs, UUIDs, datetimes and enums."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_enc_hook))


def _enc_hook(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value, enc_hook=_enc_hook)).decode())
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    """One compact JSON object per line (for streams of records)."""
    sys.stdout.write(msgspec.json.encode(value, enc_hook=_enc_hook).decode() + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table for people."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title else None, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Values are data (a user may well write "[erased]" or "[/b]"), never markup.
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    console().print(table)


def print_fields(title: str | None, fields: Iterable[tuple[str, Any]]) -> None:
    """Name/value lines for one record."""
    from rich.text import Text

    if title:
        console().print(Text(title, style="bold"))
    for name, value in fields:
        console().print(f"  {name:<22} {'' if value is None else value}", markup=False)


def say(text: str = "") -> None:
    """A line of prose for people, flushed at once (progress must survive a kill)."""
    console().print(text, markup=False)
    console().file.flush()


def fail(message: str) -> None:
    """The one clear error line."""
    sys.stderr.write(f"voxledger: error: {message}\n")
    sys.stderr.flush()


def summarise(data: dict[str, Any], width: int = 90) -> str:
    """A one-line summary of an event's data."""
    parts = []
    for key, value in data.items():
        if value in (None, {}, [], ""):
            continue
        text = value if isinstance(value, str) else msgspec.json.encode(to_plain(value)).decode()
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def print_line(text: str) -> None:
    """One plain line for people, printed as is (no markup) and flushed: streams stay live."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_json_array(items: Iterable[Any]) -> int:
    """A JSON array written item by item, so a long stream is never held in memory;
    returns how many items it held."""
    count = 0
    sys.stdout.write("[")
    for item in items:
        sys.stdout.write(",\n" if count else "\n")
        sys.stdout.write(msgspec.json.encode(item, enc_hook=_enc_hook).decode())
        count += 1
        if count % 1000 == 0:
            sys.stdout.flush()
    sys.stdout.write("\n]\n" if count else "]\n")
    sys.stdout.flush()
    return count


def print_raw_lines(lines: Iterable[bytes]) -> int:
    """Lines already encoded (each ending in a newline), written as they come; the count."""
    count = 0
    out = sys.stdout.buffer
    for line in lines:
        out.write(line)
        count += 1
    out.flush()
    return count


def warn(message: str) -> None:
    """A note on stderr that does not stop the command (stdout stays machine-readable)."""
    sys.stderr.write(f"voxledger: note: {message}\n")
    sys.stderr.flush()


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields ``update(done, total)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
