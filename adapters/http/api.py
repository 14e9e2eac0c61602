"""The JSON API under /v1: start a conversation, send it a message, read a conversation, its
history and its flows (from the event log), and list conversations and metrics (from the
projections). Each handler gets its pieces by dependency injection (see `app`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

import anyio.to_thread
import psycopg
import structlog
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, Parameter

from ...domain.engine import Engine, HistoryEntry
from ...domain.errors import Conflict
from ...domain.flow import FlowState
from ...projections.queries import ConversationRow, MetricsSummary, Projections
from ..async_engine import AsyncEngine
from ..chat.bot import ChatBot, Incoming, Reply
from ..chat.directory import ChatDirectory, ChatKey
from .bodies import (
    MESSAGE_ID,
    ConversationStarted,
    ConversationView,
    FlowView,
    NewConversation,
    NewMessage,
)
from .errors import ProjectionsNotBuilt

T = TypeVar("T")


@post("/conversations", status_code=201)
async def start_conversation(
    async_engine: NamedDependency[AsyncEngine],
    directory: NamedDependency[ChatDirectory],
    data: JSONBody[NewConversation],
) -> Response[ConversationStarted]:
    """Start a conversation (201), or find the one a channel and chat id name (200)."""
    conversation_id = uuid4()
    if data.chat_id:
        chat = ChatKey(data.channel, data.chat_id)
        conversation_id = await anyio.to_thread.run_sync(directory.open, chat)
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    try:
        await async_engine.start_conversation(
            data.channel, data.participant, dict(data.metadata), conversation_id=conversation_id
        )
    except Conflict:
        if data.chat_id is None:
            raise
        return Response(ConversationStarted(conversation_id, created=False), status_code=200)
    return Response(ConversationStarted(conversation_id, created=True), status_code=201)


@post("/conversations/{conversation_id:uuid}/messages", status_code=200)
async def post_message(
    async_engine: NamedDependency[AsyncEngine],
    bot: NamedDependency[ChatBot],
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
    used as the message id, so a retry is recorded once."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    message = Incoming(
        channel="api",
        chat_id=str(conversation_id),
        message_id=data.message_id or idempotency_key or uuid4().hex,
        text=data.text,
        user_id=data.user_id,
        choice=data.choice,
    )
    return await async_engine.run(bot.handle, conversation_id, message)


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
    since_version: Annotated[int | None, Parameter(ge=0)] = None,
) -> list[HistoryEntry]:
    """Every recorded event of a conversation (or a flow), oldest first."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    return await _blocking(engine.history, conversation_id, since_version=since_version)


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


@get("/conversations", sync_to_thread=True)
def list_conversations(
    projections: NamedDependency[Projections],
    status: Annotated[str | None, Parameter(max_length=32)] = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> list[ConversationRow]:
    """Conversations, most recently active first, from the current-state projection."""
    return _from_projections(lambda: projections.conversations(status, limit))


@get("/metrics", sync_to_thread=True)
def read_metrics(
    projections: NamedDependency[Projections], since: FromQuery[datetime | None] = None
) -> MetricsSummary:
    """Totals and response-time percentiles over every conversation, from the metrics
    projection (whole UTC hours from ``since``, or all time)."""
    return _from_projections(lambda: projections.metrics(since))


ROUTES = [
    start_conversation,
    post_message,
    read_conversation,
    read_history,
    read_flow,
    list_conversations,
    read_metrics,
]


def _from_projections(query: Callable[[], T]) -> T:
    try:
        return query()
    except psycopg.errors.UndefinedTable:
        raise ProjectionsNotBuilt(
            "the projection tables do not exist yet: start the projection worker "
            "(voxledger project run)"
        ) from None


async def _blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking read, off the event loop (the handler binds its log context first)."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
