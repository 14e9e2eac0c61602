"""Everything the operator console reads, in one place: a conversation's events, its states
at versions and the changes between them come from the event store (the same functions
`voxledger log`, `at` and `diff` use); lists, metrics, funnels and the projections' lag from
the projection tables; flow graphs from the engine's flow definitions.

"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from ...domain.conversation import Conversation
from ...domain.events import LoggedEvent, stream_type
from ...domain.flow import Flow
from ...domain.flow_definition import FlowRegistry
from ...projections.audit import summary
from ...projections.queries import Projections
from ..debug.conditions import Condition
from ..debug.diff import Change, diff
from ..debug.history import FlowBegun, History
from ..debug.timetravel import Found, TimeTravel, document
from ..services import Services
from ..store.event_store import EventStore

__all__ = ["Change", "Entry", "FlowBegun", "Found", "Sources", "Stated"]

# Events an operator looks for first: failures, and answers or turns that went wrong.
_ALARMING = (Conversation.ErrorRecorded,)
_NOTABLE = (
    Conversation.TurnInterrupted,
    Conversation.Disconnected,
    Flow.AnswerRejected,
    Flow.Cancelled,
    Flow.Expired,
)


class Entry(NamedTuple):
    """One event on a conversation's timeline."""

    position: int
    stream_id: UUID
    stream_type: str  # "conversation" or "flow"
    version: int
    type: str
    at: datetime
    summary: str
    tone: str  # "error", "warn" or ""


class Stated(NamedTuple):
    """A conversation's or flow's state at one version: the state, and its JSON document
    (what `voxledger at ID --version N --json` prints)."""

    state: Any
    document: dict[str, Any]


class Sources:
    """The console's reads: one conversation's history and states from the event store,
    everything across conversations from the projections."""

    def __init__(
        self, store: EventStore, projections: Projections | None, flows: FlowRegistry
    ) -> None:
        self.store = store
        self.projections = projections
        self.flows = flows
        self.history = History(store)
        self.travel = TimeTravel(store, self.history)

    @classmethod
    def of(cls, services: Services) -> Sources:
        """The reads over the composition root's store, projections and flows."""
        return cls(services.store, services.projections, services.engine.flows)

    # -- one conversation --------------------------------------------------------------------

    def kind(self, stream_id: UUID) -> str:
        """ "conversation" or "flow"; NotFound for an id with no events."""
        return self.history.kind(stream_id)

    def conversation_of(self, flow_id: UUID) -> UUID:
        """The conversation a flow run belongs to."""
        return self.history.event(flow_id, 1).conversation_id

    def flows_of(self, conversation_id: UUID) -> list[FlowBegun]:
        """The flows a conversation began, in order."""
        return self.history.flows_of(conversation_id)

    def last_version(self, stream_id: UUID) -> int:
        """The stream's newest version."""
        return self.history.last_version(stream_id)

    def event(self, stream_id: UUID, version: int) -> Entry:
        """One event of a stream as the timeline shows it."""
        recorded = next(self.history.events(stream_id, after=version - 1, upto=version))
        return entry(recorded)

    def version_at(self, stream_id: UUID, at: datetime) -> int:
        """The stream's last version recorded at or before ``at`` (0 if none)."""
        return self.history.version_at(stream_id, at)

    def window(
        self, conversation_id: UUID, flows: list[UUID], first: int, last: int, *, ends: bool
    ) -> list[Entry]:
        """The conversation's versions ``first`` to ``last`` with its flows' events of the
        same span of time, merged as `voxledger log` merges them; ``ends``: ``last`` is the
        conversation's newest version, so its flows' later events belong here too."""
        start = self.history.event(conversation_id, first).timestamp
        end = self.history.event(conversation_id, last).timestamp
        after = {conversation_id: first - 1}
        upto = {conversation_id: last}
        for flow_id in flows:
            after[flow_id] = self.history.version_at(flow_id, start, before=True)
            upto[flow_id] = (
                self.history.last_version(flow_id)
                if ends
                else self.history.version_at(flow_id, end)
            )
        streams = [conversation_id, *(f for f in flows if upto[f] > after[f])]
        return [entry(r) for r in self.history.merged(streams, after=after, upto=upto)]

    def state(self, stream_id: UUID, version: int) -> Stated:
        """The state after event ``version``, rebuilt as `voxledger at` rebuilds it."""
        state = self.travel.state_at(stream_id, version)
        return Stated(state, document(state))

    def changes(self, old: Any, new: Any) -> list[Change]:
        """What changed from one state to another, as `voxledger diff` lists it: every
        event moves the version and the time, so those two are left out."""
        return [c for c in diff(old, new) if c.path not in ("version", "updated_at")]

    def first_version(self, stream_id: UUID, condition: str) -> Found:
        """The first version at which a condition on the state holds (the language of
        `voxledger bisect`), found by folding every event in order: right whether or not
        the condition stays true once it holds. BadInput for a condition that cannot be
        read or names a field the state does not have."""
        return self.travel.bisect(stream_id, Condition(condition), linear=True)

    def newer(self, seen: dict[UUID, int]) -> list[Entry]:
        """Events appended after the versions in ``seen`` (a conversation and its flows),
        flows begun meanwhile included; moves ``seen`` on."""
        return [entry(r) for r in self.history.newer(seen)]

    def head(self) -> int:
        """The position of the newest event in the log."""
        return self.store.head()


def entry(recorded: LoggedEvent) -> Entry:
    """A recorded event as a timeline entry."""
    event = recorded.event
    tone = (
        "error"
        if isinstance(event, _ALARMING)
        else "warn"
        if isinstance(event, _NOTABLE) or getattr(event, "fatal", False)
        else ""
    )
    return Entry(
        position=recorded.position,
        stream_id=event.originator_id,
        stream_type=stream_type(event),
        version=event.originator_version,
        type=type(event).__name__,
        at=event.timestamp,
        summary=summary(event),
        tone=tone,
    )
