"""The composition root: the one place that reads the environment and the wall clock, and
that builds the real pieces (the store and its key ring, the engine, the async front, the
projection runner and queries, the chat bot, the HTTP app). Commands, handlers and tests
get their pieces here; tests swap them here."""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import platformdirs
import psycopg
import structlog
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from ..domain.engine import Engine
from ..domain.errors import BadInput
from ..domain.flow_definition import CustomValidators, FlowDefinition, FlowRegistry, Hooks
from ..projections.queries import Projections
from ..projections.registry import default_projections
from ..projections.runner import PAGE_SIZE, ProjectionRunner
from .async_engine import AsyncEngine
from .chat.bot import ChatBot
from .chat.wording import reply_text
from .flow_files import FlowCode, load_builtin, load_code, load_flows
from .http.settings import (
    DEFAULT_MAX_BODY,
    ENV_API_TOKEN,
    ENV_MAX_BODY,
    ENV_TELEGRAM_SECRET,
    Settings,
)
from .logs import configure_logging
from .services import Services
from .store.database import Connections, embedded_database_url, eventsourcing_settings, redact
from .store.event_store import EventStore
from .store.keys import KeyRing

if TYPE_CHECKING:
    from litestar.types import ASGIApp

# Every variable voxledger reads, here and nowhere else.
ENV_URL = "VOXLEDGER_DATABASE_URL"
ENV_HOME = "VOXLEDGER_HOME"
ENV_SCHEMA = "VOXLEDGER_SCHEMA"
ENV_POOL_SIZE = "VOXLEDGER_POOL_SIZE"
ENV_CONNECT_TIMEOUT = "VOXLEDGER_CONNECT_TIMEOUT"
ENV_CREATE_TABLES = "VOXLEDGER_CREATE_TABLES"
ENV_LOG_LEVEL = "VOXLEDGER_LOG_LEVEL"
ENV_FLOWS = "VOXLEDGER_FLOWS"
ENV_CODE = "VOXLEDGER_CODE"
# Tests hand their clock to the processes they start through this variable: an ISO 8601
# time at which the process's clock starts, running on at the machine's steady pace from
# there. Meant for tests (and for replaying a day by hand); production leaves it unset.
ENV_TEST_CLOCK = "VOXLEDGER_TEST_CLOCK"

# Serialises schema creation across processes: two processes creating the same tables at
# once can otherwise collide in PostgreSQL's catalogue.
_SCHEMA_LOCK = 0x766F786C  # "voxl"

Clock = Callable[[], datetime]

# -- time ----------------------------------------------------------------------------------------


def utc_now() -> datetime:
    """The wall clock, in UTC: the Engine's default source of command times."""
    return datetime.now(UTC)


class SteadyClock:
    """A clock that starts at a given moment and advances with the machine's monotonic
    clock: the same pace as real time, on whatever calendar day the caller chose."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise BadInput(f"{ENV_TEST_CLOCK} must carry a time zone, like 2026-11-21T14:00Z")
        self.start = start
        self._origin = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._origin)


def system_clock() -> Clock:
    """The clock every command of this process uses: the wall clock, unless the process was
    started with $VOXLEDGER_TEST_CLOCK (the one place besides utc_now that decides time)."""
    raw = os.environ.get(ENV_TEST_CLOCK)
    if not raw:
        return utc_now
    try:
        start = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{ENV_TEST_CLOCK}={raw!r} is not an ISO 8601 time") from None
    return SteadyClock(start)


def jittered_backoff(attempt: int) -> None:
    """Wait a little, randomly, before retrying a command that lost a race, so that many
    writers on one conversation spread out instead of colliding again."""
    time.sleep(random.uniform(0, 0.002 * 2**attempt))


# -- settings from the environment ---------------------------------------------------------------


def start_logging(
    level: str | None = None, *, default: str = "WARNING", worker: int | None = None
) -> None:
    """Structured logs on stderr at ``level``, else $VOXLEDGER_LOG_LEVEL, else ``default``;
    a serving worker's lines carry its number."""
    fields = None if worker is None else {"worker": worker}
    configure_logging(level or os.environ.get(ENV_LOG_LEVEL) or default, fields=fields)


def voxledger_home() -> Path:
    """The folder for voxledger's own data: $VOXLEDGER_HOME or the user data folder."""
    return Path(os.environ.get(ENV_HOME) or platformdirs.user_data_dir("voxledger"))


def resolve_database_url(database_url: str | None = None) -> str:
    """The URL to use: the given one, else $VOXLEDGER_DATABASE_URL, else the embedded server."""
    return database_url or os.environ.get(ENV_URL) or embedded_database_url(voxledger_home())


def describe_database(database_url: str | None = None) -> str:
    """Where a command's data lives, for people: the URL without its password, or the
    embedded server's folder (which this does not start)."""
    if database_url or os.environ.get(ENV_URL):
        return redact(resolve_database_url(database_url))
    return f"embedded PostgreSQL under {voxledger_home() / 'pgdata'}"


def environment_for(database_url: str | None, schema: str | None = None) -> dict[str, str]:
    """The environment for a voxledger process this one starts: this process's own, with
    the database (and schema) the child is to use, if given."""
    url = {ENV_URL: database_url} if database_url else {}
    return {**os.environ, **url, **({ENV_SCHEMA: schema} if schema else {})}


def connections() -> Connections:
    """$VOXLEDGER_POOL_SIZE, $VOXLEDGER_CONNECT_TIMEOUT and $VOXLEDGER_CREATE_TABLES."""
    defaults = Connections()
    return Connections(
        pool_size=_positive_int(ENV_POOL_SIZE, defaults.pool_size),
        connect_timeout_s=_positive_int(ENV_CONNECT_TIMEOUT, defaults.connect_timeout_s),
        create_tables=_yes_or_no(ENV_CREATE_TABLES, defaults.create_tables),
    )


# Connections left to everyone but the serving workers: the projection worker's pool, the
# commands people run, a psql session.
OTHERS_CONNECTIONS = 25
# The fewest a serving process works with: the appenders' connection, one for reads and
# first loads, one for the snapshot writer.
MIN_CONNECTIONS = 3


def serving_connections(database_url: str, workers: int) -> Connections:
    """The connections each of ``workers`` serving processes may hold: `connections()`,
    cut where needed so that all of them together leave `OTHERS_CONNECTIONS` free under
    the server's max_connections (BadInput if even `MIN_CONNECTIONS` each do not fit)."""
    wanted = connections()
    if workers == 1:
        return wanted
    try:
        with psycopg.connect(
            database_url, autocommit=True, connect_timeout=wanted.connect_timeout_s
        ) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                # PostgreSQL 16 keeps some more for roles granted pg_use_reserved_connections.
                " - coalesce(current_setting('reserved_connections', true)::int, 0)"
            ).fetchone()
        limit = int(row[0]) if row else 0
    except psycopg.OperationalError as e:
        # Not reachable now: each worker keeps the configured pool, and connects later.
        structlog.get_logger("voxledger.serve").warning(
            "serve.connection_limit_unknown", error=str(e).strip().splitlines()[0]
        )
        return wanted
    each = (limit - OTHERS_CONNECTIONS) // workers
    if each >= wanted.pool_size + wanted.max_overflow:
        return wanted
    if each < MIN_CONNECTIONS:
        raise BadInput(
            f"{workers} workers do not fit in the database's {limit} connections (each needs "
            f"{MIN_CONNECTIONS}, and {OTHERS_CONNECTIONS} stay free for others): serve with "
            f"fewer --workers or raise max_connections"
        )
    overflow = min(wanted.max_overflow, each // 3)
    return msgspec.structs.replace(wanted, pool_size=each - overflow, max_overflow=overflow)


def http_settings(flow: str = "intake") -> Settings:
    """What the HTTP server needs besides its pieces: $VOXLEDGER_TELEGRAM_SECRET,
    $VOXLEDGER_API_TOKEN and $VOXLEDGER_MAX_BODY_BYTES."""
    raw_limit = os.environ.get(ENV_MAX_BODY) or str(DEFAULT_MAX_BODY)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise BadInput(f"{ENV_MAX_BODY} must be a positive number of bytes, not {raw_limit!r}")
    return Settings(
        telegram_secret=os.environ.get(ENV_TELEGRAM_SECRET) or None,
        api_token=os.environ.get(ENV_API_TOKEN) or None,
        max_body_bytes=int(raw_limit),
        flow=flow,
    )


def _positive_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(f"{variable} must be a whole number above 0, not {raw!r}")
    return int(raw)


def _yes_or_no(variable: str, default: bool) -> bool:
    raw = os.environ.get(variable, "").strip().lower()
    if not raw:
        return default
    # The words the eventsourcing library took when it read this setting itself.
    if raw in ("y", "yes", "t", "true", "on", "1"):
        return True
    if raw in ("n", "no", "f", "false", "off", "0"):
        return False
    raise BadInput(f"{variable} must be yes or no, not {raw!r}")


def _paths_in(variable: str) -> list[str]:
    """The paths an environment variable lists, separated like PATH."""
    return [part for part in os.environ.get(variable, "").split(os.pathsep) if part]


# -- flows ---------------------------------------------------------------------------------------

FlowItem = FlowDefinition | str | os.PathLike[str]
FlowSource = FlowRegistry | FlowItem | Iterable[FlowItem] | None


def open_flows(
    flows: FlowSource = None,
    *,
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    code: Sequence[str] | None = None,
) -> FlowRegistry:
    """The flow definitions to run: a registry as given, or the built-in ones and the
    user's (definitions, or files and folders; without any, those $VOXLEDGER_FLOWS names).
    Custom validators and hooks come as functions, or from the Python modules `code` (or
    $VOXLEDGER_CODE) names."""
    if isinstance(flows, FlowRegistry):
        return flows
    if isinstance(flows, FlowDefinition | str | os.PathLike):
        flows = [flows]
    if flows is None:
        flows = _paths_in(ENV_FLOWS)
    loaded = flow_code(code)
    custom_validators = {**loaded.validators, **(custom_validators or {})}
    hooks = {**loaded.hooks, **(hooks or {})}
    items = list(flows)
    registry = FlowRegistry([load_builtin()])
    paths = [item for item in items if not isinstance(item, FlowDefinition)]
    for definition in [item for item in items if isinstance(item, FlowDefinition)]:
        registry.register(definition)
    for definition in load_flows(paths, custom_validators, hooks):
        registry.register(definition)
    return registry


def flow_code(code: Sequence[str] | None = None) -> FlowCode:
    """The custom validators and hooks of the Python modules named (by default, those
    $VOXLEDGER_CODE lists)."""
    return load_code(_paths_in(ENV_CODE) if code is None else code)


# -- the store and the engine --------------------------------------------------------------------


def open_store(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    key_ring: Callable[[PostgresDatastore], KeyRing] | None = None,
    pool: Connections | None = None,
) -> EventStore:
    """The PostgreSQL event store (on the given database, $VOXLEDGER_DATABASE_URL, or the
    embedded server); the schema and tables are created on first use. ``key_ring`` makes
    the ring of data keys on the store's datastore (the store's own table by default);
    ``pool`` says how it connects (by default, `connections()`)."""
    url = resolve_database_url(database_url)
    schema = schema or os.environ.get(ENV_SCHEMA) or None
    settings = eventsourcing_settings(url, schema, pool or connections())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema or "public",)
        ).fetchone()
        if schema and not exists:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        return EventStore(env=settings, key_ring=key_ring)


def open_engine(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    flows: FlowSource = None,
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    code: Sequence[str] | None = None,
) -> Engine:
    """A ready Engine on the given database, $VOXLEDGER_DATABASE_URL, or the embedded server;
    its clock is the given one, else this process's (`system_clock`). It runs the flows
    `open_flows` gives for `flows`, `custom_validators`, `hooks` and `code`."""
    if not structlog.is_configured():
        start_logging()
    # The definitions first: a broken flow file is reported before a database starts.
    registry = open_flows(flows, custom_validators=custom_validators, hooks=hooks, code=code)
    return engine_on(open_store(database_url, schema=schema), registry, clock)


def engine_on(store: EventStore, flows: FlowRegistry, clock: Clock | None = None) -> Engine:
    """The Engine over a store, running these flows on this clock (else this process's)."""
    return Engine(
        store, clock or system_clock(), flows=flows, phrase=reply_text, backoff=jittered_backoff
    )


def open_async_engine(engine: Engine, **limits: int) -> AsyncEngine:
    """The async front of an engine: when the engine saves to an EventStore, commands on
    the conversations it holds in memory run in the event loop and share commits.
    ``limits``: AsyncEngine's max_threads and max_batch."""
    store = engine.store if isinstance(engine.store, EventStore) else None
    return AsyncEngine(engine, store, **limits)


# -- projections ---------------------------------------------------------------------------------


def open_runner(
    store: EventStore, page_size: int = PAGE_SIZE, *, clock: Clock | None = None
) -> ProjectionRunner:
    """The projection runner on the event store's database, schema and event decoder; its
    clock (for how far behind it is in time) is this process's unless given."""
    recorder = store.recorder
    recorder.datastore.pool.open()  # the library opens it on first use; we may come first
    return ProjectionRunner(
        recorder.datastore.pool,
        recorder.datastore.schema,
        store.mapper.to_domain_event,
        default_projections(),
        page_size=page_size,
        events_table=recorder.events_table_name,
        clock=clock or system_clock(),
    )


def open_projections(store: EventStore) -> Projections:
    """The query API over the projection tables next to the event store's log."""
    return Projections(store.recorder.datastore.pool, store.recorder.datastore.schema)


def catch_up(store: EventStore) -> None:
    """Bring every projection up to the log's head in this process (how the embedded
    default keeps its read models without a worker); cheap when they are current."""
    with open_runner(store) as runner:
        runner.catch_up()


# -- everything a serving process holds ----------------------------------------------------------


def open_services(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    flows: FlowSource = None,
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    code: Sequence[str] | None = None,
    store: EventStore | None = None,
    pool: Connections | None = None,
) -> Services:
    """Every real piece on one database (arguments as for `open_engine`; ``pool`` as for
    `open_store`); a test may hand in a store of its own."""
    if not structlog.is_configured():
        start_logging()
    registry = open_flows(flows, custom_validators=custom_validators, hooks=hooks, code=code)
    pool = pool or connections()
    store = store or open_store(database_url, schema=schema, pool=pool)
    clock = clock or system_clock()
    engine = engine_on(store, registry, clock)
    return Services(
        store=store,
        engine=engine,
        # As many commands in threads as the pool has connections for.
        async_engine=AsyncEngine(engine, store, max_threads=pool.pool_size),
        projections=open_projections(store),
        runner=functools.partial(open_runner, store, clock=clock),
        bot=functools.partial(ChatBot, engine),
        clock=clock,
    )


def open_app(
    services: Services,
    settings: Settings | None = None,
    *,
    routes: Sequence[Any] = (),
    dependencies: Mapping[str, Any] | None = None,
    closing: threading.Event | None = None,
) -> ASGIApp:
    """The HTTP app over the services, with the operator console: settings from the
    environment unless given; other routers or route handlers (and what they depend on) join
    the app's own; the console's live tails end when ``closing`` is set."""
    # Imported here: the web stack costs every command that does not serve its start-up.
    from .console import console_router
    from .http.app import create_app

    settings = settings or http_settings()
    console = console_router(services, settings.api_token, closing=closing)
    return create_app(services, settings, routes=[*routes, console], dependencies=dependencies)
