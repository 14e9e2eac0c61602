"""/healthz: whether the database answers, and how far each projection trails the log."""

from __future__ import annotations

import structlog
from eventsourcing.persistence import PersistenceError
from litestar import Response, get
from litestar.di import NamedDependency
from psycopg import Error as PsycopgError

from ...projections.queries import Projections
from ..store.event_store import EventStore
from .bodies import Health
from .errors import first_line

log = structlog.get_logger("voxledger.http")


@get("/healthz", tags=["health"], sync_to_thread=True)
def healthz(
    store: NamedDependency[EventStore], projections: NamedDependency[Projections]
) -> Response[Health]:
    """200 when the database answers a query; each projection's lag in events."""
    try:
        head = store.head()  # a real query
        positions = projections.positions()
    except (PersistenceError, PsycopgError) as e:
        log.warning("health.database_unreachable", error=first_line(e))
        return Response(Health(status="failing", database=first_line(e)), status_code=503)
    lag = {name: max(0, head - position) for name, position in positions.items()}
    return Response(Health(status="ok", database="ok", head=head, projection_lag=lag))
