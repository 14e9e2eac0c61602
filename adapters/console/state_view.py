"""A state's JSON document (what `voxledger at --json` prints) laid out for a page: the plain
facts first, then groups of facts, lists of records as tables, and every value a leaf that
names its path in the document, so what a page shows can be read back and compared.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from .rendering import ERASED


class Leaf(msgspec.Struct, frozen=True):
    """One value: its dotted path in the document and how to show it."""

    path: str
    name: str
    kind: str  # text, erased, num, bool, null, time, json
    text: str
    at: datetime | None = None


class Table(msgspec.Struct, frozen=True):
    """A list of records (messages, turns, rejected answers): a row each, or only the
    last rows of a long list (``first`` is the place of the first row shown)."""

    path: str
    name: str
    columns: list[str]
    rows: list[list[Leaf | None]]
    total: int
    first: int = 0


class Group(msgspec.Struct, frozen=True):
    """A record or map of values (connection, usage, answers, context), or a list of
    values that are not all records (``listed``: its items are named by their places)."""

    path: str
    name: str
    items: list[Any]  # Leaf, Table or Group
    listed: bool = False


def layout(document: dict[str, Any], path: str = "", rows: int | None = None) -> Group:
    """The document as one group: its plain values first, in the document's order, then
    its groups and tables (of at most ``rows`` rows each: the last ones; None: all)."""
    items = [_node(_join(path, key), key, value, rows) for key, value in document.items()]
    plain = [item for item in items if isinstance(item, Leaf)]
    nested = [item for item in items if not isinstance(item, Leaf)]
    return Group(path, path.rpartition(".")[2], plain + nested)


def leaf(path: str, name: str, value: Any) -> Leaf:
    """A value as shown: text verbatim, numbers and empty collections as JSON writes them,
    null as a dash, moments as times."""
    if value is None:
        return Leaf(path, name, "null", "—")
    if isinstance(value, bool):
        return Leaf(path, name, "bool", "true" if value else "false")
    if isinstance(value, (int, float)):
        return Leaf(path, name, "num", msgspec.json.encode(value).decode())
    if isinstance(value, str):
        if value == ERASED:
            return Leaf(path, name, "erased", value)
        moment = _moment(name, value)
        if moment is not None:
            return Leaf(path, name, "time", value, moment)
        return Leaf(path, name, "text", value)
    return Leaf(path, name, "json", msgspec.json.encode(value).decode())


def _node(path: str, name: str, value: Any, limit: int | None) -> Leaf | Table | Group:
    if isinstance(value, dict) and value:
        items = [_node(_join(path, k), k, v, limit) for k, v in value.items()]
        return Group(path, name, items)
    if isinstance(value, list) and value:
        if all(isinstance(item, dict) for item in value):
            first = max(0, len(value) - limit) if limit is not None else 0
            shown = value[first:]
            columns = list(dict.fromkeys(key for item in shown for key in item))
            rows = [
                [leaf(_join(_join(path, i), c), c, item[c]) if c in item else None for c in columns]
                for i, item in enumerate(shown, start=first)
            ]
            return Table(path, name, columns, rows, total=len(value), first=first)
        items = [_node(_join(path, i), str(i), v, limit) for i, v in enumerate(value)]
        return Group(path, name, items, listed=True)
    return leaf(path, name, value)


def _moment(name: str, value: str) -> datetime | None:
    """A time field's value (named ``at`` or ``*_at``) as a moment; None for other text."""
    if name != "at" and not name.endswith("_at"):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
