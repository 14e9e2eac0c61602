"""How projections write a page: every row of a table in one binary COPY.

Binary COPY moves rows about twice as fast as ``INSERT ... SELECT unnest(arrays)`` and
three times as fast as ``executemany`` (measured: 120k against 52k and 43k rows/s for a
ten-column upsert). An upsert copies into a temporary table and merges from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

_STAGE = sql.Identifier("voxledger_stage")
_json = msgspec.json.Encoder(enc_hook=str)


def jsonb(value: Any) -> Jsonb:
    """A value for a jsonb column, encoded by msgspec (UUIDs and datetimes as strings)."""
    return Jsonb(value, dumps=_json.encode)


def copy_rows(
    cur: psycopg.Cursor[Any],
    table: sql.Composable,
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Append rows to a table; ``types`` names the PostgreSQL type of every column."""
    with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def upsert(
    cur: psycopg.Cursor[Any],
    table: sql.Identifier,
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
    on_conflict: str,
) -> None:
    """Insert rows (every column, in table order), or merge them into the rows they
    conflict with as ``on_conflict`` says; the table is aliased ``t``."""
    cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(_STAGE, table))
    copy_rows(cur, _STAGE, types, rows)
    cur.execute(
        sql.SQL("INSERT INTO {} AS t SELECT * FROM {} ").format(table, _STAGE)
        + sql.SQL(on_conflict)  # type: ignore[arg-type]
    )
    cur.execute(sql.SQL("DROP TABLE {}").format(_STAGE))
