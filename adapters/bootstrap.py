"""The composition root: the one place that reads the environment and the wall clock, and
that builds the real pieces (the store and its key ring, the engine, the async front, the
projection runner and queries, the chat bot, the HTTP app). Commands, handlers and tests
get their pieces here; tests swap them here."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

import anyio
import msgspec
import platformdirs
import psycopg
import structlog
from eventsourcing.persistence import InterfaceError
from eventsourcing.persistence import OperationalError as PersistenceOperationalError
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from ..domain.engine import Engine
from ..domain.errors import BadInput, Unavailable
from ..domain.flow_actions import Actions
from ..domain.flow_definition import CustomValidators, FlowDefinition, FlowRegistry, Hooks
from ..projections.outbox import Outbox
from ..projections.projection import Projection
from ..projections.queries import Projections
from ..projections.registry import default_projections
from ..projections.runner import PAGE_SIZE, ProjectionRunner
from .async_engine import AsyncEngine
from .chat.channels import (
    ENV_TELEGRAM_API_URL,
    ENV_TELEGRAM_SHARED_CHATS,
    ENV_TELEGRAM_TOKEN,
    ENV_WHATSAPP_API_URL,
    ENV_WHATSAPP_APP_SECRET,
    ENV_WHATSAPP_PHONE_NUMBER_ID,
    ENV_WHATSAPP_TEMPLATE,
    ENV_WHATSAPP_TOKEN,
    ENV_WHATSAPP_VERIFY_TOKEN,
    TELEGRAM_API_URL,
    WHATSAPP_API_URL,
    ChannelSettings,
    Template,
)
from .chat.wording import notice_text, reply_text
from .flow_files import FlowCode, builtin_source, load_builtin, load_code, load_flow_files
from .http.settings import (
    DEFAULT_MAX_BODY,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_READ_WAIT_S,
    ENV_API_TOKEN,
    ENV_MAX_BODY,
    ENV_PUBLIC_URL,
    ENV_READ_TIMEOUT,
    ENV_READ_WAIT,
    ENV_TELEGRAM_SECRET,
    ENV_TWILIO_AUTH_TOKEN,
    Settings,
)
from .logs import configure_logging
from .services import Services
from .store.database import Connections, embedded_database_url, eventsourcing_settings, redact
from .store.event_store import EventStore
from .store.keys import KeyRing

if TYPE_CHECKING:
    from litestar.types import ASGIApp

    # What chat, delivery and conversation tests need is imported where it is built: a
    # command that uses none of it (show, log, at...) does not pay for its import (httpx).
    from .actions import ActionSubscriber
    from .chat.bot import ChatBot
    from .chat.delivery import DeliveryWorker, Sender, Sleep
    from .chat.directory import ChatDirectory
    from .chat.polling import UpdateOffsets
    from .chat.telegram import BotIdentity
    from .chat.telegram_api import TelegramBotApi
    from .conversation_tests import Outcome
    from .http.peers import Peers

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

log = structlog.get_logger("voxledger")

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
    url = database_url or os.environ.get(ENV_URL)
    if url:
        return url
    home = voxledger_home()
    try:
        return embedded_database_url(home)
    except Exception as e:  # the wheel's server raises plain errors: a folder, a start
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(
            f"cannot start the embedded PostgreSQL under {home / 'pgdata'} ({ENV_HOME}): {reason}"
        ) from None


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
# The connections a serving process holds beside its pool, each its event loop's own: the
# chat directory's reads, the copies' checks, and the two shared commits in flight.
LOOP_CONNECTIONS = 4


def serving_connections(database_url: str, workers: int) -> Connections:
    """The pool each of ``workers`` serving processes may hold: `connections()`, cut where
    needed so that all of them together, with their `LOOP_CONNECTIONS`, leave
    `OTHERS_CONNECTIONS` free under the server's max_connections (BadInput if even
    `MIN_CONNECTIONS` each do not fit)."""
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
    each = (limit - OTHERS_CONNECTIONS) // workers - LOOP_CONNECTIONS  # the pool's share
    if each >= wanted.pool_size + wanted.max_overflow:
        return wanted
    if each < MIN_CONNECTIONS:
        raise BadInput(
            f"{workers} workers do not fit in the database's {limit} connections (each needs "
            f"{MIN_CONNECTIONS + LOOP_CONNECTIONS}, and {OTHERS_CONNECTIONS} stay free for "
            f"others): serve with fewer --workers or raise max_connections"
        )
    overflow = min(wanted.max_overflow, each // 3)
    return msgspec.structs.replace(wanted, pool_size=each - overflow, max_overflow=overflow)


def http_settings(flow: str = "intake") -> Settings:
    """What the HTTP server needs besides its pieces: $VOXLEDGER_TELEGRAM_SECRET,
    $VOXLEDGER_API_TOKEN, $VOXLEDGER_MAX_BODY_BYTES, $VOXLEDGER_READ_TIMEOUT,
    $VOXLEDGER_TWILIO_AUTH_TOKEN, $VOXLEDGER_PUBLIC_URL and $VOXLEDGER_READ_WAIT_S."""
    raw_limit = os.environ.get(ENV_MAX_BODY) or str(DEFAULT_MAX_BODY)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise BadInput(f"{ENV_MAX_BODY} must be a positive number of bytes, not {raw_limit!r}")
    raw_timeout = (os.environ.get(ENV_READ_TIMEOUT) or "").strip()
    try:
        read_timeout = float(raw_timeout) if raw_timeout else DEFAULT_READ_TIMEOUT
    except ValueError:
        read_timeout = -1.0
    if not 0 < read_timeout <= 3600:
        raise BadInput(
            f"{ENV_READ_TIMEOUT} must be seconds between 0 and 3600, not {raw_timeout!r}"
        )
    raw_wait = os.environ.get(ENV_READ_WAIT, "").strip() or str(DEFAULT_READ_WAIT_S)
    try:
        read_wait_s = float(raw_wait)
    except ValueError:
        read_wait_s = -1.0
    if not 0 <= read_wait_s <= 60:
        raise BadInput(f"{ENV_READ_WAIT} must be seconds from 0 to 60, not {raw_wait!r}")
    return Settings(
        telegram_secret=os.environ.get(ENV_TELEGRAM_SECRET) or None,
        api_token=os.environ.get(ENV_API_TOKEN) or None,
        max_body_bytes=int(raw_limit),
        read_timeout_s=read_timeout,
        flow=flow,
        twilio_auth_token=os.environ.get(ENV_TWILIO_AUTH_TOKEN) or None,
        public_url=_public_url(os.environ.get(ENV_PUBLIC_URL, "").strip() or None),
        read_wait_s=read_wait_s,
    )


def channel_settings() -> ChannelSettings:
    """The chat channels' tokens, secrets and API addresses: $VOXLEDGER_TELEGRAM_TOKEN,
    $VOXLEDGER_TELEGRAM_API_URL, $VOXLEDGER_TELEGRAM_SHARED_CHATS and the
    $VOXLEDGER_WHATSAPP_* variables (TOKEN, PHONE_NUMBER_ID, APP_SECRET, VERIFY_TOKEN,
    API_URL, TEMPLATE as name:language)."""
    token = os.environ.get(ENV_TELEGRAM_TOKEN, "").strip() or None
    if token is not None and ("/" in token or any(ch.isspace() for ch in token)):
        raise BadInput(f"{ENV_TELEGRAM_TOKEN} is not a bot token (one word, no slash)")
    number = os.environ.get(ENV_WHATSAPP_PHONE_NUMBER_ID, "").strip() or None
    if number is not None and not number.isdigit():
        raise BadInput(f"{ENV_WHATSAPP_PHONE_NUMBER_ID} must be the number's numeric id")
    template = None
    raw_template = os.environ.get(ENV_WHATSAPP_TEMPLATE, "").strip()
    if raw_template:
        name, _, language = raw_template.partition(":")
        if not name or not language:
            raise BadInput(f"{ENV_WHATSAPP_TEMPLATE} must be name:language, like hello_world:en_US")
        template = Template(name, language)
    shared = os.environ.get(ENV_TELEGRAM_SHARED_CHATS, "")
    return ChannelSettings(
        telegram_token=token,
        telegram_api_url=os.environ.get(ENV_TELEGRAM_API_URL, "").strip() or TELEGRAM_API_URL,
        shared_chats=frozenset(part.strip() for part in shared.split(",") if part.strip()),
        whatsapp_token=os.environ.get(ENV_WHATSAPP_TOKEN, "").strip() or None,
        whatsapp_phone_number_id=number,
        whatsapp_app_secret=os.environ.get(ENV_WHATSAPP_APP_SECRET) or None,
        whatsapp_verify_token=os.environ.get(ENV_WHATSAPP_VERIFY_TOKEN) or None,
        whatsapp_api_url=os.environ.get(ENV_WHATSAPP_API_URL, "").strip() or WHATSAPP_API_URL,
        whatsapp_template=template,
    )


def _public_url(raw: str | None) -> str | None:
    """The server's public base URL, as the world (Twilio) reaches it, checked once."""
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
        raise BadInput(
            f"{ENV_PUBLIC_URL} must be an absolute https:// URL (the server's public base, "
            f"like https://voice.example.com), not {raw!r}"
        )
    if parts.query or parts.fragment:
        raise BadInput(f"{ENV_PUBLIC_URL} is a base URL: no query or fragment, not {raw!r}")
    return raw.rstrip("/")


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
    actions: Actions | None = None,
    code: Sequence[str] | None = None,
) -> FlowRegistry:
    """The flow definitions to run: a registry as given, or the built-in ones and the
    user's (definitions, or files and folders; without any, those $VOXLEDGER_FLOWS names).
    Custom validators, hooks and actions come as functions, or from the Python modules
    `code` (or $VOXLEDGER_CODE) names."""
    if isinstance(flows, FlowRegistry):
        return flows
    if isinstance(flows, FlowDefinition | str | os.PathLike):
        flows = [flows]
    if flows is None:
        flows = _paths_in(ENV_FLOWS)
    loaded = flow_code(code)
    custom_validators = {**loaded.validators, **(custom_validators or {})}
    hooks = {**loaded.hooks, **(hooks or {})}
    actions = {**loaded.actions, **(actions or {})}
    items = list(flows)
    registry = FlowRegistry(custom_validators=custom_validators, hooks=hooks, actions=actions)
    registry.register(load_builtin(), builtin_source())
    paths = [item for item in items if not isinstance(item, FlowDefinition)]
    for definition in [item for item in items if isinstance(item, FlowDefinition)]:
        registry.register(definition)
    for definition, file in load_flow_files(paths, custom_validators, hooks, actions):
        registry.register(definition, file)
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
    limits = pool or connections()
    settings = eventsourcing_settings(url, schema, limits)
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=limits.connect_timeout_s
        ) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema or "public",)
            ).fetchone()
            if schema and not exists:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            return EventStore(env=settings, key_ring=key_ring)
    except (psycopg.OperationalError, PersistenceOperationalError, InterfaceError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Unavailable(f"database unavailable: {redact(url)}: {reason}") from e


def open_engine(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    flows: FlowSource = None,
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    actions: Actions | None = None,
    code: Sequence[str] | None = None,
) -> Engine:
    """A ready Engine on the given database, $VOXLEDGER_DATABASE_URL, or the embedded server;
    its clock is the given one, else this process's (`system_clock`). It runs the flows
    `open_flows` gives for `flows`, `custom_validators`, `hooks`, `actions` and `code`,
    checked against the versions the log holds (a changed definition that kept its version
    is refused)."""
    if not structlog.is_configured():
        start_logging()
    # The definitions first: a broken flow file is reported before a database starts.
    registry = open_flows(
        flows, custom_validators=custom_validators, hooks=hooks, actions=actions, code=code
    )
    store = open_store(database_url, schema=schema)
    with _closed_on_failure(store):
        return engine_on(store, registry, clock)


def engine_on(store: EventStore, flows: FlowRegistry, clock: Clock | None = None) -> Engine:
    """The Engine over a store, running these flows on this clock (else this process's),
    once they are checked against the versions the log holds (DefinitionError if one
    changed without a new version). Checking records nothing: a command that only reads
    never writes to the log; a version is recorded with the first run that starts on it."""
    engine = Engine(
        store,
        clock or system_clock(),
        flows=flows,
        phrase=reply_text,
        notice=notice_text,
        backoff=jittered_backoff,
    )
    engine.check_definitions()
    return engine


@contextlib.contextmanager
def _closed_on_failure(store: EventStore) -> Iterator[None]:
    """A store this process opened for a piece that could not be built is closed again."""
    try:
        yield
    except BaseException:
        store.close()
        raise


def open_async_engine(engine: Engine, **limits: int) -> AsyncEngine:
    """The async front of an engine: when the engine saves to an EventStore, commands on
    the conversations it holds in memory run in the event loop and share commits.
    ``limits``: AsyncEngine's max_threads and max_batch."""
    store = engine.store if isinstance(engine.store, EventStore) else None
    return AsyncEngine(engine, store, **limits)


def open_chat_directory(store: EventStore) -> ChatDirectory:
    """The chat directory beside the event store (its tables created unless the store may
    not create tables), with the deployment's secret read."""
    from .chat.directory import ChatDirectory

    directory = ChatDirectory(store.recorder.datastore)
    if store.factory.env_create_table():
        directory.create_tables()
    return directory.prepare()


def erase_conversation(store: EventStore, conversation_id: UUID) -> list[UUID]:
    """Erase a conversation's personal data and its flows' (`EventStore.erase`), and delete
    the chat directory's row that led from its chat to it, so that nothing ties the two and
    the chat's next message starts a new conversation; the streams erased."""
    streams = store.erase(conversation_id)
    open_chat_directory(store).forget(streams)
    return streams


def open_update_offsets(store: EventStore) -> UpdateOffsets:
    """Where Telegram polling resumes, in a table beside the event store."""
    from .chat.polling import UpdateOffsets

    offsets = UpdateOffsets(store.recorder.datastore)
    if store.factory.env_create_table():
        offsets.create_table()
    return offsets


# -- actions -------------------------------------------------------------------------------------


def open_actions(engine: Engine, **options: Any) -> ActionSubscriber:
    """The subscriber that runs the actions of ended runs, on the engine's event store
    (``options``: ActionSubscriber's max_attempts, retry_wait_s, page_size)."""
    from .actions import ActionSubscriber

    if not isinstance(engine.store, EventStore):
        raise TypeError("actions run from the log of an EventStore")
    recorder = engine.store.recorder
    recorder.datastore.pool.open()  # the library opens it on first use; we may come first
    return ActionSubscriber(
        engine,
        recorder.datastore.pool,
        recorder.datastore.schema,
        events_table=recorder.events_table_name,
        erased=engine.store.keys.is_erased,
        **options,
    )


# -- conversation tests --------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_schema(database_url: str | None = None) -> Iterator[tuple[str, str]]:
    """A new schema on the given database (else the usual one), and that database's URL;
    dropped with everything in it afterwards."""
    url = resolve_database_url(database_url)
    name = f"voxledger_test_{uuid.uuid4().hex[:12]}"
    try:
        yield url, name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def play_conversation_tests(
    paths: Sequence[str],
    database_url: str | None = None,
    *,
    flows: FlowSource = None,
    code: Sequence[str] | None = None,
) -> Iterator[Outcome]:
    """Play the cases of conversation test files through the chat bot, on a schema made
    for them and dropped afterwards, on a clock of their own that starts now; each case's
    outcome as it is played. The files are read (and refused, naming the problem) first."""
    from .conversation_tests import ManualClock, load_tests, play

    files = [(path, load_tests(path)) for path in paths]
    registry = open_flows(flows, code=code)  # a broken flow is reported before a database
    clock = ManualClock(system_clock()())
    with scratch_schema(database_url) as (url, schema):
        services = open_services(url, schema=schema, clock=clock, flows=registry)
        with services:
            bots: dict[str, ChatBot] = {}

            def bot(flow: str) -> ChatBot:
                if flow not in bots:
                    bots[flow] = services.bot(flow)
                return bots[flow]

            for path, tests in files:
                yield from play(bot, clock, path, tests)


# -- projections ---------------------------------------------------------------------------------


def open_runner(
    store: EventStore,
    page_size: int = PAGE_SIZE,
    *,
    clock: Clock | None = None,
    projections: Sequence[Projection] | None = None,
) -> ProjectionRunner:
    """The projection runner on the event store's database, schema and event decoder (for
    every projection, or those given); its clock (for how far behind it is in time) is
    this process's unless given."""
    recorder = store.recorder
    recorder.datastore.pool.open()  # the library opens it on first use; we may come first
    return ProjectionRunner(
        recorder.datastore.pool,
        recorder.datastore.schema,
        store.mapper.to_domain_event,
        default_projections() if projections is None else list(projections),
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
    actions: Actions | None = None,
    code: Sequence[str] | None = None,
    store: EventStore | None = None,
    pool: Connections | None = None,
    channels: ChannelSettings | None = None,
    shared_conversations: bool = False,
) -> Services:
    """Every real piece on one database (arguments as for `open_engine`; ``pool`` as for
    `open_store`; the channels' settings from the environment unless given); a test may
    hand in a store of its own. With ``shared_conversations`` (one of several serving
    processes) the async engine asks the log whether another process wrote past the copies
    in memory its commands decided on, where the commit does not find out itself."""
    from .chat.bot import ChatBot

    if not structlog.is_configured():
        start_logging()
    registry = open_flows(
        flows, custom_validators=custom_validators, hooks=hooks, actions=actions, code=code
    )
    channels = channels or channel_settings()
    pool = pool or connections()
    clock = clock or system_clock()
    if store is None:
        store = open_store(database_url, schema=schema, pool=pool)
        with _closed_on_failure(store):
            engine = engine_on(store, registry, clock)
            directory = open_chat_directory(store)
    else:
        engine = engine_on(store, registry, clock)
        directory = open_chat_directory(store)
    return Services(
        store=store,
        engine=engine,
        # As many commands in threads as the pool has connections for.
        async_engine=AsyncEngine(
            engine, store, max_threads=pool.pool_size, shared=shared_conversations
        ),
        projections=open_projections(store),
        runner=functools.partial(open_runner, store, clock=clock),
        bot=functools.partial(
            ChatBot,
            engine,
            directory=directory,
            delivering=channels.delivering,
            shared_chats=channels.shared_chats,
        ),
        clock=clock,
        directory=directory,
        channels=channels,
    )


def open_services_when_reachable(
    database_url: str | None = None,
    *,
    stopping: threading.Event,
    waiting: Callable[[str], None] | None = None,
    retry_s: float = 2.0,
    **options: Any,
) -> Services | None:
    """`open_services`, tried again every ``retry_s`` seconds while the database cannot
    be reached (``waiting`` hears why each time); None if ``stopping`` is set first.
    Anything else wrong (a flow file, a setting) fails at once."""
    while not stopping.is_set():
        try:
            return open_services(database_url, **options)
        except Unavailable as e:
            structlog.get_logger("voxledger").warning("database.unreachable", error=str(e))
            if waiting is not None:
                waiting(str(e))
        stopping.wait(retry_s)
    return None


# -- delivery ------------------------------------------------------------------------------------


def open_telegram_api(channels: ChannelSettings) -> TelegramBotApi:
    """The Bot API client of the configured bot ($VOXLEDGER_TELEGRAM_TOKEN, at
    $VOXLEDGER_TELEGRAM_API_URL); BadInput without a token."""
    from .chat.telegram_api import TelegramBotApi

    if channels.telegram_token is None:
        raise BadInput(f"{ENV_TELEGRAM_TOKEN} is not set: no bot to talk to")
    return TelegramBotApi(channels.telegram_token, base_url=channels.telegram_api_url)


def open_senders(channels: ChannelSettings) -> dict[str, Sender]:
    """A sender for each channel that delivers: Telegram with a bot token, WhatsApp with an
    access token and a phone number id."""
    from .chat.telegram_sender import TelegramSender
    from .chat.whatsapp_api import WhatsAppCloudApi
    from .chat.whatsapp_sender import WhatsAppSender

    senders: dict[str, Sender] = {}
    if channels.telegram_delivers:
        senders["telegram"] = TelegramSender(open_telegram_api(channels))
    if channels.whatsapp_delivers:
        assert channels.whatsapp_token and channels.whatsapp_phone_number_id
        api = WhatsAppCloudApi(
            channels.whatsapp_token,
            channels.whatsapp_phone_number_id,
            base_url=channels.whatsapp_api_url,
        )
        senders["whatsapp"] = WhatsAppSender(api, channels.whatsapp_template)
    return senders


def open_delivery(
    services: Services,
    senders: Mapping[str, Sender],
    *,
    clock: Callable[[], float] | None = None,
    sleep: Sleep | None = None,
    concurrency: int = 16,
    lead: bool = True,
) -> DeliveryWorker:
    """The delivery worker over the services: its own runner of the outbox projection, the
    log's NOTIFY to wake it, the senders given, and (with ``lead``) the lock that makes it
    the one worker delivering in this schema. ``clock`` and ``sleep`` (seconds) measure and
    wait for the rate limits: the machine's unless given."""
    from .chat.delivery import DeliveryWorker, Leadership, listener

    store = services.store
    runner = open_runner(store, clock=services.clock, projections=[Outbox()])
    projections = services.projections

    def pending(channels: list[str]) -> list[tuple[Any, str]]:
        runner.catch_up()
        return projections.outbox(channels)

    pool = store.recorder.datastore.pool
    kwargs = pool.kwargs or {}
    schema = store.recorder.datastore.schema
    return DeliveryWorker(
        services.async_engine,
        pending,
        senders,
        now=services.clock,
        clock=clock or time.monotonic,
        sleep=sleep or anyio.sleep,
        concurrency=concurrency,
        listen=listener(pool.conninfo, kwargs, runner.channel),
        leadership=Leadership(pool.conninfo, kwargs, schema) if lead else None,
    )


async def learn_username(api: TelegramBotApi, identity: BotIdentity) -> None:
    """Ask Telegram who the bot is (getMe) until it answers, and keep its username: commands
    that name another bot are then ignored."""
    from .chat.delivery_errors import DeliveryError

    pause = 1.0
    while True:
        try:
            me = await api.get_me()
        except DeliveryError as e:
            log.warning("telegram.get_me_failed", error=str(e), retry_in_s=pause)
            await anyio.sleep(pause)
            pause = min(60.0, pause * 2)
            continue
        identity.username = me.username
        log.info("telegram.bot", username=me.username)
        return


def delivery_lifespan(
    services: Services,
    identity: BotIdentity,
    worker: DeliveryWorker | None,
    senders: Mapping[str, Sender],
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """What runs beside the HTTP app while it serves: the delivery worker, and learning the
    bot's username; both stop (and the senders close) when the app stops."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        stopping = anyio.Event()
        try:
            async with anyio.create_task_group() as tasks:
                if services.channels.telegram_token is not None:
                    api = open_telegram_api(services.channels)
                    tasks.start_soon(_learning, api, identity)
                if worker is not None:
                    tasks.start_soon(worker.run, stopping)
                try:
                    yield
                finally:
                    stopping.set()
                    tasks.cancel_scope.cancel()
        finally:
            for sender in senders.values():
                await sender.aclose()

    return lifespan


async def _learning(api: TelegramBotApi, identity: BotIdentity) -> None:
    try:
        await learn_username(api, identity)
    finally:
        await api.aclose()


def open_app(
    services: Services,
    settings: Settings | None = None,
    *,
    routes: Sequence[Any] = (),
    dependencies: Mapping[str, Any] | None = None,
    closing: threading.Event | None = None,
    peers: Peers | None = None,
) -> ASGIApp:
    """The HTTP app over the services, with the operator console: settings from the
    environment unless given; other routers or route handlers (and what they depend on) join
    the app's own; the console's live tails end when ``closing`` is set. With a channel that
    delivers (a Telegram bot token, WhatsApp's), the delivery worker runs beside it. With
    ``peers`` (a worker of several), each chat's messages are served by one worker."""
    # Imported here: the web stack costs every command that does not serve its start-up.
    from .chat.telegram import BotIdentity
    from .console import console_router
    from .http.app import create_app

    settings = settings or http_settings()
    console = console_router(services, settings.api_token, closing=closing)
    senders = open_senders(services.channels)
    worker = open_delivery(services, senders) if senders else None
    identity = BotIdentity()
    return create_app(
        services,
        settings,
        routes=[*routes, console],
        dependencies=dependencies,
        lifespan=[delivery_lifespan(services, identity, worker, senders)],
        identity=identity,
        wake=worker.wake if worker is not None else _no_wake,
        peers=peers,
    )


def _no_wake(conversation_id: Any = None) -> None:
    """Nothing to wake: no delivery worker runs in this process."""
