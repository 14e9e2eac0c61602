"""The read models voxledger keeps: the one list the runner, the queries and the CLI take
them from."""

from __future__ import annotations

from .audit import Audit
from .current import CurrentState
from .delivery import Delivery
from .metrics import Metrics
from .outbox import Outbox
from .projection import Projection


def default_projections() -> list[Projection]:
    """The current-state, metrics, audit, outbox and delivery projections (new objects:
    each keeps its own memory between pages)."""
    return [CurrentState(), Metrics(), Audit(), Outbox(), Delivery()]
