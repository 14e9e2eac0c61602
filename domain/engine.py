"""The Engine: the command and query API that bots and voice agents embed.

Every command reads the same way: load the aggregate, call one method, save. A save that
lost a race (another writer appended first) is retried on a fresh copy a bounded number of
times. The clock and the event store come in from the composition root (adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import Aggregate

from .conversation import Conversation, ConversationState, Role, Status
from .errors import Conflict, Expired, NotFound, ValidationFailed
from .flow import Flow, FlowState, FlowStatus
from .flow_definition import FlowDefinition, FlowRegistry
from .intake import builtin_registry

A = TypeVar("A", bound=Aggregate)

_EVENT_META = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


class Store(Protocol):
    """What the Engine needs from persistence (an adapter provides it)."""

    def load(
        self, aggregate_id: UUID, version: int | None = None, *, cached: bool = False
    ) -> Aggregate:
        """The aggregate at its latest or a given version; NotFound if it has no events.
        ``cached``: for a command, which may get a stale copy (its save then conflicts)."""
        ...

    def save(self, *aggregates: Aggregate) -> int | None:
        """Append the aggregates' new events atomically; Conflict on a stale version."""
        ...

    def stream(
        self, aggregate_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> Iterator[Any]:
        """The stored events of one aggregate in version order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def ids_of(self, created_event: type) -> Iterator[UUID]:
        """The ids of every aggregate whose first event is of this class."""
        ...

    def version_at(self, aggregate_id: UUID, at: datetime) -> int:
        """The last version recorded at or before ``at``; 0 if none."""
        ...


class HistoryEntry(msgspec.Struct, frozen=True):
    """One recorded event of an aggregate, as operators read it."""

    version: int
    timestamp: datetime
    type: str
    data: dict[str, Any]


class FlowReply(msgspec.Struct, frozen=True):
    """What a flow says back after a command: the next prompt, or why an answer was refused."""

    flow_id: UUID
    accepted: bool
    status: FlowStatus
    step: str | None
    prompt: str | None
    reason: str | None = None
    data: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The reply as one message for the user."""
        if self.status is FlowStatus.COMPLETED:
            return "Thank you, all done. Your answers are saved."
        if self.status is FlowStatus.CANCELLED:
            return "Cancelled. Send /start to begin again."
        if self.status is FlowStatus.EXPIRED:
            return "This form expired after a long pause. Send /start to begin again."
        return "\n".join(part for part in (self.reason, self.prompt) if part)


class Engine:
    """Commands and queries on conversations and their flows, by id."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        flows: FlowRegistry | None = None,
        max_retries: int = 8,
        backoff: Callable[[int], None] | None = None,
        max_content_chars: int = 64_000,
        max_context_bytes: int = 256_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.flows = flows or builtin_registry()
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

    # -- commands ----------------------------------------------------------------------------

    def start_conversation(
        self,
        channel: str,
        participant: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        conversation_id: UUID | None = None,
        at: datetime | None = None,
    ) -> UUID:
        """Open a conversation and return its id (give one to make the start idempotent)."""
        conversation = Conversation.start(
            channel,
            participant,
            metadata,
            at=self._now(at),
            conversation_id=conversation_id or uuid4(),
        )
        try:
            self.store.save(conversation)
        except Conflict:
            raise Conflict(f"conversation {conversation.id} already exists") from None
        return conversation.id

    def begin_connecting(
        self, conversation_id: UUID, provider: str, *, at: datetime | None = None
    ) -> None:
        """The transport starts to connect."""
        self._update(conversation_id, Conversation.begin_connecting, provider, at=at)

    def connect(
        self,
        conversation_id: UUID,
        provider: str,
        connection_id: str,
        latency_ms: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The transport is up."""
        self._update(
            conversation_id, Conversation.connect, provider, connection_id, latency_ms, at=at
        )

    def disconnect(
        self, conversation_id: UUID, reason: str = "", *, at: datetime | None = None
    ) -> None:
        """The transport went away."""
        self._update(conversation_id, Conversation.disconnect, reason, at=at)

    def record_error(
        self, conversation_id: UUID, error: str, *, fatal: bool = False, at: datetime | None = None
    ) -> None:
        """Record an error; a fatal one moves the conversation to the error status."""
        self._update(conversation_id, Conversation.record_error, error, fatal=fatal, at=at)

    def record_traffic(
        self, conversation_id: UUID, *, at: datetime | None = None, **counts: int
    ) -> None:
        """Count messages and bytes sent and received over the transport."""
        self._update(conversation_id, Conversation.record_traffic, at=at, **counts)

    def listen(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The microphone opens."""
        self._update(conversation_id, Conversation.listen, at=at)

    def stop_listening(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The microphone closes."""
        self._update(conversation_id, Conversation.stop_listening, at=at)

    def add_message(
        self,
        conversation_id: UUID,
        role: Role | str,
        content: str,
        *,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        audio_duration_s: float | None = None,
        complete: bool = True,
        at: datetime | None = None,
    ) -> str:
        """Record a message and return its id."""
        self._check_content(content)
        message_id = message_id or uuid4().hex
        self._update(
            conversation_id,
            Conversation.add_message,
            message_id,
            role,
            content,
            metadata,
            audio_duration_s,
            complete=complete,
            at=at,
        )
        return message_id

    def complete_message(
        self,
        conversation_id: UUID,
        message_id: str,
        content: str | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """A streamed message is finished."""
        if content is not None:
            self._check_content(content)
        self._update(conversation_id, Conversation.complete_message, message_id, content, at=at)

    def start_turn(
        self,
        conversation_id: UUID,
        user_message_id: str | None = None,
        *,
        turn_id: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """The assistant starts working on an answer; returns the turn id."""
        turn_id = turn_id or uuid4().hex
        self._update(conversation_id, Conversation.start_turn, turn_id, user_message_id, at=at)
        return turn_id

    def start_response(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The assistant starts answering."""
        self._update(conversation_id, Conversation.start_response, at=at)

    def complete_turn(
        self,
        conversation_id: UUID,
        assistant_message_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The assistant has answered; the turn's response time is counted."""
        self._update(conversation_id, Conversation.complete_turn, assistant_message_id, at=at)

    def interrupt_turn(
        self, conversation_id: UUID, reason: str = "barge-in", *, at: datetime | None = None
    ) -> None:
        """The user cut the assistant off."""
        self._update(conversation_id, Conversation.interrupt_turn, reason, at=at)

    def record_speech_started(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The user started speaking."""
        self._update(conversation_id, Conversation.record_speech_started, at=at)

    def record_speech_ended(
        self,
        conversation_id: UUID,
        duration_s: float,
        peak_dbfs: float | None = None,
        mean_dbfs: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The user stopped speaking."""
        self._update(
            conversation_id,
            Conversation.record_speech_ended,
            duration_s,
            peak_dbfs,
            mean_dbfs,
            at=at,
        )

    def record_user_turn_ended(
        self, conversation_id: UUID, utterances: int = 1, *, at: datetime | None = None
    ) -> None:
        """The user finished their turn."""
        self._update(conversation_id, Conversation.record_user_turn_ended, utterances, at=at)

    def record_silence(
        self, conversation_id: UUID, silence_s: float, *, at: datetime | None = None
    ) -> None:
        """The user has been silent while the conversation listens."""
        self._update(conversation_id, Conversation.record_silence, silence_s, at=at)

    def record_levels(
        self,
        conversation_id: UUID,
        input_level_db: float | None = None,
        output_level_db: float | None = None,
        latency_ms: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """Audio levels and latency."""
        self._update(
            conversation_id,
            Conversation.record_levels,
            input_level_db,
            output_level_db,
            latency_ms,
            at=at,
        )

    def record_usage(
        self,
        conversation_id: UUID,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
        audio_seconds: float = 0.0,
        at: datetime | None = None,
    ) -> None:
        """Tokens, cost and synthesised audio spent by the assistant."""
        self._update(
            conversation_id,
            Conversation.record_usage,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
            audio_seconds=audio_seconds,
            at=at,
        )

    def update_context(
        self,
        conversation_id: UUID,
        values: dict[str, Any] | None = None,
        removed: Sequence[str] = (),
        *,
        at: datetime | None = None,
    ) -> None:
        """Set and remove context keys (JSON-like values, within the size limit)."""
        self._check_context(values or {})
        self._update(conversation_id, Conversation.update_context, values, list(removed), at=at)

    def end(self, conversation_id: UUID, reason: str = "", *, at: datetime | None = None) -> None:
        """End the conversation for good."""
        self._update(conversation_id, Conversation.end, reason, at=at)

    # -- flows ----------------------------------------------------------------------------------

    def start_flow(
        self,
        conversation_id: UUID,
        definition: str,
        mode: str | None = None,
        *,
        version: int | None = None,
        flow_id: UUID | None = None,
        at: datetime | None = None,
    ) -> FlowReply:
        """Start a form in a conversation (the latest definition version unless given)."""
        chosen = self.flows.get(definition, version)
        at = self._now(at)
        flow_id = flow_id or uuid4()
        started: list[Flow] = []

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            flow = Flow.begin(conversation_id, chosen, mode, at=at, flow_id=flow_id)
            conversation.begin_flow(flow.id, chosen.name, at=at)
            started[:] = [flow]
            return [conversation, flow]

        self._transact(work)
        return self._reply(started[0], chosen, accepted=True)

    def answer(
        self,
        flow_id: UUID,
        text: str,
        *,
        message_id: str | None = None,
        record_messages: bool = False,
        expected_step: str | None = None,
        at: datetime | None = None,
    ) -> FlowReply:
        """Answer the current step. With ``record_messages`` the user's text and the reply
        are added to the conversation in the same atomic save as the answer; with
        ``expected_step`` the answer is refused if the run is no longer at that step."""
        self._check_content(text)
        return self._flow_command(
            flow_id,
            lambda flow, definition, at: flow.answer(
                definition, text, expected_step=expected_step, at=at
            ),
            at=at,
            said=(message_id or uuid4().hex, text) if record_messages else None,
        )

    def edit(self, flow_id: UUID, field: str, *, at: datetime | None = None) -> FlowReply:
        """Ask a field again; the run returns where it was afterwards."""
        return self._flow_command(flow_id, lambda f, d, at: f.edit(d, field, at=at), at=at)

    def undo(self, flow_id: UUID, *, at: datetime | None = None) -> FlowReply:
        """Withdraw the last accepted answer and ask its step again."""
        return self._flow_command(flow_id, lambda f, d, at: f.undo(d, at=at), at=at)

    def confirm(self, flow_id: UUID, *, at: datetime | None = None) -> FlowReply:
        """Confirm the summary: the run completes."""
        return self._flow_command(flow_id, lambda f, d, at: f.confirm(d, at=at), at=at)

    def cancel(self, flow_id: UUID, reason: str = "", *, at: datetime | None = None) -> FlowReply:
        """Give up the run where it is."""
        return self._flow_command(flow_id, lambda f, d, at: f.cancel(reason, at=at), at=at)

    def expire_idle(
        self, now: datetime | None = None, *, conversation_idle_s: float | None = None
    ) -> list[UUID]:
        """Record an expiry for every flow idle past its timeout and, if a limit is given,
        end every conversation idle longer than it. Returns the ids that expired."""
        now = self._now(now)
        expired: list[UUID] = []
        for flow_id in self.store.ids_of(Flow.Started):
            if self._load(flow_id, Flow).is_idle_at(now):
                try:
                    self._flow_command(flow_id, _nothing, at=now)
                except Expired:
                    expired.append(flow_id)
        if conversation_idle_s is not None:
            for conversation_id in self.store.ids_of(Conversation.Started):
                conversation = self._load(conversation_id, Conversation)
                idle_s = (now - conversation.modified_on).total_seconds()
                if conversation.status is not Status.ENDED and idle_s > conversation_idle_s:
                    self.end(conversation_id, f"expired after {idle_s:.0f} s idle", at=now)
                    expired.append(conversation_id)
        return expired

    def _flow_command(
        self,
        flow_id: UUID,
        act: Callable[[Flow, FlowDefinition, datetime], Any],
        *,
        at: datetime | None,
        said: tuple[str, str] | None = None,
    ) -> FlowReply:
        """Run one command on a flow and its conversation, saved together. A run found idle
        past its timeout is expired instead, and the command refused."""
        at = self._now(at)
        outcome: list[Any] = []

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            conversation = self._load(flow.conversation_id, Conversation, cached=True)
            if flow.is_idle_at(at):  # expiring needs no definition: any run can expire
                flow.expire(at=at)
                conversation.finish_flow(flow.id, FlowStatus.EXPIRED, at=at)
                outcome[:] = [None]
                return [conversation, flow]
            definition = self._definition_of(flow)
            if said is not None:
                conversation.add_message(said[0], Role.USER, said[1], at=at)
            accepted = act(flow, definition, at) is not False
            if flow.status is not FlowStatus.ACTIVE:
                conversation.finish_flow(flow.id, flow.status, at=at)
            reply = self._reply(flow, definition, accepted=accepted)
            if said is not None:
                conversation.add_message(f"{said[0]}:reply", Role.ASSISTANT, reply.text, at=at)
            outcome[:] = [reply]
            return [conversation, flow]

        self._transact(work)
        if outcome[0] is None:
            raise Expired(f"flow {flow_id} expired after being idle; start it again")
        return outcome[0]

    def _definition_of(self, flow: Flow) -> FlowDefinition:
        return self.flows.get(flow.definition, flow.definition_version)

    @staticmethod
    def _reply(flow: Flow, definition: FlowDefinition, *, accepted: bool) -> FlowReply:
        reason = None
        if not accepted and flow.rejections:
            reason = flow.rejections[-1].reason
        prompt = None
        if flow.status is FlowStatus.ACTIVE and flow.step is not None:
            prompt = definition.prompt(flow.step, flow.answers, flow.mode)
            if (
                definition.step(flow.step).kind == "confirm"
                and flow.pending_events
                and isinstance(flow.pending_events[-1], Flow.ConfirmationDeclined)
            ):
                prompt = "What would you like to change? Send /edit and a field: " + ", ".join(
                    flow.answers
                )
        return FlowReply(
            flow_id=flow.id,
            accepted=accepted,
            status=flow.status,
            step=flow.step,
            prompt=prompt,
            reason=reason,
            data=dict(flow.answers) if flow.status is FlowStatus.COMPLETED else None,
        )

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
        entries = [_entry(e) for e in self.store.stream(aggregate_id, gt=since_version)]
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
        return self._reply(flow, self._definition_of(flow), accepted=True)

    def _version_at(self, aggregate_id: UUID, at: datetime) -> int:
        version = self.store.version_at(aggregate_id, at)
        if not version:
            raise NotFound(f"{aggregate_id} did not exist yet at {at.isoformat()}")
        return version

    # -- the one way every command runs -------------------------------------------------------

    def _update(
        self,
        aggregate_id: UUID,
        command: Callable[..., None],
        *args: Any,
        at: datetime | None,
        **kwargs: Any,
    ) -> None:
        at = self._now(at)

        def work() -> list[Aggregate]:
            conversation = self._load(aggregate_id, Conversation, cached=True)
            command(conversation, *args, at=at, **kwargs)
            return [conversation]

        self._transact(work)

    def _transact(self, work: Callable[[], list[Aggregate]]) -> None:
        """Run ``work`` on fresh copies and save what it changed in one transaction; when a
        concurrent writer got there first, run it again on the newer state."""
        for attempt in range(self.max_retries + 1):
            aggregates = work()
            try:
                self.store.save(*aggregates)
                return
            except Conflict:
                if attempt == self.max_retries:
                    ids = ", ".join(str(a.id) for a in aggregates)
                    raise Conflict(f"{ids}: concurrent writers won {attempt + 1} times") from None
                if self.backoff is not None:
                    self.backoff(attempt)

    def _load(
        self, aggregate_id: UUID, kind: type[A], version: int | None = None, *, cached: bool = False
    ) -> A:
        aggregate = self.store.load(aggregate_id, version, cached=cached)
        if not isinstance(aggregate, kind):
            raise NotFound(f"{aggregate_id} is not a {kind.__name__.lower()}")
        return aggregate

    def _now(self, at: datetime | None) -> datetime:
        if at is None:
            return self.clock()
        if at.tzinfo is None:
            raise ValidationFailed("times must carry a time zone (use UTC)")
        return at

    def _check_context(self, values: dict[str, Any]) -> None:
        try:
            size = len(msgspec.json.encode(values))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValidationFailed(f"context values must be JSON-like: {e}") from None
        if size > self.max_context_bytes:
            raise ValidationFailed(
                f"context update is {size} bytes, over the limit of {self.max_context_bytes}"
            )

    def _check_content(self, content: str) -> None:
        if not isinstance(content, str):
            raise ValidationFailed("message content must be text")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed("message content is not valid UTF-8 text") from None
        if len(content) > self.max_content_chars:
            raise ValidationFailed(
                f"message content is {len(content)} characters, "
                f"over the limit of {self.max_content_chars}"
            )


def _nothing(flow: Flow, definition: FlowDefinition, at: datetime) -> None:
    """A command that changes nothing (used to let the idle check expire a run)."""


def _entry(event: Any) -> HistoryEntry:
    return HistoryEntry(
        version=event.originator_version,
        timestamp=event.timestamp,
        type=type(event).__name__,
        data={k: v for k, v in vars(event).items() if k not in _EVENT_META},
    )
