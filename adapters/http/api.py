"""The JSON API under /v1: start a conversation, send it a message, read a conversation, its
history and its flows (from the event log), and list conversations and metrics (from the
projections). Each handler gets its pieces by dependency injection (see `app`).

Read your writes: a write answers with the conversation's new ``version`` and the log
``position`` of its last event; a message may carry the ``expected_version`` it was written
against (409 with ``current_version`` if the conversation moved on, nothing recorded); a
read from the projections may carry ``min_position`` and waits until they have applied the
log that far (`freshness`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

import anyio.to_thread
import msgspec
import psycopg
import structlog
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter

from ...domain.engine import Engine, HistoryEntry
from ...domain.errors import Conflict, ValidationFailed
from ...domain.flow import FlowState
from ...projections.queries import ConversationRow, MetricsSummary, Projections
from ..async_engine import AsyncEngine
from ..chat.bot import Incoming, Reply
from ..chat.directory import ChatDirectory, ChatKey
from ..store.event_store import EventStore
from ..store.receipt import Receipt, receipt
from .bodies import (
    MESSAGE_ID,
    NO_NUL,
    BehindBody,
    ConflictBody,
    ConversationStarted,
    ConversationView,
    ErrorBody,
    FlowView,
    NewConversation,
    NewMessage,
)
from .chat_edge import ChatEdge
from .errors import ProjectionsNotBuilt
from .freshness import reach
from .settings import Settings

T = TypeVar("T")


@post("/conversations", status_code=201)
async def start_conversation(
    async_engine: NamedDependency[AsyncEngine],
    directory: NamedDependency[ChatDirectory],
    store: NamedDependency[EventStore],
    data: JSONBody[NewConversation],
) -> Response[ConversationStarted]:
    """Start a conversation (201), or find the one a channel and chat id name (200); with
    its version and the log position of its last event."""
    conversation_id = uuid4()
    if data.chat_id:
        chat = ChatKey(data.channel, data.chat_id)
        conversation_id = await anyio.to_thread.run_sync(directory.open, chat)
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    with receipt() as written:
        try:
            await async_engine.start_conversation(
                data.channel, data.participant, dict(data.metadata), conversation_id=conversation_id
            )
        except Conflict:
            if data.chat_id is None:
                raise
            created = False
        else:
            created = True
    version = written.versions.get(conversation_id)
    if version is None:  # found, not started: where it stands now
        version = (await _blocking(async_engine.engine.get_conversation, conversation_id)).version
    started = ConversationStarted(
        conversation_id=conversation_id,
        created=created,
        version=version,
        position=await _position(written, store),
    )
    return Response(started, status_code=201 if created else 200)


@post(
    "/conversations/{conversation_id:uuid}/messages",
    status_code=200,
    responses={
        409: ResponseSpec(
            ConflictBody,
            generate_examples=False,
            description="Not recorded: the conversation is not at `expected_version` (the "
            "body's `current_version` says where it is), it has ended, or concurrent writers "
            "kept winning",
        )
    },
)
async def post_message(
    chat_edge: NamedDependency[ChatEdge],
    conversation_id: FromPath[UUID],
    data: JSONBody[NewMessage],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(name="Idempotency-Key", min_length=1, max_length=128, pattern=MESSAGE_ID),
    ] = None,
) -> Reply:
    """Send a user's message: it answers the flow in progress, or is a command or a menu
    choice; returns the bot's reply (the original one for a message id seen before). A
    client that sends no message id may send an Idempotency-Key header instead: it is
    used as the message id, so a retry is recorded once. The reply carries the
    conversation's version and the log position of its last event; with
    ``expected_version`` the message is recorded only if the conversation is at that
    version (409 with ``current_version`` otherwise)."""
    return await message_reply(chat_edge, conversation_id, data, idempotency_key)


async def message_reply(
    chat_edge: ChatEdge,
    conversation_id: UUID,
    data: NewMessage,
    idempotency_key: str | None = None,
) -> Reply:
    """What the message route does with a message, wherever it was decoded (here, or in
    the chat lane: `lane`)."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    message = Incoming(
        channel="api",
        chat_id=str(conversation_id),
        message_id=data.message_id or idempotency_key or uuid4().hex,
        text=data.text,
        user_id=data.user_id,
        choice=data.choice,
    )
    with receipt() as written:
        reply = await chat_edge.bot.handle_async(
            conversation_id,
            message,
            chat_edge.async_engine,
            expected_version=data.expected_version,
        )
    return msgspec.structs.replace(reply, position=await _position(written, chat_edge.store))


@get("/conversations/{conversation_id:uuid}")
async def read_conversation(
    engine: NamedDependency[Engine], conversation_id: FromPath[UUID]
) -> ConversationView:
    """A conversation's state, with the flow in progress and what it asks now."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    state = await _blocking(engine.get_conversation, conversation_id)
    flow = None
    if state.active_flow_id is not None:
        flow = await _flow_view(engine, state.active_flow_id)
    return ConversationView(conversation=state, flow=flow)


@get("/conversations/{conversation_id:uuid}/history")
async def read_history(
    engine: NamedDependency[Engine],
    conversation_id: FromPath[UUID],
    since_version: Annotated[int, Parameter(ge=0, le=2**63 - 1)] = 0,
) -> list[HistoryEntry]:
    """Every recorded event of a conversation (or a flow), oldest first; with
    ``since_version``, those after it."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    since = since_version or None  # 0: the whole history, and 404 for a missing stream
    return await _blocking(engine.history, conversation_id, since_version=since)


@get("/flows/{flow_id:uuid}")
async def read_flow(engine: NamedDependency[Engine], flow_id: FromPath[UUID]) -> FlowView:
    """A flow run: its step, answers, rejected answers, and what it asks now."""
    return await _flow_view(engine, flow_id)


async def _flow_view(engine: Engine, flow_id: UUID) -> FlowView:
    state: FlowState = await _blocking(engine.get_flow, flow_id)
    structlog.contextvars.bind_contextvars(conversation_id=str(state.conversation_id))
    prompt = None
    if state.is_active:
        prompt = (await _blocking(engine.flow_prompt, flow_id)).prompt
    return FlowView(flow=state, prompt=prompt)


BEHIND = ResponseSpec(
    BehindBody,
    generate_examples=False,
    description="The projections had not applied the log up to `min_position` within the "
    "server's wait ($VOXLEDGER_READ_WAIT_S, 5 s by default; `position` is how far they got), "
    "or they are not built yet: ask again after the Retry-After header's seconds",
)
NOT_IN_LOG = ResponseSpec(
    ErrorBody,
    generate_examples=False,
    description="`min_position` is beyond the log's last position: no write has it",
)
# A position in the log that a read must see (a write's ``position``).
MinPosition = Annotated[
    int,
    Parameter(
        ge=0,
        le=2**63 - 1,
        description="wait until the projections have applied the log up to this position "
        "(a write's `position`; 0: do not wait); 503 with the position they reached if they "
        "do not in time; 409 for a position beyond the log's last",
    ),
]


@get("/conversations", responses={409: NOT_IN_LOG, 503: BEHIND})
async def list_conversations(
    projections: NamedDependency[Projections],
    store: NamedDependency[EventStore],
    settings: NamedDependency[Settings],
    status: Annotated[str | None, Parameter(max_length=32, pattern=NO_NUL)] = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    min_position: MinPosition = 0,
) -> list[ConversationRow]:
    """Conversations, most recently active first, from the current-state projection (once
    it has applied the log up to ``min_position``)."""
    await reach(projections, min_position, ("current",), store.head, timeout_s=settings.read_wait_s)
    return await _blocking(_from_projections, lambda: projections.conversations(status, limit))


DATE_TIME = {"format": "date-time"}  # read by `_moment`, not by a lenient decoder


@get("/metrics", responses={409: NOT_IN_LOG, 503: BEHIND})
async def read_metrics(
    projections: NamedDependency[Projections],
    store: NamedDependency[EventStore],
    settings: NamedDependency[Settings],
    since: Annotated[str | None, Parameter(schema_extra=DATE_TIME, max_length=64)] = None,
    min_position: MinPosition = 0,
) -> MetricsSummary:
    """Totals and response-time percentiles over every conversation, from the metrics
    projection (whole UTC hours from ``since``, an RFC 3339 time, or all time; once the
    metrics and delivery projections have applied the log up to ``min_position``)."""
    moment = _moment(since)
    await reach(
        projections,
        min_position,
        ("metrics", "delivery"),
        store.head,
        timeout_s=settings.read_wait_s,
    )
    return await _blocking(_from_projections, lambda: projections.metrics(moment))


ROUTES = [
    start_conversation,
    post_message,
    read_conversation,
    read_history,
    read_flow,
    list_conversations,
    read_metrics,
]


def _moment(text: str | None) -> datetime | None:
    """A moment from a query (RFC 3339, its offset required) in UTC; refused (422) when it
    is not one, or lies outside the years 1 to 9999 in UTC (the arithmetic overflows)."""
    if text is None:
        return None
    try:
        # Read as written: a number is no time here (a lenient decoder took 0.5 as one).
        moment = datetime.fromisoformat(text.upper()) if "T" in text.upper() else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValidationFailed(f"query.since: {text!r} is not an RFC 3339 date-time")
    if moment.tzinfo is None:
        raise ValidationFailed("query.since: a time needs a time zone (add Z or +00:00)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed(
            f"query.since: {moment.isoformat()} is outside the years 0001 to 9999 in UTC"
        ) from None


def _from_projections(query: Callable[[], T]) -> T:
    try:
        return query()
    except psycopg.errors.UndefinedTable:
        raise ProjectionsNotBuilt(
            "the projection tables do not exist yet: start the projection worker "
            "(voxledger project run)"
        ) from None


async def _position(written: Receipt, store: EventStore) -> int:
    """The log position a reader waits for to see this request's writes: that of the last
    event they appended or, when they appended none (a message seen before), the log's head,
    which covers every event the conversation has."""
    if written.position is not None:
        return written.position
    return await _blocking(store.head)


async def _blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking read, off the event loop (the handler binds its log context first)."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
