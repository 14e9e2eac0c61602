"""Read your writes over HTTP: a read from the projections may name the log position of a
write it must see (``min_position``, from the write's answer), and waits, bounded, until the
projections it reads from have applied the log that far.

The wait asks the tracking table again with a pause that grows from 1 ms to 50 ms (a runner
that keeps up is there within milliseconds; no connection is held between asks). If the
projections are still short of the position when the wait runs out, the read is answered
503 with Retry-After, naming the position they reached (`ProjectionsBehind`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import anyio
import anyio.to_thread

from ...projections.queries import Projections

DEFAULT_WAIT_S = 5.0  # how long a read waits for the projections to reach its position
FIRST_PAUSE_S = 0.001
LONGEST_PAUSE_S = 0.05


class PositionNotInLog(Exception):
    """A read asked to wait for a position the log has not got to: no write has it."""


class ProjectionsBehind(Exception):
    """The projections a read needs had not reached the position it asked for in time."""

    def __init__(self, wanted: int, reached: int, waited_s: float) -> None:
        self.wanted, self.reached, self.waited_s = wanted, reached, waited_s
        super().__init__(
            f"the projections reached log position {reached}, not {wanted}, within "
            f"{waited_s:g} s: try again shortly (is the projection worker running?)"
        )


async def reach(
    projections: Projections,
    position: int | None,
    names: Collection[str],
    head: Callable[[], int],
    *,
    timeout_s: float = DEFAULT_WAIT_S,
) -> None:
    """Return once every projection in ``names`` has applied the log up to ``position``
    (at once when no position is asked); PositionNotInLog for a position beyond the log's
    ``head`` (no write has it), ProjectionsBehind after ``timeout_s``."""
    if position is None or position <= 0:
        return
    if await _reached(projections, names) >= position:
        return
    last = await anyio.to_thread.run_sync(head)
    if position > last:
        raise PositionNotInLog(
            f"min_position {position} is beyond the log, whose last position is {last}: "
            "no write has it"
        )
    pause = FIRST_PAUSE_S
    with anyio.move_on_after(timeout_s):
        while True:
            reached = await _reached(projections, names)
            if reached >= position:
                return
            await anyio.sleep(pause)
            pause = min(pause * 1.5, LONGEST_PAUSE_S)
    raise ProjectionsBehind(position, await _reached(projections, names), timeout_s)


async def _reached(projections: Projections, names: Collection[str]) -> int:
    """How far the slowest of the named projections has applied the log (0: not started)."""
    positions = await anyio.to_thread.run_sync(projections.positions)
    return min((positions.get(name, 0) for name in names), default=0)
