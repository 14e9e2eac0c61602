"""The Engine: the command and query API that bots and voice agents embed.

Every command reads the same way: load the aggregate, call one method, save (commands.py
says how; the commands themselves are in conversation_commands.py, flow_commands.py,
exchange.py (one chat message, one save) and outbox_commands.py (delivery and notices)).
Queries read one conversation or run, now or as it was. The clock, the event store and the
wording of recorded replies come in from the composition root (adapters/bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from uuid import UUID

from .action_commands import ActionCommands
from .conversation import Conversation
from .conversation_commands import ConversationCommands
from .conversation_values import ConversationState
from .errors import NotFound
from .events import HistoryEntry
from .exchange import ExchangeCommands
from .flow import Flow, FlowState
from .flow_commands import FlowCommands
from .flow_definition import FlowDefinition, FlowRegistry
from .flow_reply import FlowReply, own_words
from .outbox_commands import Notice, OutboxCommands, own_notice
from .store import Store


class Engine(ConversationCommands, FlowCommands, ActionCommands, ExchangeCommands, OutboxCommands):
    """Commands and queries on conversations and their flows, by id."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        flows: FlowRegistry | None = None,
        phrase: Callable[[FlowReply], str] = own_words,
        notice: Callable[[Notice], str] = own_notice,
        max_retries: int = 8,
        backoff: Callable[[int], None] | None = None,
        max_content_chars: int = 64_000,
        max_context_bytes: int = 256_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.flows = flows if flows is not None else FlowRegistry()
        self.recorded_versions: set[tuple[str, int]] = set()
        self.definitions_from_log: dict[tuple[str, int], FlowDefinition] = {}
        self.phrase = phrase
        self.notice = notice
        self.backoff = backoff
        self.max_retries = max_retries
        self.max_content_chars = max_content_chars
        self.max_context_bytes = max_context_bytes

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sweep ------------------------------------------------------------------------------

    def expire_idle(
        self,
        now: datetime | None = None,
        *,
        conversation_idle_s: float | None = None,
        flows: Iterable[UUID] | None = None,
        conversations: Iterable[UUID] | None = None,
    ) -> list[UUID]:
        """Expire the flows idle past their timeout and, given a limit, end the conversations
        idle longer than it; the ids that expired. ``flows`` and ``conversations`` are the
        candidates (those a read model says are due); without them, every run and every
        conversation in the store is looked at. Each one judges its own idleness."""
        now = self._now(now)
        runs = self.store.ids_of(Flow.Started) if flows is None else flows
        expired = [flow_id for flow_id in runs if self.expire_flow(flow_id, at=now)]
        if conversation_idle_s is not None:
            if conversations is None:
                conversations = self.store.ids_of(Conversation.Started)
            expired += [
                conversation_id
                for conversation_id in conversations
                if self.end_idle_conversation(conversation_id, conversation_idle_s, at=now)
            ]
        return expired

    # -- queries ----------------------------------------------------------------------------

    def get_conversation(
        self, conversation_id: UUID, *, version: int | None = None, at: datetime | None = None
    ) -> ConversationState:
        """The conversation now, at a version, or as it was at a moment (time travel)."""
        if at is not None:
            version = self._version_at(conversation_id, at)
        return self._load(conversation_id, Conversation, version).state()

    def history(
        self, aggregate_id: UUID, *, since_version: int | None = None
    ) -> list[HistoryEntry]:
        """Every recorded event of a conversation or flow, with its version and time."""
        entries = [HistoryEntry.of(e) for e in self.store.stream(aggregate_id, gt=since_version)]
        if not entries and since_version is None:
            raise NotFound(f"no conversation or flow {aggregate_id}")
        return entries

    def get_flow(
        self, flow_id: UUID, *, version: int | None = None, at: datetime | None = None
    ) -> FlowState:
        """A flow run now, at a version, or as it was at a moment."""
        if at is not None:
            version = self._version_at(flow_id, at)
        return self._load(flow_id, Flow, version).state()

    def flow_prompt(self, flow_id: UUID) -> FlowReply:
        """Where the run stands: what to ask the user now (how a restarted bot resumes)."""
        flow = self._load(flow_id, Flow)
        return FlowReply.of(flow, self._definition_of(flow), accepted=True)

    def _version_at(self, aggregate_id: UUID, at: datetime) -> int:
        version = self.store.version_at(aggregate_id, at)
        if not version:
            raise NotFound(f"{aggregate_id} did not exist yet at {at.isoformat()}")
        return version
