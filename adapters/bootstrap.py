"""The composition root: wires the real event store and clock into a ready Engine."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
import structlog
from psycopg import sql

from ..domain.engine import Engine
from ..domain.errors import BadInput
from ..domain.flow_definition import CustomValidators, FlowDefinition, FlowRegistry, Hooks
from ..domain.intake import builtin_registry
from .flow_files import FlowCode, load_code, load_flows
from .logs import configure_logging
from .store.application import EventStore
from .store.database import eventsourcing_settings, resolve_database_url

# Serialises schema creation across processes: two processes creating the same tables at
# once can otherwise collide in PostgreSQL's catalogue.
_SCHEMA_LOCK = 0x766F786C  # "voxl"


# Tests hand their clock to the processes they start through this variable: an ISO 8601
# time at which the process's clock starts, running on at the machine's steady pace from
# there. Meant for tests (and for replaying a day by hand); production leaves it unset.
ENV_TEST_CLOCK = "VOXLEDGER_TEST_CLOCK"

Clock = Callable[[], datetime]


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


def open_store(database_url: str | None = None, *, schema: str | None = None) -> EventStore:
    """The PostgreSQL event store; the schema and tables are created on first use."""
    url = resolve_database_url(database_url)
    schema = schema or os.environ.get("VOXLEDGER_SCHEMA") or None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema or "public",)
        ).fetchone()
        if schema and not exists:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        return EventStore(env=eventsourcing_settings(url, schema))


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
        flows = _paths_in("VOXLEDGER_FLOWS")
    loaded = flow_code(code)
    custom_validators = {**loaded.validators, **(custom_validators or {})}
    hooks = {**loaded.hooks, **(hooks or {})}
    items = list(flows)
    registry = builtin_registry()
    paths = [item for item in items if not isinstance(item, FlowDefinition)]
    for definition in [item for item in items if isinstance(item, FlowDefinition)]:
        registry.register(definition)
    for definition in load_flows(paths, custom_validators, hooks):
        registry.register(definition)
    return registry


def flow_code(code: Sequence[str] | None = None) -> FlowCode:
    """The custom validators and hooks of the Python modules named (by default, those
    $VOXLEDGER_CODE lists)."""
    return load_code(_paths_in("VOXLEDGER_CODE") if code is None else code)


def _paths_in(variable: str) -> list[str]:
    """The paths an environment variable lists, separated like PATH."""
    return [part for part in os.environ.get(variable, "").split(os.pathsep) if part]


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
        configure_logging()
    # The definitions first: a broken flow file is reported before a database starts.
    registry = open_flows(flows, custom_validators=custom_validators, hooks=hooks, code=code)
    return Engine(
        open_store(database_url, schema=schema),
        clock or system_clock(),
        flows=registry,
        backoff=jittered_backoff,
    )
