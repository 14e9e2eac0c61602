"""The chat bot, whatever the transport: an incoming message becomes Engine commands.

One chat (a channel and a chat id) is one conversation whose id is derived from the two, so
no lookup table is needed and a restarted process finds the conversation again. Every chat
message is recorded under the transport's message id and the bot's reply under
``f"{message_id}:reply"`` (the name `Engine.answer(record_messages=True)` gives it): a message
seen before gets its original reply back and records nothing new.

The bot is synchronous, like the Engine. Messages to one chat must be handled one at a time:
the HTTP server runs `handle_chat` through `AsyncEngine.run`, which serialises by the chat's
conversation id; across processes the conversation's message-id check and the store's
optimistic concurrency stop a second writer, and the bot then answers with the first reply.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID, uuid5

import msgspec
import structlog

from ...domain.conversation import ConversationState, Message, Role, Status
from ...domain.engine import Engine
from ...domain.errors import (
    BadInput,
    CodeFailed,
    Conflict,
    FlowExpired,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    VoxledgerError,
)
from ...domain.flow import FlowStatus
from ...domain.flow_definition import FlowDefinition, show_answer
from .wording import CODE_FAILED, EXPIRED, reply_text

log = structlog.get_logger("voxledger.chat")

# Fixed for good: changing it would orphan every chat's conversation.
CHAT_NAMESPACE = UUID("53444f8a-73fa-4e34-9f76-c48946e69f20")

COMMANDS = "Commands: /start, /cancel, /back (undo the last answer), /edit FIELD, /status."


def conversation_id_for(channel: str, chat_id: str, generation: int = 1) -> UUID:
    """The id of a chat's conversation. A chat whose conversation was ended continues in
    the next generation's conversation, whose id is derived the same way."""
    key = f"{channel}:{chat_id}" if generation == 1 else f"{channel}:{chat_id}#{generation}"
    return uuid5(CHAT_NAMESPACE, key)


def reply_id(message_id: str) -> str:
    """The id of the bot's reply to a message (as `Engine.answer` names it)."""
    return f"{message_id}:reply"


class Incoming(msgspec.Struct, frozen=True, kw_only=True):
    """A message that arrived over a transport, already validated by its adapter."""

    channel: str  # telegram, terminal, api...
    chat_id: str
    message_id: str  # unique within the chat: the key that makes a retry harmless
    text: str
    user_id: str | None = None
    participant: str | None = None  # a name for people reading the conversation
    choice: bool = False  # a menu button was pressed (not typed text)
    at: datetime | None = None  # None: the engine's clock


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the bot says back, and where the chat stands afterwards."""

    conversation_id: UUID
    message_id: str  # the message this answers
    text: str
    choices: tuple[str, ...] = ()  # menu options to offer as buttons
    flow_id: UUID | None = None  # the flow in progress afterwards
    duplicate: bool = False  # the message was seen before: this is the original reply


class Command(NamedTuple):
    """A slash command and the text after it."""

    name: str
    argument: str


class Outcome(NamedTuple):
    """The reply a command produced, before it is recorded."""

    text: str
    choices: tuple[str, ...] = ()
    flow_id: UUID | None = None


def parse_command(text: str) -> Command | None:
    """`/edit date` -> ("edit", "date"); `/start@SomeBot` -> ("start", ""); text -> None."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    head, _, rest = stripped.partition(" ")
    return Command(head[1:].partition("@")[0].casefold(), rest.strip())


class ChatBot:
    """Runs one flow definition as a chat: a menu of its modes, slash commands, answers."""

    def __init__(self, engine: Engine, flow: str = "intake", *, reply_wait_s: float = 2.0):
        self.engine = engine
        self.flow = flow
        self.definition: FlowDefinition = engine.flows.latest(flow)  # NotFound if unknown
        # How long a duplicate waits for the reply another process is still writing.
        self.reply_wait_s = reply_wait_s

    # -- entry points ------------------------------------------------------------------------

    def handle_chat(self, chat_key: UUID, message: Incoming) -> Reply:
        """Answer a message in its chat's conversation, starting the conversation if new.
        ``chat_key`` is `conversation_id_for(message.channel, message.chat_id)`: the id the
        caller serialises on."""
        if chat_key != conversation_id_for(message.channel, message.chat_id):
            raise BadInput(f"{chat_key} is not the key of {message.channel} chat {message.chat_id}")
        return self._handle(self._open(message), message)

    def handle(self, conversation_id: UUID, message: Incoming) -> Reply:
        """Answer a message in an existing conversation (NotFound if there is none)."""
        return self._handle(self.engine.get_conversation(conversation_id), message)

    def where(self, channel: str, chat_id: str) -> Reply:
        """Where a chat stands now, as the bot would say it (how a restarted terminal
        resumes); records nothing."""
        generation, state = self._current(channel, chat_id)
        if state is None:
            conversation_id = conversation_id_for(channel, chat_id, generation)
            return Reply(conversation_id=conversation_id, message_id="", **self._menu()._asdict())
        return Reply(conversation_id=state.id, message_id="", **self._where(state)._asdict())

    # -- one message ---------------------------------------------------------------------------

    def _current(self, channel: str, chat_id: str) -> tuple[int, ConversationState | None]:
        """The chat's latest generation that has not ended, and its state (None: not
        started yet)."""
        generation = 1
        while True:
            try:
                state = self.engine.get_conversation(
                    conversation_id_for(channel, chat_id, generation)
                )
            except NotFound:
                return generation, None
            if state.status is not Status.ENDED:
                return generation, state
            generation += 1

    def _open(self, message: Incoming) -> ConversationState:
        """The chat's open conversation: found, or started with the id derived from it."""
        generation, state = self._current(message.channel, message.chat_id)
        if state is not None:
            return state
        conversation_id = conversation_id_for(message.channel, message.chat_id, generation)
        metadata: dict[str, Any] = {"chat_id": message.chat_id}
        if message.user_id is not None:
            metadata["user_id"] = message.user_id
        if generation > 1:
            metadata["generation"] = generation
        # Conflict: another process started it a moment ago, so it is found.
        with suppress(Conflict):
            self.engine.start_conversation(
                message.channel,
                message.participant,
                metadata,
                conversation_id=conversation_id,
                at=message.at,
            )
        return self.engine.get_conversation(conversation_id)

    def _handle(self, state: ConversationState, message: Incoming) -> Reply:
        if _find(state, message.message_id) is not None:
            return self._original(state, message.message_id)
        try:
            return self._respond(state, message)
        except (ValidationFailed, Conflict):
            # Another process may have recorded this very message after we read the state:
            # then the message-id check refused ours, and its reply is the one to give.
            state = self.engine.get_conversation(state.id)
            if _find(state, message.message_id) is None:
                raise
            return self._original(state, message.message_id)

    def _respond(self, state: ConversationState, message: Incoming) -> Reply:
        command = None if message.choice else parse_command(message.text)
        flow_id = state.active_flow_id
        if command is None and not message.choice and flow_id is not None:
            try:
                # The user's text, the answer and the reply: one atomic save.
                answered = self.engine.answer(
                    flow_id,
                    message.text,
                    message_id=message.message_id,
                    record_messages=True,
                    at=message.at,
                )
            except FlowExpired:
                # The engine recorded the expiry instead; tell the user, and record that.
                return self._exchange(state, message, lambda: Outcome(EXPIRED, self._modes))
            except CodeFailed as failed:
                # The answer recorded nothing: apologise, and let the user try again.
                _log_failure(failed, state.id)
                return self._exchange(state, message, lambda: Outcome(CODE_FAILED, (), flow_id))
            active = answered.status is FlowStatus.ACTIVE
            return Reply(
                conversation_id=state.id,
                message_id=message.message_id,
                text=reply_text(answered),
                flow_id=flow_id if active else None,
            )
        return self._exchange(state, message, lambda: self._act(state, command, message))

    def _exchange(
        self, state: ConversationState, message: Incoming, act: Callable[[], Outcome]
    ) -> Reply:
        """Record the user's message, act, record the reply. The user's message goes first:
        once it is recorded, a retry of the same message never acts again."""
        self.engine.add_message(
            state.id, Role.USER, message.text, message_id=message.message_id, at=message.at
        )
        outcome = self._refusal_as_reply(state, act)
        self._record_reply(state.id, message.message_id, outcome, message.at)
        return Reply(conversation_id=state.id, message_id=message.message_id, **outcome._asdict())

    def _refusal_as_reply(self, state: ConversationState, act: Callable[[], Outcome]) -> Outcome:
        try:
            return act()
        except FlowExpired:
            return Outcome(EXPIRED, self._modes)
        except CodeFailed as failed:
            _log_failure(failed, state.id)
            return Outcome(CODE_FAILED, (), self.engine.get_conversation(state.id).active_flow_id)
        except VoxledgerError as refused:
            # Anything else the engine refused: say why, then where the chat stands.
            fresh = self.engine.get_conversation(state.id)
            here = self._where(fresh)
            return here._replace(text=f"{refused}\n{here.text}")

    def _record_reply(
        self, conversation_id: UUID, message_id: str, outcome: Outcome, at: datetime | None
    ) -> None:
        self.engine.add_message(
            conversation_id,
            Role.ASSISTANT,
            outcome.text,
            message_id=reply_id(message_id),
            # Kept so that a duplicate gets the same buttons as well as the same text.
            metadata={"choices": list(outcome.choices)} if outcome.choices else None,
            at=at,
        )

    def _original(self, state: ConversationState, message_id: str) -> Reply:
        """The reply first given to a message. If its writer is still at work in another
        process, wait for it; if that writer died between the message and the reply, answer
        with where the chat stands now, once, and keep that as the reply."""
        deadline = time.monotonic() + self.reply_wait_s
        while (reply := _find(state, reply_id(message_id))) is None:
            if time.monotonic() >= deadline:
                outcome = self._where(state)
                try:
                    self._record_reply(state.id, message_id, outcome, None)
                except ValidationFailed:
                    state = self.engine.get_conversation(state.id)
                    continue  # the late writer finished after all: its reply wins
                return Reply(
                    conversation_id=state.id,
                    message_id=message_id,
                    duplicate=True,
                    **outcome._asdict(),
                )
            time.sleep(0.05)
            state = self.engine.get_conversation(state.id)
        return Reply(
            conversation_id=state.id,
            message_id=message_id,
            text=reply.content,
            choices=tuple(reply.metadata.get("choices", ())),
            flow_id=state.active_flow_id,
            duplicate=True,
        )

    # -- what each message does ---------------------------------------------------------------

    def _act(self, state: ConversationState, command: Command | None, message: Incoming) -> Outcome:
        flow_id, at = state.active_flow_id, message.at
        if message.choice:
            return self._choose(state, message.text, at)
        if command is None:  # plain text with no flow in progress: a menu choice, or hello
            mode = self._mode_named(message.text)
            return self._menu("Hello!") if mode is None else self._begin(state.id, mode, at)
        name, argument = command
        if name == "start":
            return self._start(state, argument, at)
        if name == "help":
            return self._menu()
        if flow_id is None:
            known = name in ("cancel", "back", "edit", "status")
            return self._menu("No form is in progress." if known else f"Unknown command /{name}.")
        if name == "cancel":
            cancelled = self.engine.cancel(flow_id, "/cancel", at=at)
            return Outcome(reply_text(cancelled), self._modes)
        if name == "back":
            return self._undo(flow_id, at)
        if name == "edit":
            return self._edit(flow_id, argument, at)
        if name == "status":
            return self._status(flow_id)
        prompt = reply_text(self.engine.flow_prompt(flow_id))
        return Outcome(f"Unknown command /{name}. {COMMANDS}\n{prompt}", (), flow_id)

    def _start(self, state: ConversationState, argument: str, at: datetime | None) -> Outcome:
        """/start: cancel a form in progress, then offer the menu (or start the mode named)."""
        prefix = ""
        if state.active_flow_id is not None:
            self._stop(state.active_flow_id, "restarted with /start", at)
            prefix = "The form in progress was cancelled."
        if not self._modes:
            return self._begin(state.id, None, at, prefix)
        if not argument:
            return self._menu(prefix)
        mode = self._mode_named(argument)
        if mode is None:
            return self._menu(_lines(prefix, f"There is no {argument!r} mode."))
        return self._begin(state.id, mode, at, prefix)

    def _choose(self, state: ConversationState, text: str, at: datetime | None) -> Outcome:
        """A menu button: start the flow in that mode, unless one is already running."""
        if state.active_flow_id is not None:
            prompt = reply_text(self.engine.flow_prompt(state.active_flow_id))
            note = "A form is already in progress (send /start to begin again)."
            return Outcome(f"{note}\n{prompt}", (), state.active_flow_id)
        mode = self._mode_named(text)
        if mode is None and self._modes:
            return self._menu(f"There is no {text!r} choice.")
        return self._begin(state.id, mode, at)

    def _begin(
        self, conversation_id: UUID, mode: str | None, at: datetime | None, prefix: str = ""
    ) -> Outcome:
        started = self.engine.start_flow(conversation_id, self.flow, mode, at=at)
        return Outcome(_lines(prefix, reply_text(started)), (), started.flow_id)

    def _stop(self, flow_id: UUID, reason: str, at: datetime | None) -> None:
        # Expired or not active: it ended on its own meanwhile, nothing left to stop.
        with suppress(FlowExpired, InvalidTransition):
            self.engine.cancel(flow_id, reason, at=at)

    def _undo(self, flow_id: UUID, at: datetime | None) -> Outcome:
        try:
            return Outcome(reply_text(self.engine.undo(flow_id, at=at)), (), flow_id)
        except InvalidTransition:
            prompt = reply_text(self.engine.flow_prompt(flow_id))
            return Outcome(f"Nothing to undo: this is the first question.\n{prompt}", (), flow_id)

    def _edit(self, flow_id: UUID, field: str, at: datetime | None) -> Outcome:
        if not field:
            answered = ", ".join(self.engine.get_flow(flow_id).answers)
            prompt = reply_text(self.engine.flow_prompt(flow_id))
            ask = f"Send /edit and a field: {answered}." if answered else "Nothing to edit yet."
            return Outcome(f"{ask}\n{prompt}", (), flow_id)
        return Outcome(reply_text(self.engine.edit(flow_id, field, at=at)), (), flow_id)

    def _status(self, flow_id: UUID) -> Outcome:
        flow = self.engine.get_flow(flow_id)
        title = self.definition.title or flow.definition
        mode = f" ({flow.mode} mode)" if flow.mode else ""
        answers = flow.answers.items()
        answered = ", ".join(f"{k}: {show_answer(v)}" for k, v in answers) or "nothing yet"
        prompt = reply_text(self.engine.flow_prompt(flow_id))
        text = f"{title}{mode}, at step {flow.step}.\nAnswered: {answered}.\n{prompt}"
        return Outcome(text, (), flow_id)

    def _where(self, state: ConversationState) -> Outcome:
        if state.active_flow_id is None:
            return self._menu()
        flow_id = state.active_flow_id
        return Outcome(reply_text(self.engine.flow_prompt(flow_id)), (), flow_id)

    def _menu(self, prefix: str = "") -> Outcome:
        title = self.definition.title or self.definition.name
        if self._modes:
            ask = f"{title}: choose {_either(self._modes)}."
        else:
            ask = f"{title}: send /start to begin."
        return Outcome(_lines(prefix, ask, COMMANDS), self._modes)

    @property
    def _modes(self) -> tuple[str, ...]:
        return self.definition.modes

    def _mode_named(self, text: str) -> str | None:
        wanted = text.strip().casefold()
        return next((m for m in self._modes if m.casefold() == wanted), None)


def _log_failure(failed: CodeFailed, conversation_id: UUID) -> None:
    """The flow's code failed: the operator reads why, and the line of the code that
    raised (one log line, no traceback)."""
    cause = failed.__cause__
    frames = traceback.extract_tb(cause.__traceback__) if cause is not None else []
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
    log.error("flow.code_failed", conversation_id=str(conversation_id), error=str(failed),
              raised_at=where)  # fmt: skip


def _find(state: ConversationState, message_id: str) -> Message | None:
    return next((m for m in reversed(state.messages) if m.id == message_id), None)


def _lines(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def _either(options: tuple[str, ...]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
