"""The chat bot, whatever the channel: what an incoming message means, and what to say back.

A chat (a channel and a chat on it; in a group, each member, and in a forum, each topic) is
in one conversation at a time, which the chat directory finds (directory.py). Each message
is one `Engine.exchange`: the bot's `decide` reads the conversation and its form, answers,
starts, edits, undoes or cancels the form, and words the reply; the Engine records the
user's message, all of that, the reply and what is to be sent, in one atomic save. On a
channel that delivers (Telegram with a bot token, WhatsApp), the reply and the answer to a
button press are queued in the outbox and a delivery worker sends them; otherwise the reply
goes back to the caller (Telegram's webhook-reply mode, the JSON API, the terminal).

A message is known by its id: the same message again gets the first reply and records
nothing. An edited message has one meaning: if it was the accepted answer of a field of the
form in progress (and no later message changed that field), its new text re-answers that
field in place (the form stays at its step); an edit of anything else is ignored and
records nothing.

In a chat of many people, plain text from a member with no form in progress is ignored (they
are talking to each other): a form starts with a command or a button.
"""

from __future__ import annotations

import traceback
from collections.abc import Collection
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import anyio.to_thread
import msgspec
import structlog

from ...domain.conversation import Address, Role
from ...domain.engine import Engine
from ...domain.errors import BadInput, CodeFailed, InvalidTransition, NotFound, VoxledgerError
from ...domain.exchange import ConversationClosed, Decide, Exchange, ExchangeResult, Inbound
from ...domain.exchange import reply_id as reply_id
from ...domain.flow_definition import FlowDefinition, show_answer
from ...domain.flow_reply import FlowReply
from ..store.mapper import Erased
from .directory import ChatDirectory, ChatKey
from .directory_async import AsyncDirectory
from .wording import CHANGED, CODE_FAILED, EXPIRED, NOT_CHANGED, NOT_TEXT, reply_text

if TYPE_CHECKING:
    from ..async_engine import AsyncEngine

log = structlog.get_logger("voxledger.chat")

COMMANDS = "Commands: /start, /cancel, /back (undo the last answer), /edit FIELD, /status."
# Every chat of many people shares one form (instead of one form per member).
ALL_CHATS = "*"


class Incoming(msgspec.Struct, frozen=True, kw_only=True):
    """A message that arrived over a channel, already validated by its adapter."""

    channel: str  # telegram, whatsapp, terminal, api...
    chat_id: str
    message_id: str  # unique within the chat: the key that makes a retry harmless
    text: str
    user_id: str | None = None
    participant: str | None = None  # a name for people reading the conversation
    choice: bool = False  # a menu button was pressed (not typed text)
    at: datetime | None = None  # None: the engine's clock
    thread: str | None = None  # the forum topic it was written in
    group: bool = False  # a chat of many people
    platform_message_id: str | None = None  # the channel's id of it, for a reply to quote
    callback_id: str | None = None  # the button press, to be answered
    keyboard_message: str | None = None  # the message whose button was pressed
    edited: str | None = None  # this is a new text of that earlier message
    media: str | None = None  # sent instead of text: a photo, a sticker...


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the bot says back, and where the chat stands afterwards."""

    conversation_id: UUID | None  # None: the message was ignored before any conversation
    message_id: str  # the message this answers
    text: str
    choices: tuple[str, ...] = ()  # menu options to offer as buttons
    flow_id: UUID | None = None  # the flow in progress afterwards
    duplicate: bool = False  # the message was seen before: this is the original reply
    recorded: bool = True  # False: ignored, nothing recorded
    outbound: tuple[str, ...] = ()  # what was queued for the delivery worker
    version: int = 0  # the conversation's version afterwards (0: there is none)
    # The log position of the conversation's last event afterwards, where the edge knows it
    # (a projection read that waits for it sees this message).
    position: int | None = None

    @classmethod
    def of(cls, result: ExchangeResult) -> Reply:
        """The reply an exchange recorded."""
        return cls(
            conversation_id=result.conversation_id,
            message_id=result.message_id,
            text=result.text,
            choices=result.choices,
            flow_id=result.flow_id,
            duplicate=result.duplicate,
            recorded=result.recorded,
            outbound=result.outbound,
            version=result.version,
        )


class Command(NamedTuple):
    """A slash command, the text after it, and the bot it names (`/start@SomeBot`)."""

    name: str
    argument: str
    bot: str | None = None


class Said(NamedTuple):
    """A reply before it is recorded: its text, the choices offered, and what to keep."""

    text: str
    choices: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None


def parse_command(text: str) -> Command | None:
    """`/edit date` -> ("edit", "date"); `/start@SomeBot` -> ("start", "", "SomeBot")."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    head, _, rest = stripped.partition(" ")
    name, _, bot = head[1:].partition("@")
    return Command(name.casefold(), rest.strip(), bot or None)


def chat_key(message: Incoming, shared_chats: Collection[str] = ()) -> ChatKey:
    """The chat a message belongs to: in a chat of many people, its sender's own (unless
    the chat shares one form), and in a forum its topic's."""
    shared = not message.group or ALL_CHATS in shared_chats or message.chat_id in shared_chats
    user = None if shared else message.user_id
    return ChatKey(message.channel, message.chat_id, user, message.thread)


class ChatBot:
    """Runs one flow definition as a chat: a menu of its modes, slash commands, answers."""

    def __init__(
        self,
        engine: Engine,
        flow: str = "intake",
        *,
        directory: ChatDirectory | None = None,
        delivering: Collection[str] = (),
        shared_chats: Collection[str] = (),
    ) -> None:
        self.engine = engine
        self.flow = flow
        self.definition: FlowDefinition = engine.flows.latest(flow)  # NotFound if unknown
        self.directory = directory
        # Its lookups from the event loop, which concurrent messages share.
        self._async_directory = AsyncDirectory(directory) if directory is not None else None
        self.delivering = frozenset(delivering)  # channels whose replies the outbox sends
        self.shared_chats = frozenset(shared_chats)

    # -- entry points ------------------------------------------------------------------------

    def handle_chat(self, message: Incoming) -> Reply:
        """Answer a message in its chat's conversation, opening one if the chat has none
        (or its last one ended or was erased)."""
        directory = self._directory()
        key = chat_key(message, self.shared_chats)
        lookup = directory.find if self._chatter(message) else directory.open
        conversation_id = lookup(key)
        if conversation_id is None:
            return self._ignored(message)
        try:
            return self._exchange(conversation_id, message)
        except (ConversationClosed, Erased):
            return self._exchange(directory.move_on(key, conversation_id), message)

    def _exchange(
        self,
        conversation_id: UUID,
        message: Incoming,
        *,
        open_missing: bool = True,
        expected_version: int | None = None,
    ) -> Reply:
        inbound = self._inbound(message)
        try:
            result = self.engine.exchange(
                conversation_id,
                inbound,
                self._decider(message),
                open_missing=open_missing,
                expected_version=expected_version,
                at=message.at,
            )
        except CodeFailed as failed:
            # The flow's own code failed and the exchange recorded nothing: record the
            # message and an apology instead, so that the user can try again.
            _log_failure(failed, conversation_id)
            result = self.engine.exchange(
                conversation_id, inbound, _apology, open_missing=open_missing, at=message.at
            )
        return Reply.of(result)

    async def handle_chat_async(self, message: Incoming, engine: AsyncEngine) -> Reply:
        """`handle_chat` on the async engine: the directory is read in a thread (one read
        for the messages that arrive together), then the exchange runs in the event loop
        and shares a commit when the conversation is in memory."""
        directory = self._directory()
        key = chat_key(message, self.shared_chats)
        reads = self._async_directory
        assert reads is not None
        lookup = reads.find if self._chatter(message) else reads.open
        conversation_id = await lookup(key)
        if conversation_id is None:
            return self._ignored(message)
        try:
            return await self._exchange_async(engine, conversation_id, message)
        except (ConversationClosed, Erased):
            closed = conversation_id
            conversation_id = await anyio.to_thread.run_sync(directory.move_on, key, closed)
            return await self._exchange_async(engine, conversation_id, message)

    async def _exchange_async(
        self,
        engine: AsyncEngine,
        conversation_id: UUID,
        message: Incoming,
        *,
        open_missing: bool = True,
        expected_version: int | None = None,
    ) -> Reply:
        inbound = self._inbound(message)
        try:
            result = await engine.exchange(
                conversation_id,
                inbound,
                self._decider(message),
                open_missing=open_missing,
                expected_version=expected_version,
                at=message.at,
            )
        except CodeFailed as failed:
            _log_failure(failed, conversation_id)
            result = await engine.exchange(
                conversation_id, inbound, _apology, open_missing=open_missing, at=message.at
            )
        return Reply.of(result)

    def handle(
        self, conversation_id: UUID, message: Incoming, *, expected_version: int | None = None
    ) -> Reply:
        """Answer a message in an existing conversation (NotFound if there is none,
        InvalidTransition if it has ended, VersionMismatch, recording nothing, if it is not
        at ``expected_version``)."""
        try:
            return self._exchange(
                conversation_id, message, open_missing=False, expected_version=expected_version
            )
        except ConversationClosed as closed:
            raise InvalidTransition(str(closed)) from None  # a conversation by id: no next one

    async def handle_async(
        self,
        conversation_id: UUID,
        message: Incoming,
        engine: AsyncEngine,
        *,
        expected_version: int | None = None,
    ) -> Reply:
        """`handle` on the async engine: the exchange runs in the event loop and shares a
        commit when the conversation is in memory."""
        try:
            return await self._exchange_async(
                engine,
                conversation_id,
                message,
                open_missing=False,
                expected_version=expected_version,
            )
        except ConversationClosed as closed:
            raise InvalidTransition(str(closed)) from None  # a conversation by id: no next one

    def where(self, message: Incoming, *, reserve: bool = False) -> Reply:
        """Where the chat of a message stands now, as the bot would say it (how a restarted
        terminal resumes); records nothing in the log. With ``reserve``, a chat that has no
        conversation yet gets the id of its first one now."""
        directory, key = self._directory(), chat_key(message, self.shared_chats)
        conversation_id = directory.open(key) if reserve else directory.find(key)
        said, flow_id = self._menu(), None
        if conversation_id is not None:
            with suppress(NotFound):  # reserved, not begun
                flow_id = self.engine.get_conversation(conversation_id).active_flow_id
        if flow_id is not None:
            said = Said(reply_text(self.engine.flow_prompt(flow_id)))
        return Reply(
            conversation_id=conversation_id,
            message_id="",
            text=said.text,
            choices=said.choices,
            flow_id=flow_id,
        )

    def delivers(self, channel: str) -> bool:
        """True if the replies of this channel are sent by the delivery worker."""
        return channel in self.delivering

    # -- one message ---------------------------------------------------------------------------

    def _inbound(self, message: Incoming) -> Inbound:
        metadata: dict[str, Any] = {"chat_id": message.chat_id}
        if message.user_id is not None:
            metadata["user_id"] = message.user_id
        if message.thread is not None:
            metadata["thread"] = message.thread
        said: dict[str, Any] = {}
        if message.media is not None:
            said["media"] = message.media
        if message.edited is not None:
            said["edits"] = message.edited
        address = None
        if message.channel in self.delivering:
            address = Address(message.chat_id, message.thread)
        return Inbound(
            message_id=message.message_id,
            text=message.text,
            channel=message.channel,
            address=address,
            # In a chat of many people a reply quotes the message it answers.
            reply_to=message.platform_message_id if message.group else None,
            participant=message.participant,
            chat_metadata=metadata,
            metadata=said,
        )

    def _decider(self, message: Incoming) -> Decide:
        def decide(exchange: Exchange) -> None:
            self._decide(exchange, message)

        return decide

    def _chatter(self, message: Incoming) -> bool:
        """Plain text (or media) in a chat of many people: not for the bot unless the
        sender has a form in progress."""
        return message.group and not message.choice and parse_command(message.text) is None

    def _ignored(self, message: Incoming) -> Reply:
        return Reply(conversation_id=None, message_id=message.message_id, text="", recorded=False)

    def _directory(self) -> ChatDirectory:
        if self.directory is None:
            raise BadInput("this bot has no chat directory: give it one to take chat messages")
        return self.directory

    # -- what each message does ---------------------------------------------------------------

    def _decide(self, ex: Exchange, message: Incoming) -> None:
        """What the message means, and what to say (pure: it may run again on newer state)."""
        if message.edited is not None:
            self._correct(ex, message)
            return
        command = None if message.choice else parse_command(message.text)
        idle = ex.flow is None and ex.expired is None
        if idle and message.group and command is None and not message.choice:
            ex.ignore()  # chatter among members, not for the bot
            return
        if message.callback_id is not None:
            ex.acknowledge(message.callback_id)
        try:
            said = self._said(ex, message, command)
        except CodeFailed:
            raise  # the flow's own code: the whole exchange is given up (see _exchange)
        except VoxledgerError as refused:
            # A command the form refused records nothing of itself: say why, then where
            # the chat stands.
            here = self._here(ex)
            said = here._replace(text=f"{refused}\n{here.text}")
        ex.reply(said.text, said.choices, metadata=said.metadata)

    def _said(self, ex: Exchange, message: Incoming, command: Command | None) -> Said:
        if ex.expired is not None and command is None and not message.choice:
            return Said(EXPIRED, self._modes)
        if message.media is not None and not message.text:
            return self._not_text(ex, message.media)
        if message.choice:
            return self._choose(ex, message)
        if command is None:
            if ex.flow is not None:
                return self._answer(ex, message)
            mode = self._mode_named(message.text)
            return self._menu("Hello!") if mode is None else self._begin(ex, mode)
        name, argument, _ = command
        if name == "start":
            return self._start(ex, argument)
        if name == "help":
            return self._menu()
        if ex.flow is None:
            known = name in ("cancel", "back", "edit", "status")
            return self._menu("No form is in progress." if known else f"Unknown command /{name}.")
        if name == "cancel":
            return Said(reply_text(ex.cancel("/cancel")), self._modes)
        if name == "back":
            return self._undo(ex)
        if name == "edit":
            return self._edit(ex, argument)
        if name == "status":
            return self._status(ex)
        return Said(f"Unknown command /{name}. {COMMANDS}\n{reply_text(ex.prompt())}")

    def _answer(self, ex: Exchange, message: Incoming) -> Said:
        """Plain text while a form is in progress: the answer to its current step."""
        flow, definition = ex.flow, ex.definition
        assert flow is not None and definition is not None and flow.step is not None
        field = definition.step(flow.step).field
        answered = ex.answer(message.text)
        return Said(reply_text(answered), metadata=_link(answered, field, message.message_id))

    def _correct(self, ex: Exchange, message: Incoming) -> None:
        """An edited message: re-answers the field it answered, or is ignored."""
        assert message.edited is not None
        field = _answer_given_by(ex, message.edited)
        flow, definition = ex.flow, ex.definition
        if field is None or flow is None or definition is None or flow.editing is not None:
            ex.ignore()
            return
        before = flow.answers[field]
        changed = ex.correct(field, message.text)
        title = next(step.title for step in definition.steps if step.field == field)
        if changed.accepted:
            value = show_answer((ex.flow.answers if ex.flow else {}).get(field))
            text = f"{CHANGED.format(field=title, value=value)}\n{reply_text(changed)}"
            ex.reply(text, metadata=_link(changed, field, message.edited))
            return
        refused = NOT_CHANGED.format(field=title, value=show_answer(before), reason=changed.reason)
        ex.reply(f"{refused}\n{changed.prompt or ''}".strip())

    def _not_text(self, ex: Exchange, media: str) -> Said:
        """A photo or a sticker where text is expected: say what is."""
        said = NOT_TEXT.format(media=media.replace("_", " "))
        if ex.flow is not None:
            return Said(f"{said}\n{reply_text(ex.prompt())}")
        menu = self._menu()
        return menu._replace(text=f"{said}\n{menu.text}")

    def _start(self, ex: Exchange, argument: str) -> Said:
        """/start: cancel a form in progress, then offer the menu (or start the mode named)."""
        prefix = ""
        if ex.flow is not None:
            ex.cancel("restarted with /start")
            prefix = "The form in progress was cancelled."
        if not self._modes:
            return self._begin(ex, None, prefix)
        if not argument:
            return self._menu(prefix)
        mode = self._mode_named(argument)
        if mode is None:
            return self._menu(_lines(prefix, f"There is no {argument!r} mode."))
        return self._begin(ex, mode, prefix)

    def _choose(self, ex: Exchange, message: Incoming) -> Said:
        """A menu button: start the flow in that mode, unless one is already running."""
        pressed = message.keyboard_message
        if ex.flow is not None:
            if pressed is not None and pressed in ex.keyboards:
                ex.close_keyboard(pressed)  # a menu from before the form: used up
            note = "A form is already in progress (send /start to begin again)."
            return Said(f"{note}\n{reply_text(ex.prompt())}")
        mode = self._mode_named(message.text)
        if mode is None and self._modes:
            return self._menu(f"There is no {message.text!r} choice.")
        return self._begin(ex, mode)

    def _begin(self, ex: Exchange, mode: str | None, prefix: str = "") -> Said:
        started = ex.start_flow(self.flow, mode)
        for keyboard in ex.keyboards:  # the menu that offered the choice is used up
            ex.close_keyboard(keyboard)
        return Said(_lines(prefix, reply_text(started)))

    def _undo(self, ex: Exchange) -> Said:
        try:
            return Said(reply_text(ex.undo()))
        except InvalidTransition:
            prompt = reply_text(ex.prompt())
            return Said(f"Nothing to undo: this is the first question.\n{prompt}")

    def _edit(self, ex: Exchange, field: str) -> Said:
        if not field:
            flow = ex.flow
            assert flow is not None
            answered = ", ".join(flow.answers)
            ask = f"Send /edit and a field: {answered}." if answered else "Nothing to edit yet."
            return Said(f"{ask}\n{reply_text(ex.prompt())}")
        return Said(reply_text(ex.edit(field)))

    def _status(self, ex: Exchange) -> Said:
        flow = ex.flow
        assert flow is not None
        title = self.definition.title or flow.definition
        mode = f" ({flow.mode} mode)" if flow.mode else ""
        answers = flow.answers.items()
        answered = ", ".join(f"{k}: {show_answer(v)}" for k, v in answers) or "nothing yet"
        prompt = reply_text(ex.prompt())
        return Said(f"{title}{mode}, at step {flow.step}.\nAnswered: {answered}.\n{prompt}")

    def _here(self, ex: Exchange) -> Said:
        if ex.flow is None:
            return self._menu()
        return Said(reply_text(ex.prompt()))

    def _menu(self, prefix: str = "") -> Said:
        title = self.definition.title or self.definition.name
        if self._modes:
            ask = f"{title}: choose {_either(self._modes)}."
        else:
            ask = f"{title}: send /start to begin."
        return Said(_lines(prefix, ask, COMMANDS), self._modes)

    @property
    def _modes(self) -> tuple[str, ...]:
        return self.definition.modes

    def _mode_named(self, text: str) -> str | None:
        wanted = text.strip().casefold()
        return next((m for m in self._modes if m.casefold() == wanted), None)


def _apology(ex: Exchange) -> None:
    """The reply when the flow's own code failed: the message is kept, nothing else."""
    ex.reply(CODE_FAILED)


def _log_failure(failed: CodeFailed, conversation_id: UUID) -> None:
    """The flow's code failed: the operator reads why, and the line of the code that
    raised (one log line, no traceback)."""
    cause = failed.__cause__
    frames = traceback.extract_tb(cause.__traceback__) if cause is not None else []
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
    log.error(
        "flow.code_failed", conversation_id=str(conversation_id), error=str(failed), raised_at=where
    )


def _link(reply: FlowReply, field: str | None, message_id: str) -> dict[str, Any] | None:
    """What the reply to an accepted answer keeps: the form, the field and the message that
    answered it (so that an edit of that message can find its field). Flat, strings only:
    such a dict is left alone by the garbage collector after its first look, where the
    nested form this replaced (``{"answer": {"flow", "field", "message"}}``, still read) kept
    every reply's metadata in the collector's lists for good (two thirds of a served
    worker's tracked objects, and of the time of each full collection)."""
    if not reply.accepted or field is None:
        return None
    return {"answer_flow": str(reply.flow_id), "answer_field": field, "answer_message": message_id}


def _answer_given_by(ex: Exchange, message_id: str) -> str | None:
    """The field of the form in progress whose current answer the message gave, if any:
    the newest reply that links an answer to it, unless a later one changed that field."""
    flow = ex.flow
    if flow is None:
        return None
    later: set[str] = set()
    for said in ex.newest_messages():
        link = _answer_link(said.metadata) if said.role is Role.ASSISTANT else None
        if link is None or link[0] != str(flow.id):
            continue
        _, field, answered_by = link
        if answered_by == message_id:
            return field if field not in later and field in flow.answers else None
        later.add(field)
    return None


def _answer_link(metadata: dict[str, Any]) -> tuple[Any, Any, Any] | None:
    """A reply's link to the answer it accepted (form, field, message), in either form."""
    flow = metadata.get("answer_flow")
    if flow is not None:
        return flow, metadata.get("answer_field"), metadata.get("answer_message")
    nested = metadata.get("answer")  # replies recorded before the flat form
    if isinstance(nested, dict):
        return nested.get("flow"), nested.get("field"), nested.get("message")
    return None


def _lines(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def _either(options: tuple[str, ...]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
