"""The console's conversation pages: the list (search, filters, paging), one conversation
(its timeline, its state at any version, the changes between versions) and its live tail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

import anyio
import anyio.to_thread
import msgspec
import structlog
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from ...domain.conversation import Status
from ...domain.errors import BadInput, NotFound
from ...projections.queries import ConversationSearch, PageKey
from .context import ConsoleContext, chosen_zone
from .rendering import page, render, zone_named
from .sources import Entry, FlowBegun, Sources, Stated
from .state_view import layout

log = structlog.get_logger("voxledger.console")

PAGE_SIZE = 50
WINDOW = 100  # conversation versions shown each side of the one travelled to
ROWS = 100  # the last records of a long list (messages, turns) a state shows, unless full
CHANGES = 300  # the changes a diff lists, unless full
TAIL_POLL_S = 0.5
TAIL_KEEPALIVE_S = 15.0
STATUSES = [s.value for s in Status]
SearchText = Annotated[str | None, QueryParameter(max_length=200)]
ZoneName = Annotated[str | None, QueryParameter(max_length=64)]


# -- the list ------------------------------------------------------------------------------------


@get("/conversations", sync_to_thread=True, include_in_schema=False)
def conversation_list(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    q: SearchText = None,
    status: Annotated[str | None, QueryParameter(max_length=32)] = None,
    channel: Annotated[str | None, QueryParameter(max_length=64)] = None,
    active_from: Annotated[str | None, QueryParameter(name="from", max_length=40)] = None,
    active_until: Annotated[str | None, QueryParameter(name="to", max_length=40)] = None,
    browser_tz: ZoneName = None,
    after: Annotated[str | None, QueryParameter(max_length=120)] = None,
    before: Annotated[str | None, QueryParameter(max_length=120)] = None,
) -> Response:
    """Conversations from the current-state projection, most recently active first."""
    zone = chosen_zone(request)
    sources = console.sources
    projections = _projections(sources)
    filters = {
        "q": (q or "").strip(),
        "status": status or "",
        "channel": channel or "",
        "from": active_from or "",
        "to": active_until or "",
    }
    problem = None
    try:
        typed_in = zone or zone_named(browser_tz) or UTC
        search = ConversationSearch(
            text=filters["q"] or None,
            status=_one_of(status or None, STATUSES, "status"),
            channel=channel or None,
            active_from=typed_moment(active_from, typed_in, "from"),
            active_until=typed_moment(active_until, typed_in, "to"),
        )
        target = _stream_named(sources, filters["q"])
        if target is not None:
            return Redirect(target, status_code=303)
        found = projections.search_conversations(
            search, limit=PAGE_SIZE, after=page_key(after), before=page_key(before)
        )
    except BadInput as error:
        problem, found = str(error), None
    return page(
        request,
        "conversations.html",
        400 if problem else 200,
        title="Conversations",
        nav="conversations",
        zone=zone,
        lag=projections.lag(),
        filters=filters,
        statuses=STATUSES,
        counts=projections.statuses(),
        channels=projections.channels(),
        found=found,
        problem=problem,
        first_row=_page_start(after, before, found),
        newer_link=_link(filters, before=found and found.rows and _key_text(found.rows[0])),
        older_link=_link(filters, after=found and found.rows and _key_text(found.rows[-1])),
    )


def typed_moment(text: str | None, zone: tzinfo, field: str) -> datetime | None:
    """A time typed into a form (``2026-11-21T14:05``, seconds or an offset optional), in
    the operator's zone unless it names its own."""
    if not text or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{field}: {text!r} is not a time like 2026-11-21T14:05") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def page_key(text: str | None) -> PageKey | None:
    """Where a page begins, from a paging link (``<last activity>~<id>``)."""
    if not text:
        return None
    moment, _, conversation = text.partition("~")
    try:
        return datetime.fromisoformat(moment), UUID(conversation)
    except ValueError:
        raise BadInput(f"not a page of this list: {text!r}") from None


def _key_text(row: Any) -> str:
    return f"{row.last_activity.isoformat()}~{row.conversation_id}"


def _link(filters: dict[str, str], **paging: Any) -> str | None:
    ((name, value),) = paging.items()
    if not value:
        return None
    query = {k: v for k, v in filters.items() if v}
    return "?" + urlencode({**query, name: value})


def _page_start(after: str | None, before: str | None, found: Any) -> int | None:
    # Only the first page knows its place in the whole list: keyset pages do not count.
    return 1 if found is not None and not after and not before else None


def _one_of(value: str | None, allowed: list[str], name: str) -> str | None:
    if value is not None and value not in allowed:
        raise BadInput(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def _stream_named(sources: Sources, text: str) -> str | None:
    """The console page of the conversation (or flow run) a whole id names, if it exists."""
    try:
        stream_id = UUID(text)
    except ValueError:
        return None
    try:
        kind = sources.kind(stream_id)
    except NotFound:
        return None
    if kind == "flow":
        return f"/console/conversations/{sources.conversation_of(stream_id)}?flow={stream_id}"
    return f"/console/conversations/{stream_id}"


def _projections(sources: Sources) -> Any:
    if sources.projections is None:
        raise NotFound("this event store has no projections to read")
    return sources.projections


# -- one conversation ----------------------------------------------------------------------------


class Shown(msgspec.Struct, frozen=True):
    """A stream's state at one version, and what that version changed."""

    stream_id: UUID
    label: str
    version: int
    last: int
    entry: Entry
    state: Stated
    tree: Any
    changes: list[Any]
    changes_total: int


@get("/conversations/{conversation_id:uuid}", sync_to_thread=True, include_in_schema=False)
def conversation_page(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    conversation_id: FromPath[UUID],
    v: Annotated[int | None, QueryParameter(ge=1)] = None,
    flow: FromQuery[UUID | None] = None,
    fv: Annotated[int | None, QueryParameter(ge=1)] = None,
    ds: FromQuery[UUID | None] = None,
    a: Annotated[int | None, QueryParameter(ge=1)] = None,
    b: Annotated[int | None, QueryParameter(ge=1)] = None,
    where: Annotated[str | None, QueryParameter(max_length=500)] = None,
    full: FromQuery[bool] = False,
) -> Response:
    """A conversation's timeline with its flows' events, its state at the version
    travelled to (and its flow's at that moment), the changes between two versions, and
    the first version at which a condition holds (``where``: travels there). Long lists
    and diffs show their last records and first changes unless ``full``."""
    zone = chosen_zone(request)
    sources = console.sources
    cid = conversation_id
    if sources.kind(cid) == "flow":  # a flow's id: its conversation, with the flow chosen
        owner = sources.conversation_of(cid)
        query = urlencode({"flow": cid, **({"fv": fv} if fv else {})})
        return Redirect(f"/console/conversations/{owner}?{query}", status_code=303)
    last = sources.last_version(cid)
    flows = sources.flows_of(cid)
    labels = flow_labels(flows)
    flow_ids = [f.flow_id for f in flows]
    found, problem = None, None
    if where and where.strip():
        try:
            found = sources.first_version(cid, where.strip())
        except BadInput as error:
            problem = str(error)
        if found is not None and found.version is not None:
            v, flow = found.version, None
    if flow is not None:
        if flow not in labels:
            raise BadInput(f"{flow} is not a flow of conversation {cid}")
        fv = _in_range(fv or sources.last_version(flow), sources.last_version(flow), "fv")
        v = max(1, sources.version_at(cid, sources.event(flow, fv).at))
    v = _in_range(v or last, last, "v")
    rows, changes = (None, None) if full else (ROWS, CHANGES)
    conversation = shown(sources, cid, v, last, "Conversation", rows, changes)
    if flow is None:
        flow, fv = _flow_at(sources, conversation.state.state, flows)
    flow_shown = (
        shown(sources, flow, fv, sources.last_version(flow), labels[flow], rows, changes)
        if flow is not None and fv
        else None
    )
    first, final = max(1, v - WINDOW), min(last, v + WINDOW)
    entries = sources.window(cid, flow_ids, first, final, ends=final == last)
    selected = (flow, fv) if flow_shown and request.query_params.get("flow") else (cid, v)
    compared = _compared(sources, cid, labels, ds, a, b, changes)
    latest = {cid: last, **{f: sources.last_version(f) for f in flow_ids}}
    return page(
        request,
        "conversation.html",
        400 if problem else 200,
        title=f"Conversation {str(cid)[:8]}",
        nav="conversations",
        zone=zone,
        lag=_lag(sources),
        cid=cid,
        last=last,
        now=sources.state(cid, last).state if v != last else conversation.state.state,
        flows=flows,
        labels=labels,
        conversation=conversation,
        flow=flow_shown,
        entries=entries,
        window=(first, final),
        earlier=max(1, first - WINDOW - 1) if first > 1 else None,
        later=min(last, final + WINDOW + 1) if final < last else None,
        selected=selected,
        compared=compared,
        tail_after=",".join(f"{s}:{n}" for s, n in latest.items()),
        at_end=final == last,
        where=where or "",
        found=found,
        problem=problem,
        flow_first=selected[0] != cid,
        all_rows_link=_with_full(request),
    )


def shown(
    sources: Sources,
    stream_id: UUID,
    version: int,
    last: int,
    label: str,
    rows: int | None = None,
    most: int | None = None,
) -> Shown:
    """A stream's state at a version with the event that made it and what it changed
    (lists of at most ``rows`` records, at most ``most`` changes; None: all)."""
    state = sources.state(stream_id, version)
    changes = (
        sources.changes(sources.state(stream_id, version - 1).state, state.state)
        if version > 1
        else []
    )
    return Shown(
        stream_id=stream_id,
        label=label,
        version=version,
        last=last,
        entry=sources.event(stream_id, version),
        state=state,
        tree=layout(state.document, rows=rows),
        changes=[_change_view(c) for c in changes[:most]],
        changes_total=len(changes),
    )


def _with_full(request: Request[Any, Any, Any]) -> str:
    """This page again with every record and change."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "full"]
    return f"{request.url.path}?{urlencode([*query, ('full', 'true')])}"


def flow_labels(flows: list[FlowBegun]) -> dict[UUID, str]:
    """How each of a conversation's flows is named on its pages: definition and short id."""
    return {f.flow_id: f"{f.definition or 'flow'} {str(f.flow_id)[:8]}" for f in flows}


def _flow_at(
    sources: Sources, conversation: Any, flows: list[FlowBegun]
) -> tuple[UUID | None, int | None]:
    """The flow in progress at a conversation's version (or the latest one begun by then)
    and its version at that moment."""
    flow_id = conversation.active_flow_id or next(
        (f.flow_id for f in reversed(flows) if f.version <= conversation.version), None
    )
    if flow_id is None:
        return None, None
    version = sources.version_at(flow_id, conversation.updated_at)
    return (flow_id, version) if version else (None, None)


def _compared(
    sources: Sources,
    cid: UUID,
    labels: dict[UUID, str],
    ds: UUID | None,
    a: int | None,
    b: int | None,
    most: int | None,
) -> dict[str, Any] | None:
    """The changes between two chosen versions of the conversation or one of its flows."""
    if a is None or b is None:
        return None
    stream = ds or cid
    if stream != cid and stream not in labels:
        raise BadInput(f"{stream} is not this conversation nor one of its flows")
    last = sources.last_version(stream)
    a, b = _in_range(a, last, "a"), _in_range(b, last, "b")
    old, new = sources.state(stream, a).state, sources.state(stream, b).state
    changes = sources.changes(old, new)
    return {
        "stream": stream,
        "label": "Conversation" if stream == cid else labels[stream],
        "a": a,
        "b": b,
        "old_at": old.updated_at,
        "new_at": new.updated_at,
        "changes": [_change_view(c) for c in changes[:most]],
        "total": len(changes),
    }


def _change_view(change: Any) -> dict[str, Any]:
    return {
        "path": change.path,
        "kind": change.kind,
        "old": None if change.kind == "added" else _compact(change.old),
        "new": None if change.kind == "removed" else _compact(change.new),
    }


def _compact(value: Any) -> str:
    """A changed value as `voxledger diff` prints it: compact JSON."""
    return msgspec.json.encode(value, enc_hook=str).decode()


def _in_range(version: int, last: int, name: str) -> int:
    if not 1 <= version <= last:
        raise BadInput(f"{name}: there is no version {version}; versions run from 1 to {last}")
    return version


def _lag(sources: Sources) -> list[Any]:
    return sources.projections.lag() if sources.projections is not None else []


# -- the live tail --------------------------------------------------------------------------------

_AFTER = re.compile(r"^[0-9a-fA-F-]{36}:\d{1,12}(,[0-9a-fA-F-]{36}:\d{1,12}){0,999}$")


@get("/conversations/{conversation_id:uuid}/tail", include_in_schema=False)
async def tail(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    conversation_id: FromPath[UUID],
    after: Annotated[str, QueryParameter(max_length=40_000)],
) -> ServerSentEvent:
    """Server-sent events: each event appended to the conversation or its flows after the
    versions in ``after`` (``id:version,...``), as a timeline row, until the client goes
    away or the server stops."""
    if not _AFTER.match(after):
        raise BadInput("after: expected id:version pairs separated by commas")
    seen = {UUID(s): int(n) for s, n in (pair.split(":") for pair in after.split(","))}
    sources = console.sources
    flows = await anyio.to_thread.run_sync(sources.flows_of, conversation_id)
    labels = flow_labels(flows)
    strangers = set(seen) - {conversation_id, *labels}
    if conversation_id not in seen or strangers:
        raise BadInput("after: name the conversation and only its flows")
    zone = chosen_zone(request)
    return ServerSentEvent(
        _tail_events(console, conversation_id, seen, labels, zone), retry_duration=2000
    )


async def _tail_events(
    console: NamedDependency[ConsoleContext],
    cid: UUID,
    seen: dict[UUID, int],
    labels: dict[UUID, str],
    zone: tzinfo | None,
) -> AsyncIterator[ServerSentEventMessage]:
    sources = console.sources
    log.info("console.tail_begun", conversation_id=str(cid))
    head = -1
    quiet = 0.0
    ended = "client gone"
    try:
        # A cheap look at the log's head first: the streams are read only when it moved.
        while not console.closing.is_set():
            now_head = await anyio.to_thread.run_sync(sources.head)
            if now_head != head:
                head = now_head
                for e in await anyio.to_thread.run_sync(sources.newer, seen):
                    labels.setdefault(e.stream_id, f"flow {str(e.stream_id)[:8]}")
                    yield ServerSentEventMessage(
                        event="entry", data=_tail_data(e, cid, labels, zone)
                    )
                    quiet = 0.0
            if quiet >= TAIL_KEEPALIVE_S:  # a write to a client that left ends the stream
                yield ServerSentEventMessage(comment="keep-alive")
                quiet = 0.0
            await anyio.sleep(TAIL_POLL_S)
            quiet += TAIL_POLL_S
        ended = "server stopping"
    finally:
        log.info("console.tail_ended", conversation_id=str(cid), reason=ended)


def _tail_data(entry: Entry, cid: UUID, labels: dict[UUID, str], zone: tzinfo | None) -> str:
    html = render(
        "entry_row.html", e=entry, cid=cid, labels=labels, selected=(None, None), zone=zone
    )
    return msgspec.json.encode(
        {
            "id": f"e-{entry.stream_id}-{entry.version}",
            "stream": str(entry.stream_id),
            "version": entry.version,
            "conversation": entry.stream_id == cid,
            "html": html.strip(),
        }
    ).decode()
