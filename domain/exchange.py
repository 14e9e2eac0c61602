"""One incoming chat message, one atomic save: the Engine's `exchange` command.

A channel's bot decides what a message means (a command, an answer, a menu choice) and words
what to say; the Engine hands its `decide` function an `Exchange`: a read-only view of the
conversation and its form, and the one way to act on them. What `decide` does is recorded
on the aggregates in memory (the user's message first, then the form's events, the bot's
reply and what is to be sent) and saved in one transaction. A concurrent writer makes the
whole exchange run again on fresh state, so `decide` must be pure: no I/O, no clock.

A message is known by its id: the same message again returns the first reply and records
nothing, checked once, here, on the loaded conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import Aggregate

from .conversation import Conversation
from .conversation_values import Address, Message, OutboundKind, Role, Status
from .definition_commands import DefinitionCommands
from .errors import InvalidTransition, NotFound, VersionMismatch
from .flow import Flow, FlowState, FlowStatus
from .flow_commands import expire_run
from .flow_definition import FlowDefinition, FlowRegistry
from .flow_reply import FlowReply


def reply_id(message_id: str) -> str:
    """The id of the bot's reply to a message (as `Engine.answer` names it too)."""
    return f"{message_id}:reply"


class Inbound(msgspec.Struct, frozen=True, kw_only=True):
    """A user's message as a channel delivered it, validated by its adapter."""

    message_id: str  # unique in the conversation: what makes a retry harmless
    text: str
    channel: str
    # Where replies go on the channel; None: they go back in the response, nothing to send.
    address: Address | None = None
    reply_to: str | None = None  # the platform's id of this message, for a reply to quote
    participant: str | None = None  # recorded if the exchange opens the conversation
    chat_metadata: dict[str, Any] = {}  # likewise
    metadata: dict[str, Any] = {}  # recorded with the message


class ExchangeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an exchange recorded: the reply (text and choices), the form in progress
    afterwards, the outbound messages queued, and whether anything was recorded at all."""

    conversation_id: UUID
    message_id: str
    version: int = 0  # the conversation's version afterwards
    text: str = ""
    choices: tuple[str, ...] = ()
    flow_id: UUID | None = None
    duplicate: bool = False  # seen before: the first reply, nothing recorded now
    recorded: bool = True  # False: `decide` ignored the message
    opened: bool = False  # the exchange started the conversation
    outbound: tuple[str, ...] = ()


class ConversationClosed(InvalidTransition):
    """The conversation has ended: a chat's next message belongs in a new one."""


class Exchange:
    """What `decide` may read and do for one message: the conversation and the form in
    progress as they stand, and the commands that answer, start, change or end the form and
    queue what to send. Each command returns the form's reply as facts for the bot to word;
    a refused command raises and records nothing."""

    def __init__(
        self,
        conversation: Conversation,
        flow: Flow | None,
        flows: FlowRegistry,
        inbound: Inbound,
        at: datetime,
        *,
        expired: FlowReply | None,
        opened: bool,
        check: Callable[[str], None] = lambda text: None,
        definition_of: Callable[[str, int], FlowDefinition] | None = None,
        recording: Callable[[FlowDefinition, datetime], list[Aggregate]] | None = None,
    ) -> None:
        self._conversation = conversation
        self._check = check  # the Engine's limits on what a message may hold
        self._flow = flow  # the active one
        self._flow_state: FlowState | None = None  # its last state as a value (see `flow`)
        self._flows = flows
        # A run's definition (loaded here, else as the log recorded it), and what records
        # a version in the log with the first run that starts on it: the Engine's.
        self._definition_of = definition_of or flows.get
        self._recording = recording or (lambda definition, at: [])
        self._histories: list[Aggregate] = []
        self.versions_recorded: list[tuple[str, int]] = []
        self._touched: list[Flow] = [flow] if flow is not None else []
        self._at = at
        self.inbound = inbound
        self.expired = expired  # the form that expired as this message arrived
        self.opened = opened
        self._begun = False
        self._ignored = False
        self._reply: tuple[str, tuple[str, ...]] | None = None
        self._queued: list[str] = []

    # -- reading ----------------------------------------------------------------------------

    @property
    def conversation_id(self) -> UUID:
        """The conversation's id."""
        return self._conversation.id

    @property
    def channel(self) -> str:
        """The channel the conversation runs on."""
        return self._conversation.channel

    @property
    def flow(self) -> FlowState | None:
        """The form in progress, as it stands now (None when there is none)."""
        flow = self._flow
        if flow is None:
            return None
        known = self._flow_state
        # A run changes only by its events, each a new version: the value made at this
        # version still holds (a decision asks several times; each value copies the run).
        if known is None or known.id != flow.id or known.version != flow.version:
            known = self._flow_state = flow.state()
        return known

    @property
    def definition(self) -> FlowDefinition | None:
        """The definition the form in progress runs (its own version)."""
        return self._definition(self._flow) if self._flow is not None else None

    @property
    def keyboards(self) -> tuple[str, ...]:
        """The platform's ids of delivered messages whose buttons are still shown."""
        return tuple(self._conversation.keyboards)

    def message(self, message_id: str) -> Message | None:
        """A recorded message of the conversation, by id."""
        position = self._conversation.message_positions.get(message_id)
        return None if position is None else self._conversation.messages[position]

    def newest_messages(self) -> Iterator[Message]:
        """The conversation's messages, the newest first."""
        return reversed(self._conversation.messages)

    # -- acting ------------------------------------------------------------------------------

    def ignore(self) -> None:
        """Record nothing for this message, not even the message (before any command)."""
        if self._begun:
            raise InvalidTransition("a message cannot be ignored once something was recorded")
        self._ignored = True

    def start_flow(
        self, definition: str, mode: str | None = None, *, version: int | None = None
    ) -> FlowReply:
        """Start a form (the definition's latest version unless given) at its first step."""
        chosen = self._flows.get(definition, version)
        self._begin()
        flow = Flow.begin(self.conversation_id, chosen, mode, at=self._at, flow_id=uuid4())
        self._conversation.begin_flow(flow.id, chosen.name, at=self._at)
        reply = FlowReply.of(flow, chosen, accepted=True)  # a prompt hook may fail: before all
        self._flow = flow
        self._touched.append(flow)
        self._histories.extend(self._recording(chosen, self._at))
        # Once saved, the log holds this version, whether this save records it or an
        # earlier one did: the next run on it needs no look at its history.
        self.versions_recorded.append((chosen.name, chosen.version))
        return reply

    def answer(self, text: str, *, expected_step: str | None = None) -> FlowReply:
        """Answer the form's current step (a refused answer is recorded too)."""
        return self._act(lambda f, d: f.answer(d, text, expected_step=expected_step, at=self._at))

    def correct(self, field: str, text: str) -> FlowReply:
        """Change an earlier answer in place (see `Flow.correct`)."""
        return self._act(lambda f, d: f.correct(d, field, text, at=self._at))

    def edit(self, field: str) -> FlowReply:
        """Ask a field again; the form returns where it was afterwards."""
        return self._act(lambda f, d: f.edit(d, field, at=self._at))

    def undo(self) -> FlowReply:
        """Withdraw the last accepted answer and ask its step again."""
        return self._act(lambda f, d: f.undo(d, at=self._at))

    def confirm(self) -> FlowReply:
        """Confirm the summary: the form completes."""
        return self._act(lambda f, d: f.confirm(d, at=self._at))

    def cancel(self, reason: str = "") -> FlowReply:
        """Give up the form where it is."""
        return self._act(lambda f, d: f.cancel(reason, at=self._at))

    def prompt(self) -> FlowReply:
        """Where the form stands: what it asks now (records nothing)."""
        flow = self._require_flow()
        return FlowReply.of(flow, self._definition(flow), accepted=True)

    def reply(
        self, text: str, choices: tuple[str, ...] = (), *, metadata: dict[str, Any] | None = None
    ) -> None:
        """Say this back (once per message): recorded as the bot's message and, on a channel
        that delivers, queued to be sent, with ``choices`` as buttons."""
        if self._reply is not None:
            raise InvalidTransition("a message gets one reply")
        self._check(text)
        self._begin()
        said = dict(metadata or {})
        if choices:  # kept so that a repeated message gets the same buttons back
            said["choices"] = list(choices)
        reply = reply_id(self.inbound.message_id)
        self._conversation.add_message(reply, Role.ASSISTANT, text, said, at=self._at)
        self._reply = (text, tuple(choices))
        inbound = self.inbound
        if inbound.address is not None:
            self._queue(reply, OutboundKind.REPLY, text, choices, reply_to=inbound.reply_to)

    def acknowledge(self, callback_id: str, text: str = "") -> None:
        """Answer a button press (its spinner stops; ``text`` shows briefly)."""
        self._begin()
        if self.inbound.address is not None:
            item_id = f"{self.inbound.message_id}:ack"
            self._queue(item_id, OutboundKind.ACKNOWLEDGE, text, reference=callback_id)

    def close_keyboard(self, platform_message_id: str) -> None:
        """Take the buttons off a message the bot sent (they were used)."""
        self._begin()
        if self.inbound.address is not None:
            item_id = f"{self.inbound.message_id}:close:{platform_message_id}"
            self._queue(item_id, OutboundKind.CLOSE_KEYBOARD, reference=platform_message_id)

    # -- underneath ----------------------------------------------------------------------------

    def _act(self, act: Callable[[Flow, FlowDefinition], Any]) -> FlowReply:
        flow = self._require_flow()
        definition = self._definition(flow)
        self._begin()
        accepted = act(flow, definition) is not False
        if flow.status is not FlowStatus.ACTIVE:
            self._conversation.finish_flow(flow.id, flow.status, at=self._at)
            self._flow = None
        return FlowReply.of(flow, definition, accepted=accepted)

    def _require_flow(self) -> Flow:
        if self._flow is None:
            raise InvalidTransition(f"conversation {self.conversation_id} has no form in progress")
        return self._flow

    def _definition(self, flow: Flow) -> FlowDefinition:
        return self._definition_of(flow.definition, flow.definition_version)

    def _begin(self) -> None:
        """The user's message is recorded before anything it causes."""
        if self._ignored:
            raise InvalidTransition("the message was ignored: nothing more is recorded")
        if not self._begun:
            self._begun = True
            inbound = self.inbound
            self._conversation.add_message(
                inbound.message_id, Role.USER, inbound.text, inbound.metadata, at=self._at
            )

    def _queue(
        self,
        item_id: str,
        kind: OutboundKind,
        text: str = "",
        choices: tuple[str, ...] = (),
        *,
        reply_to: str | None = None,
        reference: str | None = None,
    ) -> None:
        assert self.inbound.address is not None
        self._conversation.queue_outbound(
            item_id,
            kind,
            self.inbound.address,
            text,
            choices,
            reply_to=reply_to,
            reference=reference,
            cause=self.inbound.message_id,
            at=self._at,
        )
        self._queued.append(item_id)

    def _finish(self) -> list[Aggregate]:
        """What to save: nothing if ignored; else the conversation and the forms touched."""
        if self._ignored:
            return []
        self._begin()
        return [self._conversation, *self._touched, *self._histories]

    def _result(self) -> ExchangeResult:
        text, choices = self._reply or ("", ())
        return ExchangeResult(
            conversation_id=self.conversation_id,
            message_id=self.inbound.message_id,
            # An ignored message that would have opened the conversation leaves none.
            version=0 if self._ignored and self.opened else self._conversation.version,
            text=text,
            choices=choices,
            flow_id=self._flow.id if self._flow is not None else None,
            recorded=not self._ignored,
            opened=self.opened and not self._ignored,
            outbound=tuple(self._queued),
        )


Decide = Callable[[Exchange], None]


class ExchangeCommands(DefinitionCommands):
    """The Engine's command for one incoming chat message (see the module's docstring)."""

    def exchange(
        self,
        conversation_id: UUID,
        inbound: Inbound,
        decide: Decide,
        *,
        open_missing: bool = True,
        expected_version: int | None = None,
        at: datetime | None = None,
    ) -> ExchangeResult:
        """Handle one message in one atomic save: load the conversation (opened with this
        id if it has none and ``open_missing``) and its form, record the message and what
        ``decide`` does. A message seen before returns its first reply and records nothing;
        a form found idle past its timeout is expired first (``Exchange.expired`` says so).
        ConversationClosed if the conversation has ended; VersionMismatch, recording
        nothing, if ``expected_version`` is given and the conversation is at another (0: it
        must not exist yet)."""
        self._check_content(inbound.text)
        at = self._now(at)
        outcome: list[ExchangeResult] = []
        exchanges: list[Exchange] = []

        def work() -> list[Aggregate]:
            exchanges.clear()
            opened = False
            try:
                conversation = self._load(conversation_id, Conversation, cached=True)
            except NotFound:
                if not open_missing:
                    raise
                conversation = Conversation.start(
                    inbound.channel,
                    inbound.participant,
                    inbound.chat_metadata,
                    at=at,
                    conversation_id=conversation_id,
                )
                opened = True
            if conversation.status is Status.ENDED:
                raise ConversationClosed(f"conversation {conversation_id} has ended")
            if conversation.has_message(inbound.message_id):
                outcome[:] = [_original(conversation, inbound.message_id)]
                return []
            current = 0 if opened else conversation.version
            if expected_version is not None and expected_version != current:
                raise VersionMismatch(
                    f"conversation {conversation_id} is at version {current}, "
                    f"not {expected_version}",
                    current,
                )
            flow, expired = None, None
            touched: list[Aggregate] = []
            if conversation.active_flow_id is not None:
                flow = self._load(conversation.active_flow_id, Flow, cached=True)
                if flow.is_idle_at(at):
                    expired = expire_run(flow, conversation, at)
                    touched, flow = [flow], None
            exchange = Exchange(
                conversation,
                flow,
                self.flows,
                inbound,
                at,
                expired=expired,
                opened=opened,
                check=self._check_content,
                definition_of=self.definition,
                recording=self._recording,
            )
            exchanges[:] = [exchange]
            decide(exchange)
            saved = exchange._finish()
            outcome[:] = [exchange._result()]
            if not saved:
                return []
            return [*saved, *(f for f in touched if f not in saved)]

        self._transact(work)
        for exchange in exchanges:
            self.recorded_versions.update(exchange.versions_recorded)
        return outcome[0]


def _original(conversation: Conversation, message_id: str) -> ExchangeResult:
    """The reply first given to a message, as it was recorded."""
    position = conversation.message_positions.get(reply_id(message_id))
    text, choices = "", ()
    if position is not None:
        reply = conversation.messages[position]
        text, choices = reply.content, tuple(reply.metadata.get("choices", ()))
    return ExchangeResult(
        conversation_id=conversation.id,
        message_id=message_id,
        version=conversation.version,
        text=text,
        choices=choices,
        flow_id=conversation.active_flow_id,
        duplicate=True,
        recorded=False,
    )
