"""Health, split as supervisors and load balancers expect it: liveness (/livez: the process
serves requests, whatever the database does) and readiness (/readyz: the database answers,
and how far each projection trails the log). Both answer within two seconds, always:
readiness asks the database on a connection of its own, with short timeouts, outside the
pool and its retries. /healthz is readiness under its older name."""

from __future__ import annotations

import anyio
import anyio.to_thread
import structlog
from litestar import Response, get
from litestar.di import NamedDependency
from psycopg import Error as PsycopgError

from ...projections.runner import TRACKING_TABLE
from ..store.database import probe
from ..store.event_store import EventStore
from .bodies import Health, Liveness
from .errors import RETRY_AFTER_S, first_line

log = structlog.get_logger("voxledger.http")

DEADLINE_S = 1.8  # the whole answer, within the 2 s a probe may take
# Probes in flight at once: a flood of them must not fill the threads the API needs.
_probes = anyio.CapacityLimiter(2)


@get("/livez", tags=["health"])
async def livez() -> Liveness:
    """200 while the process serves requests (it asks no database)."""
    return Liveness(status="ok")


@get("/readyz", tags=["health"])
async def readyz(store: NamedDependency[EventStore]) -> Response[Health]:
    """200 when the database answers a query, with each projection's lag in events; 503
    (with Retry-After) when it does not answer within the deadline."""
    return await readiness(store)


@get("/healthz", tags=["health"])
async def healthz(store: NamedDependency[EventStore]) -> Response[Health]:
    """Readiness, as /readyz (the name older deployments probe)."""
    return await readiness(store)


async def readiness(store: EventStore) -> Response[Health]:
    """Probe the store's database within the deadline."""
    datastore = store.recorder.datastore
    try:
        with anyio.fail_after(DEADLINE_S):
            found = await anyio.to_thread.run_sync(
                lambda: probe(
                    dict(datastore.pool.kwargs),
                    datastore.schema,
                    store.recorder.events_table_name,
                    TRACKING_TABLE,
                ),
                abandon_on_cancel=True,  # the probe's own timeouts end its thread soon
                limiter=_probes,
            )
    except TimeoutError:
        return not_ready("no answer within 2 s")
    except (PsycopgError, OSError) as e:
        return not_ready(first_line(e))
    lag = {name: max(0, found.head - position) for name, position in found.positions.items()}
    return Response(Health(status="ok", database="ok", head=found.head, projection_lag=lag))


def not_ready(reason: str) -> Response[Health]:
    """503: the database does not answer (yet); ask again later."""
    log.warning("health.database_unreachable", error=reason)
    return Response(
        Health(status="failing", database=reason),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
